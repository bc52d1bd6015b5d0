using System.Text;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Fuzz;

/// <summary>
/// Fuzzing of the data readers: JSON Lines datasets (<see cref="JsonlDataset"/>, <see cref="Datasets.Open"/> and the
/// batchers <see cref="DocumentLmBatcher"/>, <see cref="SftBatcher"/> and <see cref="DpoBatcher"/>) and plain text
/// (<see cref="TokenCorpus"/>, <see cref="LmBatcher"/>). The seeds are small lm, sft and dpo files written here (with
/// unicode, escapes, extra fields, CRLF line ends, a BOM, blank lines), read with the bytes tokenizer and the BPE
/// SentencePiece fixture. An accepted file is exercised: held-out prompts, and batches past an epoch's end, whose
/// ids and targets must lie in the tokenizer's vocabulary.
/// </summary>
[TestFixture]
public sealed class DatasetFuzzTests
{
    private static readonly string[] Strings =
    [
        "text", "prompt", "response", "messages", "chosen", "rejected", "role", "content", "system", "user", "assistant",
        "tool", "", " ", "\\n",
    ];

    private string _dir = "";
    private ITokenizer _bytes = null!;
    private ITokenizer _spm = null!;

    [OneTimeSetUp]
    public void LoadTokenizers()
    {
        _bytes = new ByteTokenizer();
        _spm = SentencePieceTokenizer.Load(Path.Combine(TestContext.CurrentContext.TestDirectory, "fixtures", "tokenizer", "tokenizer.model"));
    }

    [SetUp]
    public void SetUp() => _dir = Fixtures.TempDirectory();

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    // ---- seeds -------------------------------------------------------------------------------------------------

    private static readonly string[] Phrases =
    [
        "The lighthouse keeper counted ships.", "Café ☕ and crème brûlée", "emoji 😀 and 🐋", "tab\\tand\\nnewline",
        "quote \\\" and backslash \\\\", "\\u00e9t\\u00e9", "digits 0123456789", "  leading and trailing spaces  ",
        "Ünïcödé ∑ ∫ √", "a", "Call me Ishmael. Some years ago, never mind how long precisely, having little money.",
    ];

    private static string Phrase(Random rng) => Phrases[rng.Next(Phrases.Length)];

    private static List<string> LmLines(Random rng, int n)
    {
        var lines = new List<string>();
        for (int i = 0; i < n; i++)
        {
            string text = string.Join(" ", Enumerable.Range(0, 1 + rng.Next(4)).Select(_ => Phrase(rng)));
            lines.Add(rng.Next(4) == 0 ? $$$"""{"id": {{{i}}}, "text": "{{{text}}}", "meta": {"source": "fuzz", "tags": [1, 2]}}""" : $$"""{"text": "{{text}}"}""");
        }
        return lines;
    }

    private static List<string> SftLines(Random rng, int n)
    {
        var lines = new List<string>();
        for (int i = 0; i < n; i++)
        {
            lines.Add((i % 3) switch
            {
                0 => $$"""{"prompt": "{{Phrase(rng)}}", "response": "{{Phrase(rng)}}"}""",
                1 => $$"""{"messages": [{"role": "user", "content": "{{Phrase(rng)}}"}, {"role": "assistant", "content": "{{Phrase(rng)}}"}]}""",
                _ => $$"""{"messages": [{"role": "system", "content": "{{Phrase(rng)}}"}, {"role": "user", "content": "{{Phrase(rng)}}"}, {"role": "assistant", "content": "{{Phrase(rng)}}"}, {"role": "user", "content": "{{Phrase(rng)}}"}, {"role": "assistant", "content": "{{Phrase(rng)}}"}], "id": {{i}}}""",
            });
        }
        return lines;
    }

    private static List<string> DpoLines(Random rng, int n)
    {
        var lines = new List<string>();
        for (int i = 0; i < n; i++)
            lines.Add($$"""{"prompt": "{{Phrase(rng)}}", "chosen": "{{Phrase(rng)}}", "rejected": "{{Phrase(rng)}}"}""");
        return lines;
    }

    /// <summary>The file of <paramref name="lines"/>: LF, or CRLF with a BOM and blank lines.</summary>
    private static byte[] Compose(List<string> lines, bool crlfBomBlank)
    {
        if (!crlfBomBlank) return Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n");
        var withBlanks = new List<string>();
        for (int i = 0; i < lines.Count; i++)
        {
            withBlanks.Add(lines[i]);
            if (i % 5 == 4) withBlanks.Add(i % 2 == 0 ? "" : "  \t");
        }
        return [0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes(string.Join("\r\n", withBlanks))];
    }

