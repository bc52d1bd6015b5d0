using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Runtime;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// Reads and writes the fields of <c>tokenizer_config.json</c> that this runtime uses: <c>hft_tokenizer</c> (the
/// tokenizer kind), <c>bos_token_id</c> and <c>eos_token_id</c>. Hugging Face ignores these fields, and writing
/// keeps the other fields of an existing file (a chat template, say).
/// </summary>
internal static class TokenizerConfigFile
{
    /// <summary>The file name.</summary>
    public const string FileName = "tokenizer_config.json";

    /// <summary>The field naming the tokenizer kind.</summary>
    public const string KindField = "hft_tokenizer";

    /// <summary>The BOS id field.</summary>
    public const string BosField = "bos_token_id";

    /// <summary>The EOS id field.</summary>
    public const string EosField = "eos_token_id";

    private static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true };

    /// <summary>
    /// Writes (or updates) <c>tokenizer_config.json</c> in <paramref name="directory"/>; <paramref name="extra"/>
    /// may add further fields to the object before it is written.
    /// </summary>
    public static void Write(string directory, string kind, int? bosId, int? eosId, Action<JsonObject>? extra)
    {
        string path = Path.Combine(directory, FileName);
        JsonObject root = ReadExistingOrEmpty(path);
        root[KindField] = kind;
        root[BosField] = bosId;
        root[EosField] = eosId;
        extra?.Invoke(root);
        File.WriteAllText(path, root.ToJsonString(WriteOptions) + "\n");
    }

    /// <summary>The parsed file in <paramref name="directory"/>, or null when there is none.</summary>
    /// <exception cref="InvalidInputException">The file is not a JSON object or cannot be read.</exception>
    public static JsonObject? TryRead(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return null;
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidInputException(path, $"cannot read the file: {e.Message}", e);
        }
        try
        {
            return ParseObject(text) ?? throw new InvalidInputException(path, "the tokenizer config is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>A string field, or null when absent or null.</summary>
    public static string? OptionalString(JsonObject root, string field, string path)
    {
        var node = root[field];
        if (node is null) return null;
        if (node is JsonValue v && v.TryGetValue(out string? s)) return s;
        throw new InvalidInputException(path, $"\"{field}\" must be a string, got {node.ToJsonString()}");
    }

    /// <summary>
    /// An integer id field, or null when absent or null; a list (as Hugging Face allows for EOS) gives its first entry.
    /// </summary>
    public static int? OptionalId(JsonObject root, string field, string path)
    {
        var node = root[field];
        if (node is JsonArray a) node = a.Count > 0 ? a[0] : null;
        if (node is null) return null;
        if (node is JsonValue v && v.TryGetValue(out int id)) return id;
        if (node is JsonValue d && d.TryGetValue(out double x) && x == Math.Floor(x) && x is >= int.MinValue and <= int.MaxValue)
            return (int)x;
        throw new InvalidInputException(path, $"\"{field}\" must be an integer token id, got {root[field]!.ToJsonString()}");
    }

    /// <summary>
    /// Checks that an id field, when present, equals the tokenizer's id (<paramref name="actual"/>).
    /// </summary>
    public static void CheckId(JsonObject root, string field, int? actual, string path, string what)
    {
        if (!root.ContainsKey(field)) return;
        int? stated = OptionalId(root, field, path);
        if (stated != actual)
        {
            throw new InvalidInputException(path,
                $"\"{field}\" is {Show(stated)} but {what} has {Show(actual)}");
        }
    }

    private static string Show(int? id) => id?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none";

    /// <summary>
    /// The JSON object of a config's text, or null for another JSON value. Duplicate keys are rejected (a JsonObject
    /// would throw ArgumentException on first access), and so are keys and strings whose escapes encode a lone
    /// surrogate (<c>"\ud800"</c>), which System.Text.Json cannot turn into .NET strings (InvalidOperationException).
    /// </summary>
    /// <exception cref="JsonException">The text is not such JSON.</exception>
    private static JsonObject? ParseObject(string text)
    {
        try
        {
            var node = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
            CheckText(node);
            return node as JsonObject;
        }
        catch (InvalidOperationException e)
        {
            throw new JsonException($"a key or string is not valid Unicode text (a lone surrogate escape?): {e.Message}", e);
        }
    }

    private static void CheckText(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var (_, value) in obj) CheckText(value);
                break;
            case JsonArray array:
                foreach (var item in array) CheckText(item);
                break;
            case JsonValue value when value.GetValueKind() == JsonValueKind.String:
                _ = value.GetValue<string>();
                break;
        }
    }

    private static JsonObject ReadExistingOrEmpty(string path)
    {
        if (!File.Exists(path)) return [];
        try
        {
            return ParseObject(File.ReadAllText(path)) ?? [];
        }
        catch (JsonException)
        {
            return []; // a corrupt file in the output directory is replaced
        }
    }
}
