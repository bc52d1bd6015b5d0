using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace HftRuntime.Runtime.Data;

/// <summary>SFT example as a batcher packs it: its (truncated) ids and which of them carry a loss.</summary>
internal sealed class SftExample(int[] ids, bool[] loss)
{
    public int[] Ids { get; } = ids;
    public bool[] Loss { get; } = loss;
    public int Length => Ids.Length;
}

/// <summary>DPO pair as a batcher packs it: the shared (truncated) prompt and the two (truncated) responses.</summary>
internal sealed class DpoExample(int[] prompt, int[] chosen, int[] rejected)
{
    public int[] Prompt { get; } = prompt;
    public int[] Chosen { get; } = chosen;
    public int[] Rejected { get; } = rejected;
    public int ChosenLength => Prompt.Length + Chosen.Length;
    public int RejectedLength => Prompt.Length + Rejected.Length;
}

/// <summary>
/// A JSON Lines dataset (one object per line, blank lines ignored) read in a streaming way. Opening makes one pass
/// over the file that validates every line (JSON, fields, types, roles, tokenisation), hashes the bytes (SHA-256) and
/// keeps an index of 8 bytes per valid example: for SFT and DPO the byte offset of its line, from which batchers
/// read the example again by seeking; for LM the position of its first token in a temporary token file (4 bytes per
/// token, deleted on <see cref="Dispose"/>) that the pass writes. So every error is found before any training and
/// the file is never held in memory. The last <c>heldOutFraction</c> of the valid examples, in file order, are
/// held out. The format is given or detected from the first valid line's fields; a line of another format is bad.
/// </summary>
public sealed class JsonlDataset : IDisposable
{
    private const int MaxBadLineMessages = 20;
    private static readonly byte[] Utf8Bom = [0xEF, 0xBB, 0xBF];

    private readonly SafeFileHandle _file;
    private readonly ITokenizer _tokenizer;
    private readonly bool _skipBadLines;
    private readonly List<string> _badLineMessages = new();
    private readonly List<int> _ids = new(), _chosen = new(), _rejected = new();
    private readonly List<bool> _loss = new();
    private long[] _index = new long[1024];
    private TokenStreamFile? _tokens;
    private DatasetFormat? _format;
    private string _formatOrigin = "";
    private byte[] _line = new byte[4096];

    private JsonlDataset(string path, ITokenizer tokenizer, int seq, DatasetFormat? format, bool skipBadLines)
    {
        Path = path; _tokenizer = tokenizer; Seq = seq; _skipBadLines = skipBadLines;
        _format = format;
        if (format is DatasetFormat f) _formatOrigin = $"the {DatasetFormats.Name(f)} format was requested";
        _file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
    }

    /// <summary>The source file.</summary>
    public string Path { get; }

    /// <summary>SHA-256 of the file's bytes (hex), computed during the index pass.</summary>
    public string Sha256 { get; private set; } = "";

    /// <summary>The format of the examples (<see cref="DatasetFormat.Lm"/>, <see cref="DatasetFormat.Sft"/> or <see cref="DatasetFormat.Dpo"/>).</summary>
    public DatasetFormat Format => _format ?? DatasetFormat.Lm;

    /// <summary>The line the format was detected from (1-based), or null when it was given.</summary>
    public long? FormatLine { get; private set; }

    /// <summary>The sequence length examples are truncated to (SFT, DPO).</summary>
    public int Seq { get; }

    /// <summary>The tokenizer the examples are encoded with.</summary>
    public ITokenizer Tokenizer => _tokenizer;

    /// <summary>Lines in the file (blank ones included).</summary>
    public long Lines { get; private set; }

    /// <summary>Valid examples (training and held-out).</summary>
    public int Count { get; private set; }

    /// <summary>Training examples: the first <see cref="Count"/> − <see cref="HeldOutCount"/> valid examples.</summary>
    public int TrainCount => Count - HeldOutCount;