    private sealed record JsonlSeed(string Name, DatasetFormat Format, byte[] Bytes, List<int> Boundaries);

    private static JsonlSeed[] JsonlSeeds()
    {
        var rng = new Random(7);
        var seeds = new List<JsonlSeed>();
        foreach (var (format, lines) in new[] { (DatasetFormat.Lm, LmLines(rng, 24)), (DatasetFormat.Sft, SftLines(rng, 24)), (DatasetFormat.Dpo, DpoLines(rng, 24)) })
        {
            for (int v = 0; v < 2; v++)
            {
                byte[] bytes = Compose(lines, v == 1);
                seeds.Add(new JsonlSeed($"{DatasetFormats.Name(format)}{(v == 1 ? "-crlf" : "")}", format, bytes, Mutator.Boundaries(bytes)));
            }
        }
        return seeds.ToArray();
    }

    // ---- JSON Lines ----------------------------------------------------------------------------------------------

    /// <summary>
    /// 12,000 mutated JSON Lines files a run, a third from each format's seeds: JSON structural edits of one or more
    /// lines (45 %: types swapped, extreme numbers, deep nesting, duplicate keys, lone surrogate escapes, long strings,
    /// removed and renamed fields), line edits (duplicated, deleted, swapped, joined and split lines, lines of another
    /// format, blank, whitespace-only, "null", "{}", deep or a BOM in the middle), byte edits and truncation at every
    /// boundary, and now and then a line longer than the reader's 1 MB chunk. Each file is opened with a given or
    /// detected format, with or without skipping bad lines and holding out part of it, through
    /// <see cref="JsonlDataset.Open"/> or <see cref="Datasets.Open"/>.
    /// <para>
    /// Allocation bound: 160 bytes per input byte plus 4 MB. The constant covers the reader's 1 MB read chunk, the
    /// 256 KB buffer of the LM token file, the SHA-256 state, the index and the batches (a few KB here). Per byte, the
    /// index pass costs about 20 for a long line (measured: the line buffer grown by doubling, the UTF-16 string, the
    /// rendered chat text, the token and loss lists with their growth), and the SentencePiece encoder of
    /// Microsoft.ML.Tokenizers adds about 70 per character of a long word (measured, linear up to 1M characters);
    /// held-out prompts and batches read and tokenize an example again.
    /// </para>
    /// </summary>
    [Test]
    public void MutatedJsonl()
    {
        var seeds = JsonlSeeds();
        var run = new FuzzRun("jsonl");
        string path = Path.Combine(_dir, "data.jsonl");
        foreach (int i in run.Iterations(12_000))
        {
            var m = run.NewMutator(i, Strings);
            var seed = seeds[i % seeds.Length];
            m.Log.Add($"seed {seed.Name}");
            byte[] input = MutateJsonl(seed, seeds, m, out bool huge);
            File.WriteAllBytes(path, input);

            var tokenizer = !huge && m.Chance(0.25) ? _spm : _bytes;
            int seq = m.Pick(new[] { 8, 16, 48, 128 });
            double heldOut = m.Pick(new[] { 0.0, 0.0, 0.2, 0.5 });
            bool skip = m.Chance(0.4);
            int batch = 1 + m.Rng.Next(3);
            DatasetFormat? format = m.Rng.Next(10) switch { < 4 => null, < 9 => seed.Format, _ => m.Pick(new[] { DatasetFormat.Lm, DatasetFormat.Sft, DatasetFormat.Dpo }) };
            bool viaDatasets = m.Chance(0.5);
            string objective = DatasetFormats.Name(format ?? seed.Format);
            m.Log.Add($"{(viaDatasets ? "Datasets.Open " + objective : "JsonlDataset.Open " + (format is null ? "detect" : DatasetFormats.Name(format.Value)))}, " +
                $"{tokenizer.Kind}, seq {seq}, batch {batch}, held out {heldOut}, skip bad lines {skip}");

            run.Check(i, m, input, ".jsonl", 160L * input.Length + (4 << 20), _dir, () =>
            {
                if (viaDatasets)
                {
                    using var data = Datasets.Open(path, objective, tokenizer, batch, seq, (ulong)i, heldOut, skip);
                    _ = data.Info.ToJson();
                    Drain(data.Train, tokenizer, 6);
                    if (data.HeldOut is not null) Drain(data.HeldOut, tokenizer, 2);
                    if (data.Info.Format == "sft") CheckPrompts(data.HeldOutPrompts(3), tokenizer);
                }
                else
                {
                    using var d = JsonlDataset.Open(path, tokenizer, seq, format, heldOut, skip);
                    Exercise(d, tokenizer, seq, (ulong)i);
                }
            });
        }
        run.Finish();
    }

