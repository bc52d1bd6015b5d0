using System.Text.Json;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;

namespace HftRuntime.Model;

/// <summary>
/// The ids that end a generated answer beside config.json's first eos_token_id: the tokenizer's EOS (training ends
/// every assistant turn and document with it) and every id of the eos_token_id lists in config.json and
/// generation_config.json (Llama 3.1 Instruct: 128001, 128008, 128009, its turns ending with &lt;|eot_id|&gt;).
/// </summary>
public static class StopTokens
{
    /// <summary>The tokenizer's EOS, or none.</summary>
    public static IReadOnlySet<int> Of(ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return tokenizer.EosId is int eos ? new HashSet<int> { eos } : new HashSet<int>();
    }

    /// <summary>
    /// <see cref="Of"/> and the eos_token_id (an id or a list of ids) of <paramref name="modelDirectory"/>'s config.json
    /// and generation_config.json, each file where present.
    /// </summary>
    /// <exception cref="InvalidInputException">A file that is not JSON, or an eos_token_id that is no id or list of ids (naming the file).</exception>
    public static IReadOnlySet<int> Read(string modelDirectory, ITokenizer tokenizer)
    {
        var ids = new HashSet<int>(Of(tokenizer));
        foreach (var name in new[] { "config.json", "generation_config.json" })
        {
            string path = Path.Combine(modelDirectory, name);
            if (!File.Exists(path)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
            catch (JsonException e) { throw new InvalidInputException(path, $"is not valid JSON: {e.Message}", e); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("eos_token_id", out var eos)) continue;
                switch (eos.ValueKind)
                {
                    case JsonValueKind.Null: break;
                    case JsonValueKind.Number: ids.Add(Id(eos, path)); break;
                    case JsonValueKind.Array: foreach (var x in eos.EnumerateArray()) ids.Add(Id(x, path)); break;
                    default: throw new InvalidInputException(path, $"eos_token_id must be an id or a list of ids, got {eos.GetRawText()}");
                }
            }
        }
        return ids;
    }

    private static int Id(JsonElement e, string path) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0
            ? id
            : throw new InvalidInputException(path, $"eos_token_id holds {e.GetRawText()}, not a token id");
}