    /// <summary>Held-out examples: the last ⌊<see cref="Count"/> · heldOutFraction⌋ valid examples.</summary>
    public int HeldOutCount { get; private set; }

    /// <summary>Bad lines skipped (only with skipBadLines; otherwise the first one is an error).</summary>
    public long BadLines { get; private set; }

    /// <summary>The messages of the first 20 bad lines skipped (file:line, problem, excerpt).</summary>
    public IReadOnlyList<string> BadLineMessages => _badLineMessages;

    /// <summary>Valid examples longer than <see cref="Seq"/>, cut by the <see cref="Truncation"/> rule (SFT, DPO).</summary>
    public long Truncated { get; private set; }

    /// <summary>Valid examples that kept no trained position after truncation and were skipped (SFT, DPO).</summary>
    public long SkippedTooLong { get; private set; }

    /// <summary>Bytes the in-memory index takes: 8 per valid example.</summary>
    public long IndexBytes => (long)_index.Length * sizeof(long);

    /// <summary>LM: tokens of the training documents (BOS and EOS included); 0 for other formats.</summary>
    public long TrainTokens => _tokens is null ? 0 : TokenStart(TrainCount);

    /// <summary>LM: tokens of the held-out documents; 0 for other formats.</summary>
    public long HeldOutTokens => _tokens is null ? 0 : _tokens.Length - TokenStart(TrainCount);