    private static byte[] MutateJsonl(JsonlSeed seed, JsonlSeed[] all, Mutator m, out bool huge)
    {
        huge = false;
        byte[] data = seed.Bytes;
        if (m.Chance(0.03))
        {
            // A line longer than the reader's 1 MB chunk, so it straddles two reads.
            huge = true;
            var lines = Lines(data);
            int k = m.Rng.Next(lines.Count);
            string field = seed.Format == DatasetFormat.Lm ? "text" : "prompt";
            string rest = seed.Format switch { DatasetFormat.Sft => ", \"response\": \"r\"", DatasetFormat.Dpo => ", \"chosen\": \"c\", \"rejected\": \"r\"", _ => "" };
            lines[k] = Encoding.UTF8.GetBytes($"{{\"{field}\": \"{new string('w', (1 << 20) + m.Rng.Next(4096))}\"{rest}}}");
            m.Log.Add($"line {k + 1} made longer than 1 MB");
            return Join(lines);
        }
        int edits = 1 + m.Rng.Next(3);
        for (int e = 0; e < edits; e++)
        {
            int kind = m.Rng.Next(100);
            if (kind < 45)
            {
                var lines = Lines(data);
                var candidates = Enumerable.Range(0, lines.Count).Where(l => lines[l].AsSpan().IndexOf((byte)'{') >= 0).ToList();
                if (candidates.Count == 0) { data = m.Bytes(data, 2); continue; }
                int k = m.Pick(candidates);
                m.Log.Add($"line {k + 1}:");
                lines[k] = m.Json(lines[k], 2);
                data = Join(lines);
            }
            else if (kind < 70)
            {
                data = LineEdit(data, all, m);
            }
            else if (kind < 88)
            {
                data = m.Bytes(data, 3);
            }
            else
            {
                data = m.Truncate(data, Mutator.Boundaries(data));
            }
        }
        return data;
    }

    /// <summary>The lines of a file, without their '\n' (a '\r' stays on its line).</summary>
    private static List<byte[]> Lines(byte[] data)
    {
        var lines = new List<byte[]>();
        int start = 0;
        for (int i = 0; i <= data.Length; i++)
        {
            if (i == data.Length || data[i] == '\n')
            {
                lines.Add(data[start..i]);
                start = i + 1;
            }
        }
        return lines;
    }

    private static byte[] Join(List<byte[]> lines)
    {
        var r = new List<byte>();
        for (int i = 0; i < lines.Count; i++)
        {
            if (i > 0) r.Add((byte)'\n');
            r.AddRange(lines[i]);
        }
        return r.ToArray();
    }

