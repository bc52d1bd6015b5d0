using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// A Hugging Face fast tokenizer (<c>tokenizer.json</c>) of the byte-level BPE kind — GPT-2, Llama 3, SmolLM and
/// their relatives. The text is split at the added tokens as Hugging Face's added vocabulary does (leftmost, the longest
/// there; a <c>single_word</c> token only between non-word characters; <c>lstrip</c> and <c>rstrip</c> take in the
/// whitespace beside it; every added token is matched on the text as given, <c>normalized</c> ones too), the rest normalized and
/// pre-tokenized (<see cref="HfPreTokenizer"/>), and each piece, spelt in the byte-level alphabet, is merged pair by
/// pair in the order of the file's merges (the lowest-ranked adjacent pair first, the leftmost among equals), as
/// Hugging Face's BPE model does; with <c>ignore_merges</c> a piece that is itself in the vocabulary is taken whole.
/// EOS is the <c>eos_token</c> of the directory's tokenizer_config.json; BOS (the id put first) is its
/// <c>bos_token</c> only where Hugging Face would add it: as the post-processor's template does (Llama 3) or
/// <c>add_bos_token</c> says, else none (GPT-2, SmolLM2 name a bos_token that is never added). The
/// SentencePiece kind of tokenizer.json (byte_fallback; Llama 2, Mistral) is refused: those models ship
/// tokenizer.model, which <see cref="SentencePieceTokenizer"/> reads.
/// </summary>
public sealed class HfBpeTokenizer : ITokenizer
{
    /// <summary>The <see cref="Kind"/> of this tokenizer.</summary>
    public const string KindName = "hf-bpe";

    /// <summary>The file this tokenizer is read from and saved as.</summary>
    public const string FileName = "tokenizer.json";

    private readonly byte[] _json;
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly string?[] _pieceOf;
    private readonly bool[] _special;
    private readonly List<AddedToken> _added;
    private readonly HfPreTokenizer _pre;
    private readonly bool _ignoreMerges;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    /// <summary>An entry of the file's added_tokens, with the flags that shape its matching.</summary>
    private readonly record struct AddedToken(string Content, int Id, bool Special, bool LStrip, bool RStrip, bool SingleWord);

    private HfBpeTokenizer(byte[] json, Dictionary<string, int> vocab, Dictionary<(string, string), int> ranks, List<AddedToken> added,
        HfPreTokenizer pre, bool ignoreMerges, int? bos, int? eos)
    {
        _json = json; _vocab = vocab; _ranks = ranks; _pre = pre; _ignoreMerges = ignoreMerges;
        VocabSize = Math.Max(vocab.Count == 0 ? 0 : vocab.Values.Max() + 1, added.Count == 0 ? 0 : added.Max(a => a.Id) + 1);
        _pieceOf = new string?[VocabSize];
        _special = new bool[VocabSize];
        foreach (var (piece, id) in vocab) _pieceOf[id] = piece;
        // Longest first, so that of two added tokens starting at the same place the longer one wins.
        _added = added.OrderByDescending(a => a.Content.Length).ToList();
        foreach (var t in added) { _pieceOf[t.Id] = t.Content; _special[t.Id] = t.Special; }
        BosId = bos; EosId = eos;
    }

    /// <inheritdoc/>
    public string Kind => KindName;

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int? EosId { get; }

    /// <summary>
    /// Reads <c>tokenizer.json</c> from <paramref name="directory"/> and its tokenizer_config.json: EOS is its
    /// <c>eos_token</c> (a string or an object with "content"; or the id this runtime writes), BOS as the class
    /// summary says.
    /// </summary>
    /// <exception cref="InvalidInputException">The file is missing, corrupt, or of a kind not supported.</exception>
    public static HfBpeTokenizer Load(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new InvalidInputException(path, "tokenizer file not found");
        byte[] json = File.ReadAllBytes(path);
        HfBpeTokenizer tokenizer;
        try
        {
            using var doc = JsonDocument.Parse(json);
            tokenizer = Parse(json, doc.RootElement, path, TokenizerConfigFile.TryRead(directory), Path.Combine(directory, TokenizerConfigFile.FileName));
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            // A value of another JSON kind where the format has a string or number, or a string that is not valid Unicode.
            throw new InvalidInputException(path, $"not a valid tokenizer.json: {e.Message}", e);
        }
        return tokenizer;
    }