    /// <summary>
    /// Opens and indexes <paramref name="path"/>. <paramref name="seq"/> is the training sequence length (SFT and DPO
    /// examples are truncated to it); <paramref name="format"/> null detects the format from the first valid line.
    /// A bad line (malformed JSON or UTF-8, wrong or missing fields, wrong types, an unknown role, no assistant turn,
    /// an empty field, a response that tokenises to nothing) is an <see cref="InvalidInputException"/> naming
    /// <c>file:line</c> with an excerpt, or, with <paramref name="skipBadLines"/>, skipped and counted. A file with
    /// no valid example is an <see cref="InvalidInputException"/> naming the file.
    /// </summary>
    public static JsonlDataset Open(string path, ITokenizer tokenizer, int seq, DatasetFormat? format = null,
        double heldOutFraction = 0, bool skipBadLines = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (seq <= 0) throw new ArgumentOutOfRangeException(nameof(seq), seq, "sequence length must be positive");
        if (!(heldOutFraction >= 0 && heldOutFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(heldOutFraction), heldOutFraction, "held-out fraction must lie in [0, 1)");
        if (format == DatasetFormat.Text) throw new ArgumentException("a JSON Lines dataset cannot have the text format", nameof(format));
        if (!File.Exists(path)) throw new InvalidInputException(path, "data file not found");
        var d = new JsonlDataset(path, tokenizer, seq, format, skipBadLines);
        try
        {
            d.IndexPass();
            if (d.Count == 0)
            {
                string why = d.BadLines > 0 ? $" ({d.BadLines} bad lines skipped; the first: {d._badLineMessages[0]})"
                    : d.SkippedTooLong > 0 ? $" ({d.SkippedTooLong} examples left no trained token within {seq} tokens)" : "";
                throw new InvalidInputException(path, $"holds no valid example in {d.Lines} lines{why}");
            }
            d.HeldOutCount = (int)Math.Floor(d.Count * heldOutFraction);
            return d;
        }
        catch
        {
            d.Dispose();
            throw;
        }
    }

    /// <summary>
    /// SFT: up to <paramref name="max"/> held-out examples (in file order) as prompt and reference answer: everything
    /// before the last assistant turn's content is the prompt, that content is the answer.
    /// </summary>
    /// <exception cref="InvalidOperationException">The dataset is not SFT.</exception>
    public IReadOnlyList<HeldOutPrompt> HeldOutPrompts(int max) => Prompts(DatasetSplit.HeldOut, max);

    /// <summary>
    /// The first <paramref name="max"/> examples of a split as (prompt text, reference answer, prompt ids), in file
    /// order: everything up to the last assistant turn is the prompt, that turn's content the answer (sft only).
    /// </summary>
    public IReadOnlyList<HeldOutPrompt> Prompts(DatasetSplit split, int max)
    {
        if (Format != DatasetFormat.Sft) throw new InvalidOperationException($"prompts need an sft dataset, this one is {DatasetFormats.Name(Format)}");
        var (first, count) = Range(split);
        int n = Math.Min(Math.Max(0, max), count);
        var r = new List<HeldOutPrompt>(n);
        for (int i = 0; i < n; i++)
        {
            var rec = ReadRecord(_index[first + i]);
            var messages = rec.Messages;
            int last = messages.Length - 1;
            while (messages[last].Role != ChatRole.Assistant) last--;
            r.Add(new HeldOutPrompt(ChatTemplate.RenderPrompt(messages), messages[last].Content, ChatTemplate.EncodePrompt(messages, _tokenizer)));
        }
        return r;
    }

    /// <summary>Closes the file (and deletes the temporary token file of an LM dataset).</summary>
    public void Dispose()
    {
        _file.Dispose();
        _tokens?.Dispose();
    }

    /// <summary>The first example and the number of examples of a split.</summary>
    internal (int First, int Count) Range(DatasetSplit split) => split == DatasetSplit.Train ? (0, TrainCount) : (TrainCount, HeldOutCount);

    /// <summary>LM: the first token and the number of tokens of a split.</summary>
    internal (long First, long Count) TokenRange(DatasetSplit split)
    {
        if (_tokens is null) throw new InvalidOperationException("only an lm dataset has a token stream");
        long mid = TokenStart(TrainCount);
        return split == DatasetSplit.Train ? (0, mid) : (mid, _tokens.Length - mid);
    }

    /// <summary>LM: flagged tokens (see <see cref="TokenStreamFile.DocStartFlag"/>) from <paramref name="start"/> on.</summary>
    internal void ReadTokens(long start, Span<int> destination) => _tokens!.Read(start, destination);

    /// <summary>SFT: example <paramref name="example"/>, tokenised and truncated to <see cref="Seq"/>.</summary>
    internal SftExample ReadSft(int example)
    {
        long offset = _index[example];
        var rec = ReadRecord(offset);
        if (EncodeSft(rec) >= 0 || SftWindow() is not { } w)
            throw Changed(offset, "it no longer tokenises as it did");
        return new SftExample(CollectionsMarshal.AsSpan(_ids).Slice(w.Start, w.Length).ToArray(),
            CollectionsMarshal.AsSpan(_loss).Slice(w.Start, w.Length).ToArray());
    }

    /// <summary>DPO: pair <paramref name="example"/>, tokenised and truncated to <see cref="Seq"/>.</summary>
    internal DpoExample ReadDpo(int example)
    {
        long offset = _index[example];
        var rec = ReadRecord(offset);
        if (EncodeDpo(rec) is not null || DpoKeep() is not { } k)
            throw Changed(offset, "it no longer tokenises as it did");
        return new DpoExample(CollectionsMarshal.AsSpan(_ids)[(_ids.Count - k.Prompt)..].ToArray(),
            CollectionsMarshal.AsSpan(_chosen)[..k.Chosen].ToArray(), CollectionsMarshal.AsSpan(_rejected)[..k.Rejected].ToArray());
    }

    private long TokenStart(int example) => example < Count ? _index[example] : _tokens!.Length;

    private InvalidInputException Changed(long offset, string why) =>
        new(Path, $"changed since it was opened: the example at byte {offset}: {why}");

    private JsonlRecord ReadRecord(long offset)
    {
        var line = ReadLine(offset);
        try
        {
            if (InvalidUtf8At(line.Span) is int bad and >= 0) throw new BadLineException($"not valid UTF-8 at byte {bad} of the line");
            return JsonlLine.Parse(line, _format, _formatOrigin);
        }
        catch (BadLineException e)
        {
            throw Changed(offset, e.Message);
        }
    }

    private ReadOnlyMemory<byte> ReadLine(long offset)
    {
        int len = 0;
        while (true)
        {
            if (len == _line.Length) Array.Resize(ref _line, _line.Length * 2);
            int got = RandomAccess.Read(_file, _line.AsSpan(len), offset + len);
            if (got <= 0) break;
            int nl = _line.AsSpan(len, got).IndexOf((byte)'\n');
            if (nl >= 0) { len += nl; break; }
            len += got;
        }
        if (len > 0 && _line[len - 1] == '\r') len--;
        return _line.AsMemory(0, len);
    }

    // ---- the index pass ----------------------------------------------------------------------------------------

    private void IndexPass()
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var chunk = new byte[1 << 20];
        byte[] pending = new byte[4096];
        int pendingLength = 0;
        long fileOffset = 0, lineStart = 0, lineNo = 0;
        int got;
        while ((got = RandomAccess.Read(_file, chunk, fileOffset)) > 0)
        {
            sha.AppendData(chunk, 0, got);
            int i = 0;
            while (i < got)
            {
                int nl = chunk.AsSpan(i, got - i).IndexOf((byte)'\n');
                int end = nl < 0 ? got : i + nl;
                if (nl >= 0 && pendingLength == 0)
                {
                    ProcessLine(chunk.AsMemory(i, end - i), lineStart, ++lineNo);
                }
                else
                {
                    int need = pendingLength + (end - i);
                    if (need > pending.Length) Array.Resize(ref pending, Math.Max(need, 2 * pending.Length));
                    chunk.AsSpan(i, end - i).CopyTo(pending.AsSpan(pendingLength));
                    pendingLength = need;
                    if (nl >= 0)
                    {
                        ProcessLine(pending.AsMemory(0, pendingLength), lineStart, ++lineNo);
                        pendingLength = 0;
                    }
                }
                if (nl < 0) break;
                i = end + 1;
                lineStart = fileOffset + i;
            }
            fileOffset += got;
        }
        if (fileOffset > lineStart) ProcessLine(pending.AsMemory(0, pendingLength), lineStart, ++lineNo);
        Lines = lineNo;
        Sha256 = Convert.ToHexStringLower(sha.GetHashAndReset());
        Array.Resize(ref _index, Count);
    }