    private static byte[] LineEdit(byte[] data, JsonlSeed[] all, Mutator m)
    {
        var lines = Lines(data);
        int k = m.Rng.Next(lines.Count);
        switch (m.Rng.Next(9))
        {
            case 0:
                lines.Insert(k, lines[k]);
                m.Log.Add($"line {k + 1} duplicated");
                break;
            case 1:
                lines.RemoveAt(k);
                m.Log.Add($"line {k + 1} deleted");
                break;
            case 2:
                int j = m.Rng.Next(lines.Count);
                (lines[k], lines[j]) = (lines[j], lines[k]);
                m.Log.Add($"lines {k + 1} and {j + 1} swapped");
                break;
            case 3:
                var other = m.Pick(all);
                var otherLines = Lines(other.Bytes);
                lines.Insert(k, otherLines[m.Rng.Next(otherLines.Count)]);
                m.Log.Add($"line of {other.Name} inserted at {k + 1}");
                break;
            case 4:
                byte[] odd = m.Pick(new[]
                {
                    ""u8.ToArray(), " \t "u8.ToArray(), "\r"u8.ToArray(), "null"u8.ToArray(), "{}"u8.ToArray(), "[]"u8.ToArray(),
                    "\"text\""u8.ToArray(), "{\"text\": \"a\"} {\"text\": \"b\"}"u8.ToArray(), "// comment"u8.ToArray(),
                    [0xEF, 0xBB, 0xBF, (byte)'{', (byte)'}'], Encoding.UTF8.GetBytes(new string('[', 100_000)),
                    Encoding.UTF8.GetBytes("{\"text\": " + new string('[', 65) + "\"x\"" + new string(']', 65) + "}"),
                    "{\"text\": \"a\", \"text\": \"b\"}"u8.ToArray(), "{\"te\\u0078t\": \"a\"}"u8.ToArray(), [0x00],
                });
                lines.Insert(k, odd);
                m.Log.Add($"odd line inserted at {k + 1}: {Encoding.UTF8.GetString(odd[..Math.Min(30, odd.Length)])}");
                break;
            case 5:
                if (k + 1 < lines.Count)
                {
                    lines[k] = [.. lines[k], .. lines[k + 1]];
                    lines.RemoveAt(k + 1);
                    m.Log.Add($"lines {k + 1} and {k + 2} joined");
                }
                break;
            case 6:
                int at = m.Rng.Next(lines[k].Length + 1);
                lines.Insert(k + 1, lines[k][at..]);
                lines[k] = lines[k][..at];
                m.Log.Add($"line {k + 1} split at {at}");
                break;
            case 7:
                int cr = m.Rng.Next(lines[k].Length + 1);
                lines[k] = Mutator.Splice(lines[k], cr, 0, "\r"u8);
                m.Log.Add($"CR inserted in line {k + 1} at {cr}");
                break;
            default:
                lines.Add(m.Chance(0.5) ? [] : lines[k]);
                m.Log.Add("line appended");
                break;
        }
        return Join(lines);
    }

    private static void Exercise(JsonlDataset d, ITokenizer tokenizer, int seq, ulong seed)
    {
        _ = (d.Sha256, d.Lines, d.Count, d.TrainCount, d.HeldOutCount, d.BadLines, d.BadLineMessages.Count, d.Truncated,
            d.SkippedTooLong, d.IndexBytes, d.TrainTokens, d.HeldOutTokens, d.FormatLine);
        if (d.Count <= 0 || d.TrainCount + d.HeldOutCount != d.Count)
            throw new InvalidOperationException($"inconsistent counts: {d.Count} = {d.TrainCount} + {d.HeldOutCount}");
        switch (d.Format)
        {
            case DatasetFormat.Sft:
                CheckPrompts(d.Prompts(DatasetSplit.Train, 3), tokenizer);
                CheckPrompts(d.HeldOutPrompts(3), tokenizer);
                if (d.TrainCount > 0) Drain(new SftBatcher(d, DatasetSplit.Train, 1, seed), tokenizer, Math.Min(8, d.TrainCount + 2));
                break;
            case DatasetFormat.Dpo:
                if (d.TrainCount > 0) Drain(new DpoBatcher(d, DatasetSplit.Train, 1, seed), tokenizer, Math.Min(8, d.TrainCount + 2));
                break;
            default:
                if (d.TrainTokens > seq) Drain(new DocumentLmBatcher(d, DatasetSplit.Train, 1, seq, seed), tokenizer, 8);
                break;
        }
    }

    private static void CheckPrompts(IReadOnlyList<HeldOutPrompt> prompts, ITokenizer tokenizer)
    {
        foreach (var p in prompts)
        {
            if (p.PromptIds.Any(id => (uint)id >= (uint)tokenizer.VocabSize))
                throw new InvalidOperationException("a prompt id lies outside the vocabulary");
            _ = tokenizer.Decode(p.PromptIds);
        }
    }

    /// <summary>Takes <paramref name="batches"/> batches and checks their ids and targets.</summary>
    private static void Drain(IBatchSource source, ITokenizer tokenizer, int batches)
    {
        for (int b = 0; b < batches; b++)
        {
            var m = source.Next();
            int vocab = tokenizer.VocabSize;
            for (int p = 0; p < m.Rows; p++)
            {
                if ((uint)m.Ids[p] >= (uint)vocab || (m.Targets[p] != -100 && (uint)m.Targets[p] >= (uint)vocab))
                    throw new InvalidOperationException($"batch {b} row {p}: id {m.Ids[p]} or target {m.Targets[p]} outside the vocabulary of {vocab}");
                if (m.Positions[p] < 0 || m.DocStart[p] < 0 || m.DocStart[p] > p % m.Seq)
                    throw new InvalidOperationException($"batch {b} row {p}: position {m.Positions[p]}, document start {m.DocStart[p]}");
            }
        }
        var position = source.Position;
        source.Position = position;
    }