    private static HfBpeTokenizer Parse(byte[] json, JsonElement root, string path, System.Text.Json.Nodes.JsonObject? config, string configPath)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidInputException(path, "no \"model\" object: not a Hugging Face tokenizer.json");
        string type = model.TryGetProperty("type", out var t) ? Text(t) ?? "" : "";
        if (type != "BPE") throw new InvalidInputException(path, $"model type \"{type}\" is not supported (only byte-level BPE)");
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw new InvalidInputException(path, "a SentencePiece-style BPE (byte_fallback) is not read from tokenizer.json; give the model's tokenizer.model instead");
        foreach (var field in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model.TryGetProperty(field, out var affix) && Text(affix) is { Length: > 0 })
                throw new InvalidInputException(path, $"model \"{field}\" is set: a word-piece style BPE, not byte-level");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw new InvalidInputException(path, "model \"dropout\" is set: its encodings would be random");
        var pre = new HfPreTokenizer(root, path);
        if (!pre.IsByteLevel) throw new InvalidInputException(path, "no ByteLevel pre-tokenizer: only byte-level BPE tokenizers are supported");
        if (!model.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object) throw new InvalidInputException(path, "model has no \"vocab\" object");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var e in v.EnumerateObject())
        {
            if (e.Value.ValueKind != JsonValueKind.Number || !e.Value.TryGetInt32(out int id) || id < 0)
                throw new InvalidInputException(path, $"vocab entry \"{e.Name}\" has no valid id");
            vocab[e.Name] = id;
        }
        for (int b = 0; b < 256; b++)
            if (!vocab.ContainsKey(ByteLevel.Spell([(byte)b])))
                throw new InvalidInputException(path, $"the vocabulary lacks the byte-level symbol of byte {b}: not every text could be encoded");
        var ranks = new Dictionary<(string, string), int>();
        if (model.TryGetProperty("merges", out var merges) && merges.ValueKind == JsonValueKind.Array)
        {
            int rank = 0;
            foreach (var m in merges.EnumerateArray())
            {
                var pair = Merge(m, rank, path);
                if (!vocab.ContainsKey(pair.Item1 + pair.Item2))
                    throw new InvalidInputException(path, $"merge {rank} (\"{pair.Item1}\" \"{pair.Item2}\") makes a token that is not in the vocabulary");
                ranks.TryAdd(pair, rank++);
            }
        }
        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var a) && a.ValueKind == JsonValueKind.Array)
            foreach (var x in a.EnumerateArray())
            {
                if (x.ValueKind != JsonValueKind.Object || !x.TryGetProperty("id", out var idNode) || idNode.ValueKind != JsonValueKind.Number || !idNode.TryGetInt32(out int id)
                    || id < 0 || !x.TryGetProperty("content", out var c) || Text(c) is not { Length: > 0 } content)
                    throw new InvalidInputException(path, $"an added token lacks an id or content: {x.GetRawText()}");
                bool Flag(string name) => x.TryGetProperty(name, out var f) && f.ValueKind == JsonValueKind.True;
                added.Add(new AddedToken(content, id, Flag("special"), Flag("lstrip"), Flag("rstrip"), Flag("single_word")));
            }
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        // Ids index arrays of the vocabulary's size: dense as in every real file, a gap or two allowed, no more.
        long entries = vocab.Count + added.Count;
        foreach (var (name, id) in vocab.Select(e => (e.Key, e.Value)).Concat(added.Select(e => (e.Content, e.Id))))
            if (id >= 2 * entries + 1024) throw new InvalidInputException(path, $"token \"{name}\" has id {id}, far beyond the {entries} tokens the file holds");
        int? Id(string field)
        {
            if (config is null) return null;
            if (config.ContainsKey(field + "_id")) return TokenizerConfigFile.OptionalId(config, field + "_id", configPath);
            var node = config[field] is System.Text.Json.Nodes.JsonObject o ? o["content"] : config[field];
            if (node is null) return null;
            if (node is not System.Text.Json.Nodes.JsonValue value || !value.TryGetValue(out string? text))
                throw new InvalidInputException(configPath, $"\"{field}\" must be a token string or an object with a \"content\" string, got {config[field]!.ToJsonString()}");
            return IdOf(text) ?? throw new InvalidInputException(configPath, $"\"{field}\" is \"{text}\", which {FileName} does not hold");
        }

        // A token's id by its text: an added token first, else the vocabulary's entry.
        int? IdOf(string content)
        {
            foreach (var t in added) if (t.Content == content) return t.Id;
            return vocab.TryGetValue(content, out int id) ? id : null;
        }
        return new HfBpeTokenizer(json, vocab, ranks, added, pre, ignoreMerges, Bos(), Id("eos_token"));

        // The BOS this tokenizer puts first, as Hugging Face's would: the one our own config records (bos_token_id);
        // else as tokenizer_config.json's add_bos_token says; else the special token the post-processor's template
        // puts before the text (Llama 3); none without one (GPT-2, SmolLM2: their bos_token is never added).
        int? Bos()
        {
            int? template = TemplateBos(root, path, IdOf);
            if (config is not null && config.ContainsKey("bos_token_id")) return Id("bos_token");
            return (config?["add_bos_token"] as System.Text.Json.Nodes.JsonValue)?.TryGetValue(out bool add) == true
                ? add ? Id("bos_token") ?? template : null
                : template;
        }
    }

    /// <summary>
    /// The id of the special token that the post_processor's TemplateProcessing (alone or in a Sequence) puts before
    /// $A in its "single" template, or null (no post-processor, ByteLevel alone, or a template that starts with the
    /// text). Special tokens after the text are not added (the data pipeline ends documents and turns with EOS itself).
    /// </summary>
    /// <exception cref="InvalidInputException">Another post-processor (Roberta, Bert), or a template token that the file lacks.</exception>
    private static int? TemplateBos(JsonElement root, string path, Func<string, int?> idOf)
    {
        if (!root.TryGetProperty("post_processor", out var p) || p.ValueKind == JsonValueKind.Null) return null;
        return FromProcessor(p);

        int? FromProcessor(JsonElement processor)
        {
            string type = processor.ValueKind == JsonValueKind.Object && processor.TryGetProperty("type", out var t) ? Text(t) ?? "" : "";
            switch (type)
            {
                case "ByteLevel": return null;
                case "Sequence":
                    if (!processor.TryGetProperty("processors", out var list) || list.ValueKind != JsonValueKind.Array)
                        throw new InvalidInputException(path, "post_processor Sequence has no \"processors\" list");
                    foreach (var x in list.EnumerateArray()) if (FromProcessor(x) is int id) return id;
                    return null;
                case "TemplateProcessing":
                    if (!processor.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array || single.GetArrayLength() == 0
                        || !single[0].TryGetProperty("SpecialToken", out var first)) return null;
                    string name = first.TryGetProperty("id", out var n) ? Text(n) ?? "" : "";
                    return idOf(name) ?? throw new InvalidInputException(path, $"post_processor's template starts with \"{name}\", which the file does not hold");
                default:
                    throw new InvalidInputException(path, $"post_processor \"{type}\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
            }
        }
    }

    private static string? Text(JsonElement e) => e.ValueKind == JsonValueKind.String ? e.GetString() : null;

    private static (string, string) Merge(JsonElement m, int rank, string path)
    {
        if (Text(m) is { Length: > 2 } s && s.IndexOf(' ', 1) is int sp and > 0 && sp < s.Length - 1)
            return (s[..sp], s[(sp + 1)..]);
        if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && Text(m[0]) is { Length: > 0 } l && Text(m[1]) is { Length: > 0 } r)
            return (l, r);
        throw new InvalidInputException(path, $"merge {rank} is neither \"a b\" nor [\"a\", \"b\"]: {m.GetRawText()}");
    }

    /// <inheritdoc/>
    public void Encode(string text, List<int> output)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(output);
        // plain: where the text not yet encoded starts; from: where the next search for an added token starts (a
        // discarded single_word match is passed over, as the matches of Hugging Face's automaton are).
        int plain = 0, from = 0;
        var next = new int[_added.Count];
        System.Array.Fill(next, -2);
        while (from < text.Length)
        {
            var (start, k) = NextAdded(text, from, next);
            if (k < 0) break;
            var token = _added[k];
            int stop = start + token.Content.Length;
            from = stop;
            if (token.SingleWord && (start > 0 && IsWordBefore(text, start) || stop < text.Length && IsWordAt(text, stop))) continue;
            if (token.LStrip) while (start > plain && char.IsWhiteSpace(text[start - 1])) start--;
            if (token.RStrip) while (stop < text.Length && char.IsWhiteSpace(text[stop])) stop++;
            if (start > plain) EncodePlain(text[plain..start], output);
            output.Add(token.Id);
            plain = Math.Max(plain, stop);
        }
        if (plain < text.Length) EncodePlain(text[plain..], output);
    }

    private void EncodePlain(string text, List<int> output)
    {
        foreach (var piece in _pre.Split(text)) output.AddRange(Piece(ByteLevel.Encode(piece)));
    }

    /// <summary>Whether the character (or surrogate pair) that ends before <paramref name="end"/> is a word character (\w).</summary>
    private static bool IsWordBefore(string text, int end)
    {
        int i = end - 1;
        if (char.IsLowSurrogate(text[i]) && i > 0 && char.IsHighSurrogate(text[i - 1])) i--;
        return IsWordAt(text, i);
    }

    /// <summary>Whether the character (or surrogate pair) at <paramref name="start"/> is a word character (\w).</summary>
    private static bool IsWordAt(string text, int start) => Rune.TryGetRuneAt(text, start, out var r) && IsWord(r);

    /// <summary>\w of Hugging Face's regex crate: letters, digits, marks and connector punctuation.</summary>
    private static bool IsWord(Rune r) => Rune.IsLetterOrDigit(r) || Rune.GetUnicodeCategory(r) is System.Globalization.UnicodeCategory.NonSpacingMark
        or System.Globalization.UnicodeCategory.SpacingCombiningMark or System.Globalization.UnicodeCategory.EnclosingMark
        or System.Globalization.UnicodeCategory.ConnectorPunctuation or System.Globalization.UnicodeCategory.LetterNumber;

    /// <summary>
    /// The first added token at or after <paramref name="from"/> (the longest there) as its start and its index in
    /// the added tokens, or (text end, -1). <paramref name="next"/> keeps each token's next occurrence (-1: none left,
    /// -2: not searched yet), so a text is searched once per token, not once per occurrence.
    /// </summary>
    private (int Start, int Index) NextAdded(string text, int from, int[] next)
    {
        var best = (Start: text.Length, Index: -1);
        for (int k = 0; k < _added.Count; k++)
        {
            string content = _added[k].Content;
            if (next[k] == -2 || next[k] >= 0 && next[k] < from) next[k] = text.IndexOf(content, from, StringComparison.Ordinal);
            int i = next[k];
            if (i >= 0 && (i < best.Start || i == best.Start && content.Length > _added[best.Index].Content.Length)) best = (i, k);
        }
        return best;
    }

    /// <summary>The ids of one pre-token spelt in the byte-level alphabet.</summary>
    private int[] Piece(string piece)
    {
        if (_cache.TryGetValue(piece, out var ids)) return ids;
        if (_ignoreMerges && _vocab.TryGetValue(piece, out int whole)) ids = [whole];
        else
        {
            var symbols = new List<string>(piece.Length);
            foreach (char c in piece) symbols.Add(c.ToString());
            while (symbols.Count > 1)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (_ranks.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < bestRank) { best = i; bestRank = r; }
                if (best < 0) break;
                symbols[best] += symbols[best + 1];
                symbols.RemoveAt(best + 1);
            }
            ids = new int[symbols.Count];
            for (int i = 0; i < ids.Length; i++)
                ids[i] = _vocab[symbols[i]]; // a byte symbol or a merge's result: both checked to be in the vocabulary at load
        }
        if (_cache.Count > 1 << 16) _cache.Clear();
        _cache[piece] = ids;
        return ids;
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, <see cref="VocabSize"/>).</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        TokenIds.CheckRange(ids, VocabSize);
        var bytes = new List<byte>(ids.Length * 4);
        foreach (int id in ids)
        {
            if (_special[id] || _pieceOf[id] is not { } piece) continue;
            if (!ByteLevel.TryDecode(piece, bytes)) bytes.AddRange(Encoding.UTF8.GetBytes(piece)); // a non-special added token: its text
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>
    /// Writes the tokenizer.json it was read from, unchanged, and tokenizer_config.json with
    /// <c>"hft_tokenizer": "hf-bpe"</c> and the BOS and EOS ids (other fields of an existing file are kept).
    /// </summary>
    public void Save(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        File.WriteAllBytes(Path.Combine(directory, FileName), _json);
        TokenizerConfigFile.Write(directory, KindName, BosId, EosId, null);
    }
}