    private void ProcessLine(ReadOnlyMemory<byte> line, long offset, long lineNo)
    {
        var span = line.Span;
        if (span.Length > 0 && span[^1] == (byte)'\r') line = line[..^1];
        if (lineNo == 1 && line.Span.StartsWith(Utf8Bom)) { line = line[Utf8Bom.Length..]; offset += Utf8Bom.Length; }
        span = line.Span;
        if (span.IndexOfAnyExcept(" \t\r"u8) < 0) return;
        try
        {
            if (InvalidUtf8At(span) is int bad and >= 0) throw new BadLineException($"not valid UTF-8 at byte {bad} of the line");
            var rec = JsonlLine.Parse(line, _format, _formatOrigin);
            AddExample(rec, offset);
            if (_format is null)
            {
                _format = rec.Format;
                FormatLine = lineNo;
                _formatOrigin = $"the format {DatasetFormats.Name(rec.Format)} was detected from line {lineNo}";
            }
        }
        catch (BadLineException e)
        {
            string message = $"{e.Message}; the line reads: {JsonlLine.Excerpt(span)}";
            if (!_skipBadLines) throw new InvalidInputException($"{Path}:{lineNo}", message);
            BadLines++;
            if (_badLineMessages.Count < MaxBadLineMessages) _badLineMessages.Add($"{Path}:{lineNo}: {message}");
        }
    }

