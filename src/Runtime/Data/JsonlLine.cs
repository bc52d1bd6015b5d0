using System.Text;
using System.Text.Json;

namespace HftRuntime.Runtime.Data;

/// <summary>A line that is not a valid example; the message says why (the reader adds file:line and an excerpt).</summary>
internal sealed class BadLineException(string message) : Exception(message);

/// <summary>The fields of one valid JSON Lines example.</summary>
internal sealed class JsonlRecord
{
    /// <summary>The format the line's fields make.</summary>
    public DatasetFormat Format { get; init; }

    /// <summary>The document of an LM line.</summary>
    public string Text { get; init; } = "";

    /// <summary>The conversation of an SFT line (a prompt/response pair becomes a user and an assistant turn).</summary>
    public ChatMessage[] Messages { get; init; } = [];

    /// <summary>True when an SFT line was a prompt/response pair (rather than messages).</summary>
    public bool IsPair { get; init; }

    /// <summary>The prompt of a DPO line.</summary>
    public string Prompt { get; init; } = "";

    /// <summary>The preferred response of a DPO line.</summary>
    public string Chosen { get; init; } = "";

    /// <summary>The dispreferred response of a DPO line.</summary>
    public string Rejected { get; init; } = "";
}

/// <summary>
/// Parses and validates one line of a JSON Lines dataset. The fields that make an example are text, prompt,
/// response, messages, chosen and rejected; exactly one of the sets {text}, {prompt, response}, {messages},
/// {prompt, chosen, rejected} must be present (other fields are ignored).
/// </summary>
internal static class JsonlLine
{
    private const int FText = 1, FPrompt = 2, FResponse = 4, FMessages = 8, FChosen = 16, FRejected = 32;
    private static readonly string[] FieldNames = ["text", "prompt", "response", "messages", "chosen", "rejected"];

    /// <summary>An excerpt of a line for error messages: its first ~80 characters.</summary>
    public static string Excerpt(ReadOnlySpan<byte> line)
    {
        const int Chars = 80;
        var head = line[..Math.Min(line.Length, 4 * Chars)];
        string s = Encoding.UTF8.GetString(head);
        bool cut = head.Length < line.Length;
        if (s.Length > Chars)
        {
            int n = char.IsHighSurrogate(s[Chars - 1]) ? Chars - 1 : Chars;
            s = s[..n];
            cut = true;
        }
        var sb = new StringBuilder(s.Length + 3);
        foreach (char c in s) sb.Append(char.IsControl(c) ? ' ' : c);
        if (cut) sb.Append("...");
        return sb.ToString();
    }