    // ---- plain text --------------------------------------------------------------------------------------------

    /// <summary>
    /// 10,000 mutated plain-text files a run (from pseudo-English text and a unicode-rich text with CRLF line ends):
    /// byte edits that break UTF-8 (lone continuation bytes, overlong forms, encoded surrogates, code points past
    /// U+10FFFF), NUL and BOM insertions, duplicated chunks, truncation inside characters, and whitespace-only files,
    /// read by <see cref="TokenCorpus.FromTextFile"/> and <see cref="Datasets.Open"/> (lm objective).
    /// Allocation bound: 64 bytes per input byte plus 2 MB: the file's bytes (1×) and text (2×), then a token list of
    /// an int per byte with the bytes tokenizer (4×, up to 8× with List growth and its copies), copied into the training
    /// and held-out arrays (4×) and the line substrings (2×): about 30× in all.
    /// </summary>
    [Test]
    public void MutatedText()
    {
        string plain = TestData.WriteText(_dir, 3000, seed: 3, name: "seed.txt");
        byte[][] seeds =
        [
            File.ReadAllBytes(plain),
            Encoding.UTF8.GetBytes(string.Join("\r\n", Enumerable.Range(0, 40).Select(i => Phrases[i % Phrases.Length] + " ∑ 😀 é"))),
        ];
        var boundaries = seeds.Select(s => Mutator.Boundaries(s)).ToArray();
        var run = new FuzzRun("text");
        string path = Path.Combine(_dir, "data.txt");
        foreach (int i in run.Iterations(10_000))
        {
            var m = run.NewMutator(i);
            int s = m.Rng.Next(seeds.Length);
            m.Log.Add($"seed {s}");
            int kind = m.Rng.Next(100);
            byte[] input = kind switch
            {
                < 65 => m.Bytes(seeds[s], 4),
                < 90 => m.Truncate(seeds[s], boundaries[s]),
                < 95 => Encoding.UTF8.GetBytes(new string(' ', m.Rng.Next(0, 50)) + (m.Chance(0.5) ? "\n\r\t" : "")),
                _ => m.DuplicateChunk(m.DuplicateChunk(seeds[s], 0, seeds[s].Length), 0, seeds[s].Length),
            };
            File.WriteAllBytes(path, input);
            var tokenizer = m.Chance(0.25) ? _spm : _bytes;
            int seq = m.Pick(new[] { 8, 32, 128 });
            int batch = 1 + m.Rng.Next(3);
            double heldOut = m.Pick(new[] { 0.0, 0.05, 0.5 });
            bool viaDatasets = m.Chance(0.6);
            m.Log.Add($"{(viaDatasets ? "Datasets.Open" : "TokenCorpus")}, {tokenizer.Kind}, seq {seq}, batch {batch}, held out {heldOut}");
            run.Check(i, m, input, ".txt", 64L * input.Length + (2 << 20), path, () =>
            {
                if (viaDatasets)
                {
                    using var data = Datasets.Open(path, "lm", tokenizer, batch, seq, (ulong)i, heldOut, false);
                    Drain(data.Train, tokenizer, 4);
                    if (data.HeldOut is not null) Drain(data.HeldOut, tokenizer, 2);
                }
                else
                {
                    var corpus = TokenCorpus.FromTextFile(path, tokenizer, heldOut);
                    if (corpus.Train.Concat(corpus.HeldOut).Any(id => (uint)id >= (uint)tokenizer.VocabSize))
                        throw new InvalidOperationException("a token lies outside the vocabulary");
                }
            });
        }
        run.Finish();
    }

    /// <summary>The gzip file of <paramref name="text"/> (one member).</summary>
    private static byte[] Gzip(byte[] text, System.IO.Compression.CompressionLevel level)
    {
        var output = new MemoryStream();
        using (var gz = new System.IO.Compression.GZipStream(output, level, leaveOpen: true)) gz.Write(text);
        return output.ToArray();
    }