    private void AddExample(JsonlRecord rec, long offset)
    {
        switch (rec.Format)
        {
            case DatasetFormat.Lm:
            {
                _ids.Clear();
                if (_tokenizer.BosId is int bos) _ids.Add(bos);
                int before = _ids.Count;
                _tokenizer.Encode(rec.Text, _ids);
                if (_ids.Count == before) throw new BadLineException("field 'text' tokenises to no tokens");
                if (_tokenizer.EosId is int eos) _ids.Add(eos);
                _tokens ??= new TokenStreamFile();
                Append(_tokens.Length);
                for (int i = 0; i < _ids.Count; i++) _tokens.Add(_ids[i], i == 0);
                return;
            }
            case DatasetFormat.Sft:
            {
                int empty = EncodeSft(rec);
                if (empty >= 0)
                    throw new BadLineException(rec.IsPair ? "field 'response' tokenises to no tokens" : $"messages[{empty}]: the assistant content tokenises to no tokens");
                if (SftWindow() is not { } w) { SkippedTooLong++; return; }
                if (w.Length < _ids.Count) Truncated++;
                Append(offset);
                return;
            }
            default:
            {
                if (EncodeDpo(rec) is string field) throw new BadLineException($"field '{field}' tokenises to no tokens");
                if (DpoKeep() is not { } k) { SkippedTooLong++; return; }
                if (k.Prompt < _ids.Count || k.Chosen < _chosen.Count || k.Rejected < _rejected.Count) Truncated++;
                Append(offset);
                return;
            }
        }
    }

    private void Append(long entry)
    {
        if (Count == _index.Length) Array.Resize(ref _index, 2 * _index.Length);
        _index[Count++] = entry;
    }

    /// <summary>Fills _ids/_loss with the example; returns the first assistant turn that tokenised to nothing, or -1.</summary>
    private int EncodeSft(JsonlRecord rec)
    {
        _ids.Clear(); _loss.Clear();
        return ChatTemplate.Encode(rec.Messages, rec.Messages.Length, _tokenizer, _ids, _loss);
    }

    /// <summary>The kept window [start, start + length) of the example in _ids, or null when nothing is left to train.</summary>
    private (int Start, int Length)? SftWindow()
    {
        int first = _loss.IndexOf(true);
        if (first < 0) return null;
        var (p, r) = Truncation.Keep(first, _ids.Count - first, Seq);
        int start = first - p;
        for (int i = start + 1; i < first + r; i++)
            if (_loss[i]) return (start, p + r);
        return null;
    }

    /// <summary>Fills _ids (prompt), _chosen and _rejected; returns the field that tokenised to nothing, or null.</summary>
    private string? EncodeDpo(JsonlRecord rec)
    {
        _ids.Clear(); _loss.Clear(); _chosen.Clear(); _rejected.Clear();
        ChatTemplate.Encode([new ChatMessage(ChatRole.User, rec.Prompt), new ChatMessage(ChatRole.Assistant, rec.Chosen)], 1, _tokenizer, _ids, _loss);
        _tokenizer.Encode(rec.Chosen, _chosen);
        if (_chosen.Count == 0) return "chosen";
        _tokenizer.Encode(rec.Rejected, _rejected);
        if (_rejected.Count == 0) return "rejected";
        if (_tokenizer.EosId is int eos) { _chosen.Add(eos); _rejected.Add(eos); }
        return null;
    }

    /// <summary>Tokens kept of the prompt (its end) and of each response (its start), or null when one side keeps no trained token.</summary>
    private (int Prompt, int Chosen, int Rejected)? DpoKeep()
    {
        var (p, _) = Truncation.Keep(_ids.Count, Math.Max(_chosen.Count, _rejected.Count), Seq);
        int c = Math.Min(_chosen.Count, Seq - p), r = Math.Min(_rejected.Count, Seq - p);
        int trainedC = p > 0 ? c : c - 1, trainedR = p > 0 ? r : r - 1;
        return trainedC > 0 && trainedR > 0 ? (p, c, r) : null;
    }

    private static int InvalidUtf8At(ReadOnlySpan<byte> s)
    {
        if (System.Text.Unicode.Utf8.IsValid(s)) return -1;
        int i = 0;
        while (i < s.Length)
        {
            if (Rune.DecodeFromUtf8(s[i..], out _, out int used) != System.Buffers.OperationStatus.Done) return i;
            i += used;
        }
        return -1;
    }
}