    /// <summary>
    /// Parses <paramref name="line"/> (valid UTF-8, no line break). <paramref name="format"/> is the dataset's format
    /// when known (<paramref name="formatOrigin"/> says where it came from, for messages); a line of another format
    /// is bad.
    /// </summary>
    /// <exception cref="BadLineException">The line is not a valid example.</exception>
    public static JsonlRecord Parse(ReadOnlyMemory<byte> line, DatasetFormat? format, string formatOrigin)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            string m = e.Message;
            int cut = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
            if (cut >= 0) m = m[..cut];
            throw new BadLineException($"malformed JSON at byte {e.BytePositionInLine ?? 0} of the line: {m.TrimEnd('.', ' ')}");
        }
        using (doc)
        {
            try
            {
                return Record(doc.RootElement, format, formatOrigin);
            }
            catch (InvalidOperationException e)
            {
                // A key or string whose escapes encode a lone surrogate ("\ud800") cannot become a .NET string.
                throw new BadLineException($"a key or string is not valid text (a lone surrogate escape?): {e.Message.TrimEnd('.')}");
            }
        }
    }

    private static JsonlRecord Record(JsonElement root, DatasetFormat? format, string formatOrigin)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw new BadLineException($"a line must hold one JSON object, found {Kind(root.ValueKind)}");
        var fields = new JsonElement[FieldNames.Length];
        int mask = 0;
        foreach (var p in root.EnumerateObject())
        {
            int k = Array.IndexOf(FieldNames, p.Name);
            if (k < 0) continue;
            if ((mask & (1 << k)) != 0) throw new BadLineException($"field '{p.Name}' appears twice");
            mask |= 1 << k;
            fields[k] = p.Value;
        }
        DatasetFormat shape = mask switch
        {
            FText => DatasetFormat.Lm,
            FPrompt | FResponse or FMessages => DatasetFormat.Sft,
            FPrompt | FChosen | FRejected => DatasetFormat.Dpo,
            _ => throw new BadLineException(ShapeError(mask, root, format, formatOrigin)),
        };
        if (format is DatasetFormat f && f != shape)
            throw new BadLineException($"{Article(shape)} {DatasetFormats.Name(shape)} example ({List(mask)}) in {Article(f)} {DatasetFormats.Name(f)} dataset ({formatOrigin})");
        switch (shape)
        {
            case DatasetFormat.Lm:
                return new JsonlRecord { Format = shape, Text = NonEmptyString(fields[0], "text") };
            case DatasetFormat.Dpo:
                return new JsonlRecord
                {
                    Format = shape,
                    Prompt = NonEmptyString(fields[1], "prompt"),
                    Chosen = NonEmptyString(fields[4], "chosen"),
                    Rejected = NonEmptyString(fields[5], "rejected"),
                };
            default:
                if (mask == FMessages) return new JsonlRecord { Format = shape, Messages = Messages(fields[3]) };
                return new JsonlRecord
                {
                    Format = shape,
                    IsPair = true,
                    Messages =
                    [
                        new ChatMessage(ChatRole.User, NonEmptyString(fields[1], "prompt")),
                        new ChatMessage(ChatRole.Assistant, NonEmptyString(fields[2], "response")),
                    ],
                };
        }
    }

    private static ChatMessage[] Messages(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Array) throw new BadLineException($"field 'messages' must be an array, found {Kind(e.ValueKind)}");
        int n = e.GetArrayLength();
        if (n == 0) throw new BadLineException("field 'messages' is an empty array");
        var r = new ChatMessage[n];
        bool assistant = false;
        int i = 0;
        foreach (var m in e.EnumerateArray())
        {
            string where = $"messages[{i}]";
            if (m.ValueKind != JsonValueKind.Object) throw new BadLineException($"{where} must be an object with 'role' and 'content', found {Kind(m.ValueKind)}");
            if (!m.TryGetProperty("role", out var roleE)) throw new BadLineException($"{where}: field 'role' is missing");
            if (roleE.ValueKind != JsonValueKind.String) throw new BadLineException($"{where}: field 'role' must be a string, found {Kind(roleE.ValueKind)}");
            string roleName = Str(roleE, $"{where}: field 'role'");
            ChatRole role = roleName switch
            {
                "system" => ChatRole.System,
                "user" => ChatRole.User,
                "assistant" => ChatRole.Assistant,
                _ => throw new BadLineException($"{where}: role '{Short(roleName)}' is not one of system, user, assistant"),
            };
            if (!m.TryGetProperty("content", out var contentE)) throw new BadLineException($"{where}: field 'content' is missing");
            if (contentE.ValueKind != JsonValueKind.String) throw new BadLineException($"{where}: field 'content' must be a string, found {Kind(contentE.ValueKind)}");
            string content = Str(contentE, $"{where}: field 'content'");
            if (role != ChatRole.System && string.IsNullOrWhiteSpace(content))
                throw new BadLineException($"{where}: the {roleName} content is empty");
            assistant |= role == ChatRole.Assistant;
            r[i++] = new ChatMessage(role, content);
        }
        if (!assistant) throw new BadLineException("field 'messages' holds no assistant turn");
        return r;
    }

    private static string NonEmptyString(JsonElement e, string name)
    {
        if (e.ValueKind != JsonValueKind.String) throw new BadLineException($"field '{name}' must be a string, found {Kind(e.ValueKind)}");
        string s = Str(e, $"field '{name}'");
        if (string.IsNullOrWhiteSpace(s)) throw new BadLineException($"field '{name}' is empty");
        return s;
    }

    private static string Str(JsonElement e, string what)
    {
        try
        {
            return e.GetString()!;
        }
        catch (InvalidOperationException x)
        {
            throw new BadLineException($"{what} is not valid text: {x.Message.TrimEnd('.')}");
        }
    }

    private static string ShapeError(int mask, JsonElement root, DatasetFormat? format, string formatOrigin)
    {
        string Missing(int need) => Names(need & ~mask) + (Count(need & ~mask) == 1 ? " is missing" : " are missing");
        string Extra(int allowed) => Names(mask & ~allowed) + (Count(mask & ~allowed) == 1 ? " does not belong" : " do not belong");
        switch (format)
        {
            case DatasetFormat.Lm:
                return (mask & FText) == 0 ? $"field 'text' is missing ({formatOrigin}){Found(root)}" : $"{Extra(FText)} in an lm example ({formatOrigin})";
            case DatasetFormat.Dpo:
                return (mask & ~(FPrompt | FChosen | FRejected)) != 0
                    ? $"{Extra(FPrompt | FChosen | FRejected)} in a dpo example ({formatOrigin})"
                    : $"{Missing(FPrompt | FChosen | FRejected)} ({formatOrigin}){Found(root)}";
            case DatasetFormat.Sft:
                if ((mask & FMessages) != 0) return $"{Names(mask & ~FMessages)} cannot be combined with field 'messages' ({formatOrigin})";
                return (mask & ~(FPrompt | FResponse)) != 0
                    ? $"{Extra(FPrompt | FResponse)} in an sft example ({formatOrigin})"
                    : $"{Missing(FPrompt | FResponse)} (expected 'prompt' and 'response', or 'messages'; {formatOrigin}){Found(root)}";
            default:
                return (mask == 0 ? "no example fields" : $"the fields {Names(mask)} make no example") +
                    ": expected {\"text\"} (lm), {\"prompt\", \"response\"} or {\"messages\"} (sft), or {\"prompt\", \"chosen\", \"rejected\"} (dpo)" + Found(root);
        }
    }

    private static string Found(JsonElement root)
    {
        var names = new List<string>();
        foreach (var p in root.EnumerateObject())
        {
            if (names.Count == 8) { names.Add("..."); break; }
            names.Add($"'{Short(p.Name)}'");
        }
        return names.Count == 0 ? "; the object is empty" : $"; the line has {string.Join(", ", names)}";
    }

    private static string Names(int mask) => (Count(mask) == 1 ? "field " : "fields ") + List(mask);

    private static string List(int mask)
    {
        var names = new List<string>();
        for (int k = 0; k < FieldNames.Length; k++)
            if ((mask & (1 << k)) != 0) names.Add($"'{FieldNames[k]}'");
        return string.Join(", ", names);
    }

    private static int Count(int mask) => System.Numerics.BitOperations.PopCount((uint)mask);

    private static string Article(DatasetFormat f) => f == DatasetFormat.Dpo ? "a" : "an";

    private static string Short(string s) => s.Length <= 40 ? s : s[..40] + "...";

    private static string Kind(JsonValueKind k) => k switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => k.ToString(),
    };
}