    /// <summary>What a gzip input decompresses to as far as GZipStream gets (at most 64 MB), for the allocation bound.</summary>
    private static long DecompressedLength(byte[] input)
    {
        long total = 0;
        try
        {
            using var gz = new System.IO.Compression.GZipStream(new MemoryStream(input), System.IO.Compression.CompressionMode.Decompress);
            var buffer = new byte[1 << 16];
            int n;
            while ((n = gz.Read(buffer)) > 0 && total < (64 << 20)) total += n;
        }
        catch (InvalidDataException)
        {
        }
        return total;
    }

    /// <summary>
    /// 4,000 mutated gzip-compressed text files a run (.txt.gz, read by <see cref="TokenCorpus.FromTextFile"/> and
    /// <see cref="Datasets.Open"/>): the plain-text seeds compressed at two levels and as a file of two members, with byte
    /// edits anywhere or in the 10-byte header (flags, method, extra-field lengths), truncation at every boundary (in
    /// the header, the deflate data, the 8-byte trailer, between members), garbage or another member appended. A strict
    /// prefix of a seed (other than its first whole member) must be rejected: GZipStream itself returns what it decoded
    /// of a stream cut short. Allocation bound: 64 bytes per decompressed byte (as for plain text) plus 2 MB; the input
    /// itself is at most 1/1032 of that, deflate's largest expansion.
    /// </summary>
    [Test]
    public void MutatedGzipText()
    {
        byte[] plain = File.ReadAllBytes(TestData.WriteText(_dir, 3000, seed: 5, name: "seed.txt"));
        byte[] unicode = Encoding.UTF8.GetBytes(string.Join("\r\n", Enumerable.Range(0, 40).Select(i => Phrases[i % Phrases.Length] + " ∑ 😀 é")));
        byte[] first = Gzip(plain, System.IO.Compression.CompressionLevel.Optimal);
        byte[][] seeds = [first, Gzip(unicode, System.IO.Compression.CompressionLevel.Fastest), [.. first, .. Gzip(unicode, System.IO.Compression.CompressionLevel.Optimal)]];
        var boundaries = seeds.Select(s =>
        {
            var b = Enumerable.Range(0, 24).ToList();                                 // the header and the first deflate bytes
            b.AddRange(Enumerable.Range(s.Length - 9, 9));                            // the trailer
            b.AddRange([s.Length / 3, s.Length / 2, first.Length - 1, first.Length, first.Length + 1]);
            return b.Where(x => x >= 0 && x <= s.Length).ToList();
        }).ToArray();
        var run = new FuzzRun("text-gz");
        string path = Path.Combine(_dir, "data.txt.gz");
        foreach (int i in run.Iterations(4000))
        {
            var m = run.NewMutator(i);
            int s = m.Rng.Next(seeds.Length);
            m.Log.Add($"seed {s}");
            byte[] seed = seeds[s];
            int kind = m.Rng.Next(100);
            byte[] input = kind switch
            {
                < 35 => m.Bytes(seed, 3),
                < 50 => m.Bytes(seed, 2, 0, 10),
                < 85 => m.Truncate(seed, boundaries[s]),
                < 90 => m.DuplicateChunk(seed, 0, seed.Length),
                < 95 => [.. seed, .. m.Pick(new[] { new byte[] { 0 }, [0x1F, 0x8B], [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF], Encoding.UTF8.GetBytes("garbage") })],
                _ => [.. seed, .. seeds[m.Rng.Next(2)]],
            };
            if (kind >= 90) m.Log.Add($"appended {input.Length - seed.Length} bytes");
            bool truncated = input.Length < seed.Length && seed.AsSpan().StartsWith(input) && !(s == 2 && input.Length == first.Length);
            File.WriteAllBytes(path, input);
            var tokenizer = m.Chance(0.25) ? _spm : _bytes;
            bool viaDatasets = m.Chance(0.5);
            m.Log.Add($"{(viaDatasets ? "Datasets.Open" : "TokenCorpus")}, {tokenizer.Kind}");
            run.Check(i, m, input, ".txt.gz", 64L * DecompressedLength(input) + (2 << 20), path, () =>
            {
                if (viaDatasets)
                {
                    using var data = Datasets.Open(path, "lm", tokenizer, 1, 32, (ulong)i, 0.05, false);
                    Drain(data.Train, tokenizer, 2);
                }
                else
                {
                    _ = TokenCorpus.FromTextFile(path, tokenizer, 0.05);
                }
                if (truncated) throw new InvalidOperationException("a truncated gzip file was accepted");
            });
        }
        run.Finish();
    }
}
