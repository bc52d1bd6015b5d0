using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

[TestFixture]
public sealed class DatasetTests
{
    private const int Bos = ByteTokenizer.BosTokenId, Eos = ByteTokenizer.EosTokenId, Ignore = -100;

    /// <summary>Byte tokens, except that '~' tokenises to nothing.</summary>
    private sealed class TildeDroppingTokenizer : ITokenizer
    {
        private readonly ByteTokenizer _inner = new();
        public string Kind => "bytes-without-tilde";
        public int VocabSize => _inner.VocabSize;
        public int? BosId => _inner.BosId;
        public int? EosId => _inner.EosId;
        public void Encode(string text, List<int> output) => _inner.Encode(text.Replace("~", ""), output);
        public string Decode(ReadOnlySpan<int> ids) => _inner.Decode(ids);
        public void Save(string directory) => _inner.Save(directory);
    }

    private static readonly ByteTokenizer Bytes = new();

    private static string Line(object o) => JsonSerializer.Serialize(o);

    private static string Pair(string prompt, string response) => Line(new { prompt, response });

    private static string Pref(string prompt, string chosen, string rejected) => Line(new { prompt, chosen, rejected });

    private static string Write(IEnumerable<string> lines, string name = "data.jsonl")
    {
        string path = Path.Combine(Fixtures.TempDirectory(), name);
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    private static int[] Utf8(string s) => Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();

    private static string Text(IEnumerable<int> ids) => Bytes.Decode(ids.Where(i => i < 256).ToArray());

    private static List<string> PairLines(int n, int seed = 1)
    {
        var rng = new Random(seed);
        var lines = new List<string>();
        for (int i = 0; i < n; i++)
            lines.Add(Pair($"question {i}: {new string('q', rng.Next(1, 12))}", $"answer {i} {new string('r', rng.Next(1, 12))}"));
        return lines;
    }

    /// <summary>Segment ids of a row in order of appearance (padding left out).</summary>
    private static List<int> Segments(ModelInputs m, int row)
    {
        var r = new List<int>();
        for (int t = 0; t < m.Seq; t++)
        {
            int s = m.Segment[row * m.Seq + t];
            if (s >= 0 && (r.Count == 0 || r[^1] != s)) r.Add(s);
        }
        return r;
    }

    // ---- SFT packing -----------------------------------------------------------------------------------------------

    [Test]
    public void SftPackingIsExactOnAHandCheckedExample()
    {
        // The held-out half keeps file order: the two examples below, packed into one sequence of 64.
        string path = Write([Pair("x", "y"), Pair("z", "w"), Pair("hi", "yo"), Pair("a", "b")]);
        using var data = JsonlDataset.Open(path, Bytes, 64, DatasetFormat.Sft, heldOutFraction: 0.5);
        Assert.That((data.TrainCount, data.HeldOutCount), Is.EqualTo((2, 2)));
        var batcher = new SftBatcher(data, DatasetSplit.HeldOut, 1, 7);
        var m = batcher.Next();

        int[] a = [Bos, .. Utf8("<|user|>\nhi\n<|assistant|>\n"), .. Utf8("yo"), Eos];  // 30 tokens, loss on y, o, EOS
        int[] b = [Bos, .. Utf8("<|user|>\na\n<|assistant|>\n"), .. Utf8("b"), Eos];    // 28 tokens, loss on b, EOS
        Assert.That((a.Length, b.Length), Is.EqualTo((30, 28)));
        var ids = new List<int>(); var targets = new List<int>(); var pos = new List<int>(); var doc = new List<int>(); var seg = new List<int>();
        void Add(int[] ex, int responseFrom, int start, int segment)
        {
            for (int i = 0; i < ex.Length; i++)
            {
                ids.Add(ex[i]);
                targets.Add(i + 1 < ex.Length && i + 1 >= responseFrom ? ex[i + 1] : Ignore);
                pos.Add(i); doc.Add(start); seg.Add(segment);
            }
        }
        Add(a, 27, 0, 0);
        Add(b, 26, 30, 1);
        for (int t = 58; t < 64; t++) { ids.Add(Eos); targets.Add(Ignore); pos.Add(0); doc.Add(t); seg.Add(-1); }

        Assert.That(m.Ids, Is.EqualTo(ids));
        Assert.That(m.Targets, Is.EqualTo(targets));
        Assert.That(m.Positions, Is.EqualTo(pos));
        Assert.That(m.DocStart, Is.EqualTo(doc));
        Assert.That(m.Segment, Is.EqualTo(seg));
        Assert.That(m.RowScale, Is.EqualTo(targets.Select(t => t == Ignore ? 0f : 1f)));
        Assert.That(m.Targets[26], Is.EqualTo('y'), "the assistant header's newline predicts the first response token");
        Assert.That(m.Targets[29], Is.EqualTo(Ignore), "an example's EOS predicts nothing");
        Assert.That(m.CountTargets(), Is.EqualTo(5));
        Assert.That(batcher.Position, Is.EqualTo(new DataPosition(1, 0)));
        Assert.That(batcher.Next().Ids, Is.EqualTo(ids), "the held-out split repeats in file order");
    }

    [Test]
    public void SftTargetsStayInsideTheirExampleAndCoverExactlyTheResponses()
    {
        var lines = PairLines(60);
        var responses = lines.Select(l => JsonDocument.Parse(l).RootElement.GetProperty("response").GetString()!).ToHashSet();
        using var data = JsonlDataset.Open(Write(lines), Bytes, 160, DatasetFormat.Sft);
        var batcher = new SftBatcher(data, DatasetSplit.Train, 3, 11);
        int packed = 0;
        for (int step = 0; step < 20; step++)
        {
            var m = batcher.Next();
            for (int row = 0; row < m.Batch; row++)
            {
                var segs = Segments(m, row);
                packed += segs.Count > 1 ? 1 : 0;
                foreach (int s in segs)
                {
                    var at = Enumerable.Range(row * m.Seq, m.Seq).Where(p => m.Segment[p] == s).ToArray();
                    Assert.That(at, Is.EqualTo(Enumerable.Range(at[0], at.Length)), "an example is contiguous");
                    Assert.That(at.All(p => m.DocStart[p] == at[0] - row * m.Seq), "DocStart is the example's start");
                    Assert.That(at.Select(p => m.Positions[p]), Is.EqualTo(Enumerable.Range(0, at.Length)));
                    var trained = at.Where(p => m.Targets[p] != Ignore).ToArray();
                    foreach (int p in trained)
                    {
                        Assert.That(m.Segment[p + 1], Is.EqualTo(s), "no target crosses an example boundary");
                        Assert.That(m.Targets[p], Is.EqualTo(m.Ids[p + 1]));
                        Assert.That(m.RowScale[p], Is.EqualTo(1f));
                    }
                    var targetIds = trained.Select(p => m.Targets[p]).ToArray();
                    Assert.That(targetIds[^1], Is.EqualTo(Eos));
                    Assert.That(responses, Does.Contain(Text(targetIds)), "the loss covers exactly the response and its EOS");
                    Assert.That(Text(at.Select(p => m.Ids[p])), Does.EndWith("<|assistant|>\n" + Text(targetIds)));
                }
                for (int t = 0; t < m.Seq; t++)
                {
                    int p = row * m.Seq + t;
                    if (m.Segment[p] >= 0) continue;
                    Assert.That((m.Targets[p], m.RowScale[p], m.DocStart[p], m.Positions[p], m.Ids[p]), Is.EqualTo((Ignore, 0f, t, 0, Eos)), "padding");
                }
            }
            var all = m.Segment.Where(s => s >= 0).Distinct().ToArray();
            Assert.That(all, Is.EqualTo(Enumerable.Range(0, all.Length)), "segment ids are unique within the batch");
        }
        Assert.That(packed, Is.GreaterThan(0), "short examples share sequences");
    }

    [Test]
    public void MessagesTrainOnEveryAssistantTurnOnly()
    {
        string line = Line(new
        {
            messages = new[]
            {
                new { role = "system", content = "be brief" },
                new { role = "user", content = "hi" },
                new { role = "assistant", content = "A1" },
                new { role = "user", content = "more" },
                new { role = "assistant", content = "A2" },
                new { role = "user", content = "dropped" },
            },
        });
        using var data = JsonlDataset.Open(Write([line, line]), Bytes, 200, DatasetFormat.Sft);
        var m = new SftBatcher(data, DatasetSplit.Train, 1, 1).Next();
        int[] expect = [Bos, .. Utf8("<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n"), .. Utf8("A1"), Eos,
            .. Utf8("<|user|>\nmore\n<|assistant|>\n"), .. Utf8("A2"), Eos];
        Assert.That(m.Ids.Take(expect.Length), Is.EqualTo(expect), "turns after the last assistant turn are left out");
        var targets = m.Targets.Take(expect.Length).Where(t => t != Ignore).ToArray();
        Assert.That(targets, Is.EqualTo((int[])[.. Utf8("A1"), Eos, .. Utf8("A2"), Eos]));
        Assert.That(m.Segment[expect.Length], Is.EqualTo(1), "a second copy of the example follows");
    }

    [Test]
    public void LongExamplesAreTruncatedByTheDocumentedRule()
    {
        Assert.That(Truncation.Keep(10, 20, 100), Is.EqualTo((10, 20)), "fits");
        Assert.That(Truncation.Keep(10, 200, 100), Is.EqualTo((10, 90)), "short prompt kept whole");
        Assert.That(Truncation.Keep(300, 20, 100), Is.EqualTo((80, 20)), "short response kept whole");
        Assert.That(Truncation.Keep(300, 200, 100), Is.EqualTo((50, 50)), "both long: half each");

        string prompt = new('p', 100), response = new('r', 100);
        var lines = new List<string> { Pair(prompt, response) };
        lines.AddRange(PairLines(3));
        using var data = JsonlDataset.Open(Write(lines), Bytes, 64, DatasetFormat.Sft, heldOutFraction: 0.75);
        Assert.That(data.Truncated, Is.EqualTo(1));
        Assert.That(data.SkippedTooLong, Is.Zero);
        // The held-out part is the last three; read the long one as the only training example.
        var m = new SftBatcher(data, DatasetSplit.Train, 1, 3).Next();
        int[] full = [Bos, .. Utf8($"<|user|>\n{prompt}\n<|assistant|>\n")];         // 125 prompt tokens, 101 response tokens
        int[] expect = [.. full[^32..], .. Utf8(response[..32])];
        Assert.That(m.Ids, Is.EqualTo(expect), "the prompt's last 32 tokens and the response's first 32");
        Assert.That(m.Targets.Count(t => t != Ignore), Is.EqualTo(32));
        Assert.That(m.Positions[0], Is.Zero);
    }

    [Test]
    public void ExamplesLeftWithNothingToTrainAreSkippedAndCounted()
    {
        var e = Assert.Throws<InvalidInputException>(() => JsonlDataset.Open(Write([Pair("a", "b"), Pair("c", "d")]), Bytes, 1, DatasetFormat.Sft));
        Assert.That(e!.Message, Does.Contain("no valid example").And.Contain("2 examples left no trained token"));
    }

    // ---- DPO -------------------------------------------------------------------------------------------------------

    [Test]
    public void DpoRowsPairUpChosenAndRejected()
    {
        var rng = new Random(5);
        var lines = Enumerable.Range(0, 40).Select(i => Pref($"p{i} {new string('x', rng.Next(1, 10))}", $"good {i}{new string('g', rng.Next(0, 20))}", $"bad {i}{new string('b', rng.Next(0, 20))}")).ToList();
        var byPrompt = lines.Select(l => JsonDocument.Parse(l).RootElement).ToDictionary(
            r => r.GetProperty("prompt").GetString()!, r => (r.GetProperty("chosen").GetString()!, r.GetProperty("rejected").GetString()!));
        using var data = JsonlDataset.Open(Write(lines), Bytes, 128, DatasetFormat.Dpo);
        const int pairs = 3;
        var batcher = new DpoBatcher(data, DatasetSplit.Train, pairs, 2);
        Assert.That((batcher.Batch, batcher.Pairs), Is.EqualTo((6, 3)));
        int packed = 0;
        for (int step = 0; step < 10; step++)
        {
            var m = batcher.Next();
            Assert.That((m.Batch, m.Seq), Is.EqualTo((2 * pairs, 128)));
            var seen = new List<int>();
            for (int r = 0; r < pairs; r++)
            {
                var c = Segments(m, r);
                Assert.That(Segments(m, pairs + r), Is.EqualTo(c), "row r and row pairs + r hold the same pairs in the same order");
                packed += c.Count > 1 ? 1 : 0;
                seen.AddRange(c);
                foreach (int s in c)
                {
                    string Side(int row, out string promptText)
                    {
                        var at = Enumerable.Range(row * m.Seq, m.Seq).Where(p => m.Segment[p] == s).ToArray();
                        Assert.That(at.Select(p => m.Positions[p]), Is.EqualTo(Enumerable.Range(0, at.Length)));
                        Assert.That(at.All(p => m.DocStart[p] == at[0] - row * m.Seq));
                        var trained = at.Where(p => m.Targets[p] != Ignore).ToArray();
                        Assert.That(trained.All(p => m.Segment[p + 1] == s && m.Targets[p] == m.Ids[p + 1] && m.RowScale[p] == 1f));
                        Assert.That(m.Targets[trained[^1]], Is.EqualTo(Eos));
                        var all = Text(at.Select(p => m.Ids[p]));
                        string response = Text(trained.Select(p => m.Targets[p]));
                        promptText = all[..^response.Length];
                        return response;
                    }
                    string chosen = Side(r, out string pc), rejected = Side(pairs + r, out string pr);
                    Assert.That(pr, Is.EqualTo(pc), "chosen and rejected share the prompt");
                    Assert.That(pc, Does.StartWith("<|user|>\n").And.EndWith("\n<|assistant|>\n"));
                    string prompt = pc["<|user|>\n".Length..^"\n<|assistant|>\n".Length];
                    Assert.That((chosen, rejected), Is.EqualTo(byPrompt[prompt]));
                }
            }
            Assert.That(seen, Is.EqualTo(Enumerable.Range(0, seen.Count)), "pair ids are unique in the batch");
        }
        Assert.That(packed, Is.GreaterThan(0), "several pairs share a row");
    }

    [Test]
    public void DpoBatchIsExactOnAHandCheckedPair()
    {
        using var data = JsonlDataset.Open(Write([Pref("q", "yes", "no"), Pref("q", "yes", "no")]), Bytes, 40, DatasetFormat.Dpo);
        var m = new DpoBatcher(data, DatasetSplit.Train, 1, 1).Next();
        int[] prompt = [Bos, .. Utf8("<|user|>\nq\n<|assistant|>\n")];   // 26 tokens
        int[] chosen = [.. prompt, .. Utf8("yes"), Eos], rejected = [.. prompt, .. Utf8("no"), Eos];
        Assert.That(m.Ids.Take(30), Is.EqualTo(chosen));
        Assert.That(m.Ids.Skip(40).Take(29), Is.EqualTo(rejected));
        Assert.That(m.Targets.Take(30).Where(t => t != Ignore), Is.EqualTo((int[])[.. Utf8("yes"), Eos]));
        Assert.That(m.Targets.Skip(40).Take(40).Where(t => t != Ignore), Is.EqualTo((int[])[.. Utf8("no"), Eos]));
        Assert.That(m.Targets[25], Is.EqualTo('y'));
        Assert.That(m.Segment.Take(30).All(s => s == 0) && m.Segment.Skip(40).Take(29).All(s => s == 0));
        Assert.That(m.Segment.Skip(30).Take(10).All(s => s == -1) && m.Segment.Skip(69).All(s => s == -1), "the second pair does not fit: padding");
        Assert.That(m.DocStart[35], Is.EqualTo(35));
        Assert.That(m.DocStart[40 + 35], Is.EqualTo(35));
    }

    // ---- LM JSON Lines ---------------------------------------------------------------------------------------------

    [Test]
    public void LmDocumentsMarkTheirBoundariesInsideWindows()
    {
        // The held-out half (file order): docs "ab", "cde", "fg" → [B a b E][B c d e E][B f g E], 13 tokens, 3 windows of 4.
        var lines = new[] { "one", "two", "three", "ab", "cde", "fg" }.Select(t => Line(new { text = t }));
        using var data = JsonlDataset.Open(Write(lines), Bytes, 4, DatasetFormat.Lm, heldOutFraction: 0.5);
        Assert.That(data.HeldOutTokens, Is.EqualTo(13));
        var b = new DocumentLmBatcher(data, DatasetSplit.HeldOut, 3, 4, 1);
        Assert.That(b.Windows, Is.EqualTo(3));
        var m = b.Next();
        Assert.That(m.Ids, Is.EqualTo((int[])[Bos, 'a', 'b', Eos, Bos, 'c', 'd', 'e', Eos, Bos, 'f', 'g']));
        Assert.That(m.Targets, Is.EqualTo((int[])['a', 'b', Eos, Ignore, 'c', 'd', 'e', Eos, Ignore, 'f', 'g', Eos]));
        Assert.That(m.DocStart, Is.EqualTo((int[])[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]));
        Assert.That(m.Positions, Is.EqualTo((int[])[0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 2]));
        Assert.That(m.Segment, Is.EqualTo((int[])[0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3]));
        Assert.That(m.RowScale, Is.EqualTo(m.Targets.Select(t => t == Ignore ? 0f : 1f)));
    }

    [Test]
    public void OpenPicksTheLmReaderByExtension()
    {
        string dir = Fixtures.TempDirectory();
        string txt = TestData.WriteText(dir, 4000);
        using (var t = Datasets.Open(txt, "lm", Bytes, 2, 32, 1, 0.1, false))
        {
            Assert.That(t.Train, Is.InstanceOf<LmBatcher>());
            Assert.That(t.HeldOut, Is.InstanceOf<LmBatcher>());
            Assert.That(t.Info.Format, Is.EqualTo("text"));
            Assert.That(t.Info.Sha256, Is.EqualTo(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(txt)))));
        }
        var docs = File.ReadAllLines(txt).Where(l => l.Length > 0).Select(l => Line(new { text = l })).ToList();
        string jsonl = Write(docs, "docs.jsonl");
        using var d = Datasets.Open(jsonl, "lm", Bytes, 2, 32, 1, 0.2, false);
        Assert.That(d.Train, Is.InstanceOf<DocumentLmBatcher>());
        Assert.That(d.Info.Format, Is.EqualTo("lm"));
        Assert.That(d.Info.TrainExamples + d.Info.HeldOutExamples, Is.EqualTo(docs.Count));
        Assert.That(d.Info.TrainTokens + d.Info.HeldOutTokens, Is.EqualTo(docs.Sum(l => JsonDocument.Parse(l).RootElement.GetProperty("text").GetString()!.Length + 2)));
        var m = d.Train.Next();
        for (int p = 0; p + 1 < m.Rows; p++)
            if (m.Targets[p] != Ignore) Assert.That(m.DocStart[p + 1] == m.DocStart[p] || p % 32 == 31, "no target crosses into another document");
    }

    // ---- order, resumption, splits ---------------------------------------------------------------------------------

    [Test]
    public void ShufflingIsDeterministicAndAPositionDeterminesWhatFollows()
    {
        string sft = Write(PairLines(50), "sft.jsonl");
        string dpo = Write(Enumerable.Range(0, 50).Select(i => Pref($"p{i}", $"c{i}", $"r{i}")), "dpo.jsonl");
        string lm = Write(Enumerable.Range(0, 50).Select(i => Line(new { text = $"document number {i} " + new string('z', i % 7) })), "lm.jsonl");
        foreach (var objective in new[] { "sft", "dpo", "lm" })
        {
            string path = objective switch { "sft" => sft, "dpo" => dpo, _ => lm };
            using var a = Datasets.Open(path, objective, Bytes, 2, 48, 9, 0, false);
            using var same = Datasets.Open(path, objective, Bytes, 2, 48, 9, 0, false);
            using var other = Datasets.Open(path, objective, Bytes, 2, 48, 10, 0, false);
            Assert.That(same.Train.Next().Ids, Is.EqualTo(a.Train.Next().Ids.ToArray()), objective);
            a.Train.Position = new DataPosition(0, 0);
            for (int i = 0; i < 7; i++) a.Train.Next();
            var pos = a.Train.Position;
            var expect = a.Train.Next();
            var (ids, targets, docs, segs) = (expect.Ids.ToArray(), expect.Targets.ToArray(), expect.DocStart.ToArray(), expect.Segment.ToArray());
            using var resumed = Datasets.Open(path, objective, Bytes, 2, 48, 9, 0, false);
            resumed.Train.Position = pos;
            var got = resumed.Train.Next();
            Assert.That(got.Ids, Is.EqualTo(ids), $"{objective}: resumed at {pos}");
            Assert.That(got.Targets, Is.EqualTo(targets), objective);
            Assert.That(got.DocStart, Is.EqualTo(docs), objective);
            Assert.That(got.Segment, Is.EqualTo(segs), objective);
            other.Train.Position = pos;
            Assert.That(other.Train.Next().Ids, Is.Not.EqualTo(ids), $"{objective}: another seed, another order");
        }
    }

    [Test]
    public void AnEpochVisitsEveryTrainingExample()
    {
        var lines = PairLines(37);
        using var data = JsonlDataset.Open(Write(lines), Bytes, 128, DatasetFormat.Sft);
        var b = new SftBatcher(data, DatasetSplit.Train, 2, 4);
        var seen = new List<string>();
        while (b.Position.Epoch == 0)
        {
            var m = b.Next();
            for (int s = 0; s <= m.Segment.Max(); s++)
                seen.Add(Text(Enumerable.Range(0, m.Rows).Where(p => m.Segment[p] == s && m.Targets[p] != Ignore).Select(p => m.Targets[p])));
        }
        var responses = lines.Select(l => JsonDocument.Parse(l).RootElement.GetProperty("response").GetString()).ToList();
        Assert.That(seen.Take(37), Is.EquivalentTo(responses));
        Assert.That(seen.Take(37), Is.Not.EqualTo(responses), "shuffled");
    }

    [Test]
    public void HeldOutIsTheFileTailInFileOrder()
    {
        var lines = PairLines(20);
        string path = Write(lines);
        using var t = Datasets.Open(path, "sft", Bytes, 1, 128, 3, 0.25, false);
        Assert.That((t.Info.TrainExamples, t.Info.HeldOutExamples), Is.EqualTo((15, 5)));
        var responses = lines.Select(l => JsonDocument.Parse(l).RootElement.GetProperty("response").GetString()!).ToList();
        string FirstResponse(ModelInputs m) => Text(Enumerable.Range(0, m.Seq).Where(p => m.Segment[p] == 0 && m.Targets[p] != Ignore).Select(p => m.Targets[p]));
        Assert.That(FirstResponse(t.HeldOut!.Next()), Is.EqualTo(responses[15]));
        Assert.That(FirstResponse(t.HeldOut.Next()), Is.Not.EqualTo(responses[15]));
        t.HeldOut.Position = new DataPosition(0, 0);
        Assert.That(FirstResponse(t.HeldOut.Next()), Is.EqualTo(responses[15]), "evaluation restarts at the same place");
        var trainSeen = new HashSet<string>();
        for (int i = 0; i < 40; i++)
        {
            var m = t.Train.Next();
            for (int s = 0; s <= m.Segment.Max(); s++)
                trainSeen.Add(Text(Enumerable.Range(0, m.Rows).Where(p => m.Segment[p] == s && m.Targets[p] != Ignore).Select(p => m.Targets[p])));
        }
        Assert.That(trainSeen, Is.EquivalentTo(responses.Take(15)), "training never sees a held-out example");

        var prompts = t.HeldOutPrompts(3);
        Assert.That(prompts, Has.Count.EqualTo(3));
        var first = JsonDocument.Parse(lines[15]).RootElement;
        Assert.That(prompts[0].Prompt, Is.EqualTo($"<|user|>\n{first.GetProperty("prompt").GetString()}\n<|assistant|>\n"));
        Assert.That(prompts[0].Answer, Is.EqualTo(responses[15]));
        Assert.That(prompts[0].PromptIds, Is.EqualTo((int[])[Bos, .. Utf8(prompts[0].Prompt)]));
        Assert.That(t.HeldOutPrompts(100), Has.Count.EqualTo(5));

        using var small = Datasets.Open(path, "sft", Bytes, 6, 64, 3, 0.25, false);
        Assert.That(small.HeldOut, Is.Null, "five held-out examples cannot fill a batch of six");
        using var none = Datasets.Open(path, "sft", Bytes, 1, 64, 3, 0, false);
        Assert.That(none.HeldOut, Is.Null);
    }

    [Test]
    public void HeldOutPromptsOfConversationsEndBeforeTheLastAnswer()
    {
        string conv = Line(new
        {
            messages = new[]
            {
                new { role = "user", content = "2+2?" },
                new { role = "assistant", content = "4" },
                new { role = "user", content = "and 3+3?" },
                new { role = "assistant", content = "6" },
            },
        });
        using var data = JsonlDataset.Open(Write([Pair("a", "b"), conv]), Bytes, 64, DatasetFormat.Sft, heldOutFraction: 0.5);
        var p = data.HeldOutPrompts(5).Single();
        Assert.That(p.Prompt, Is.EqualTo("<|user|>\n2+2?\n<|assistant|>\n4<|user|>\nand 3+3?\n<|assistant|>\n"));
        Assert.That(p.Answer, Is.EqualTo("6"));
        Assert.That(p.PromptIds, Is.EqualTo((int[])[Bos, .. Utf8("<|user|>\n2+2?\n<|assistant|>\n"), .. Utf8("4"), Eos, .. Utf8("<|user|>\nand 3+3?\n<|assistant|>\n")]));
    }

    // ---- streaming -------------------------------------------------------------------------------------------------

    [Test]
    public void AFileOfSomeMegabytesIsIndexedAndReadBySeeking()
    {
        const int n = 30000;
        var lines = PairLines(n, seed: 3);
        lines.Insert(100, "");
        lines.Insert(7, Pair("a line longer than the read buffer", new string('L', 2_500_000)));
        string path = Write(lines);
        long size = new FileInfo(path).Length;
        Assert.That(size, Is.GreaterThan(4_000_000));
        using var t = Datasets.Open(path, "sft", Bytes, 4, 128, 1, 0.01, false);
        var data = t.Jsonl!;
        Assert.That(data.Count, Is.EqualTo(n + 1));
        Assert.That(data.IndexBytes, Is.EqualTo(8L * (n + 1)), "the index holds 8 bytes per example, not the file");
        Assert.That(data.Lines, Is.EqualTo(n + 2));
        Assert.That(data.Truncated, Is.EqualTo(1));
        Assert.That(t.Info.Sha256, Is.EqualTo(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)))));
        for (int i = 0; i < 50; i++) Assert.That(t.Train.Next().CountTargets(), Is.GreaterThan(0));
        var longOne = new SftBatcher(data, DatasetSplit.Train, 1, 1);
        for (long i = 0; i < longOne.Examples; i++)
        {
            longOne.Position = new DataPosition(0, i);
            var row = longOne.Next();
            if (row.Ids[^1] == 'L' && Text(row.Ids).StartsWith("<|user|>\na line longer"))
            {
                Assert.That(row.Ids.Count(id => id == 'L'), Is.EqualTo(128 - 59), "its whole prompt (59 tokens) and the start of its response");
                break;
            }
            Assert.That(i + 1, Is.LessThan(longOne.Examples), "the long example is read back");
        }

        // Examples are read from the file when batched: change one in place and the next read sees it.
        string before = lines[^1], after = before.Replace("answer", "ANSWER");
        Assert.That(after.Length, Is.EqualTo(before.Length));
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            f.Seek(size - 1 - Encoding.UTF8.GetByteCount(before), SeekOrigin.Begin);
            f.Write(Encoding.UTF8.GetBytes(after));
        }
        var held = t.HeldOut!;
        held.Position = new DataPosition(0, data.HeldOutCount - 1);
        var m = held.Next();
        string last = Text(Enumerable.Range(0, m.Seq).Where(p => m.Segment[p] == 0 && m.Targets[p] != Ignore).Select(p => m.Targets[p]));
        Assert.That(last, Does.StartWith("ANSWER"));
    }

    [Test]
    public void CrLfLineEndsAndAByteOrderMarkAreAccepted()
    {
        string path = Path.Combine(Fixtures.TempDirectory(), "crlf.jsonl");
        File.WriteAllBytes(path, [0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes(Pair("a", "b") + "\r\n\r\n" + Pair("c", "d") + "\r\n" + Pair("e", "f"))]);
        using var data = JsonlDataset.Open(path, Bytes, 64);
        Assert.That((data.Format, data.Count, data.Lines, data.FormatLine), Is.EqualTo((DatasetFormat.Sft, 3, 4L, (long?)1)));
        var m = new SftBatcher(data, DatasetSplit.Train, 1, 1).Next();
        Assert.That(m.Ids[0], Is.EqualTo(Bos));
        Assert.That(m.Ids.Count(i => i == '\r'), Is.Zero);
    }

    // ---- bad input -------------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> BadLines()
    {
        TestCaseData Case(string objective, string line, string problem) => new TestCaseData(objective, line, problem).SetArgDisplayNames(objective, problem);
        yield return Case("sft", "{\"prompt\": \"a\", \"response\": \"b\"", "malformed JSON");
        yield return Case("sft", "[1, 2]", "must hold one JSON object, found an array");
        yield return Case("sft", "{\"prompt\": \"a\"}", "field 'response' is missing");
        yield return Case("sft", "{\"prompt\": \"a\", \"answer\": \"b\"}", "field 'response' is missing");
        yield return Case("sft", "{\"prompt\": 5, \"response\": \"b\"}", "field 'prompt' must be a string, found a number");
        yield return Case("sft", "{\"prompt\": \"a\", \"response\": \"b\", \"prompt\": \"c\"}", "field 'prompt' appears twice");
        yield return Case("sft", "{\"prompt\": \"\", \"response\": \"b\"}", "field 'prompt' is empty");
        yield return Case("sft", "{\"prompt\": \"a\\ud800\", \"response\": \"b\"}", "field 'prompt' is not valid text");
        yield return Case("sft", "{\"prompt\": \"a\", \"response\": \" \\n \"}", "field 'response' is empty");
        yield return Case("sft", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"tool\", \"content\": \"b\"}]}", "messages[1]: role 'tool' is not one of system, user, assistant");
        yield return Case("sft", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", "holds no assistant turn");
        yield return Case("sft", "{\"messages\": [{\"role\": \"user\", \"content\": null}, {\"role\": \"assistant\", \"content\": \"b\"}]}", "messages[0]: field 'content' must be a string, found null");
        yield return Case("sft", "{\"messages\": [{\"content\": \"a\"}]}", "messages[0]: field 'role' is missing");
        yield return Case("sft", "{\"messages\": []}", "field 'messages' is an empty array");
        yield return Case("sft", "{\"messages\": \"hi\"}", "field 'messages' must be an array, found a string");
        yield return Case("sft", "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}", "a dpo example ('prompt', 'chosen', 'rejected') in an sft dataset (the sft format was requested)");
        yield return Case("dpo", "{\"prompt\": \"a\", \"chosen\": \"b\"}", "field 'rejected' is missing");
        yield return Case("dpo", "{\"prompt\": \"a\", \"chosen\": \"\", \"rejected\": \"c\"}", "field 'chosen' is empty");
        yield return Case("dpo", "{\"prompt\": \"a\", \"response\": \"b\"}", "an sft example");
        yield return Case("lm", "{\"text\": \"\"}", "field 'text' is empty");
        yield return Case("lm", "{\"text\": [\"a\"]}", "field 'text' must be a string, found an array");
        yield return Case("lm", "\"just a string\"", "found a string");
    }

    private static string ValidLine(string objective) => objective switch
    {
        "sft" => Pair("some prompt", "some response"),
        "dpo" => Pref("some prompt", "good", "bad"),
        _ => Line(new { text = "some document" }),
    };

    [TestCaseSource(nameof(BadLines))]
    public void ABadLineIsNamedWithFileLineAndExcerpt(string objective, string bad, string problem)
    {
        string path = Write([ValidLine(objective), "", bad, ValidLine(objective), ValidLine(objective)]);
        var e = Assert.Throws<InvalidInputException>(() => Datasets.Open(path, objective, Bytes, 1, 16, 1, 0, false));
        Assert.That(e!.Message, Does.StartWith($"{path}:3: "));
        Assert.That(e.Message, Does.Contain(problem));
        Assert.That(e.Message, Does.Contain($"the line reads: {bad[..Math.Min(bad.Length, 80)]}"));

        using var skipped = Datasets.Open(path, objective, Bytes, 1, 16, 1, 0, true);
        Assert.That(skipped.Info.BadLinesSkipped, Is.EqualTo(1));
        Assert.That(skipped.Info.TrainExamples, Is.EqualTo(3));
        Assert.That(skipped.Jsonl!.BadLineMessages.Single(), Does.StartWith($"{path}:3: ").And.Contain(problem));
    }

    [Test]
    public void TheExcerptIsTheStartOfALongLine()
    {
        string bad = "{\"prompt\": 1, \"response\": \"" + new string('x', 500) + "\"}";
        var e = Assert.Throws<InvalidInputException>(() => JsonlDataset.Open(Write([bad]), Bytes, 64));
        Assert.That(e!.Message, Does.Contain("the line reads: " + bad[..80] + "..."));
        Assert.That(e.Message, Does.Not.Contain(bad[..81]));
    }

    [Test]
    public void InvalidUtf8IsNamedWithFileAndLine()
    {
        string path = Path.Combine(Fixtures.TempDirectory(), "bad.jsonl");
        File.WriteAllBytes(path, [.. Encoding.UTF8.GetBytes(Pair("a", "b") + "\n{\"prompt\": \"a"), 0xC3, 0x28, .. Encoding.UTF8.GetBytes("\", \"response\": \"b\"}\n")]);
        var e = Assert.Throws<InvalidInputException>(() => JsonlDataset.Open(path, Bytes, 64));
        Assert.That(e!.Message, Does.StartWith($"{path}:2: ").And.Contain("not valid UTF-8 at byte 13"));
    }

    [Test]
    public void AResponseThatTokenisesToNothingIsABadLine()
    {
        var tok = new TildeDroppingTokenizer();
        string conv = Line(new { messages = new[] { new { role = "user", content = "hi" }, new { role = "assistant", content = "~~" } } });
        (string Line, string Problem)[] cases =
        [
            (Pair("hi", "~~~"), "field 'response' tokenises to no tokens"),
            (conv, "messages[1]: the assistant content tokenises to no tokens"),
            (Pref("hi", "yes", "~"), "field 'rejected' tokenises to no tokens"),
            (Line(new { text = "~~" }), "field 'text' tokenises to no tokens"),
        ];
        foreach (var (line, problem) in cases)
        {
            var e = Assert.Throws<InvalidInputException>(() => JsonlDataset.Open(Write([line]), tok, 64));
            Assert.That(e!.Message, Does.Contain(":1: " + problem).And.Contain("the line reads: " + line[..Math.Min(line.Length, 80)]), problem);
        }
    }

    [Test]
    public void SkippedBadLinesAreCounted()
    {
        var lines = PairLines(10);
        lines.Insert(0, "not json");
        lines.Insert(4, "{\"prompt\": \"a\", \"response\": \"\"}");
        lines.Insert(7, "   ");
        lines.Add("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}");
        string path = Write(lines);
        using var t = Datasets.Open(path, "sft", Bytes, 2, 64, 1, 0, true);
        Assert.That(t.Info.BadLinesSkipped, Is.EqualTo(3));
        Assert.That(t.Info.TrainExamples, Is.EqualTo(10));
        Assert.That(t.Jsonl!.BadLineMessages.Select(m => m[..(m.IndexOf(": ", path.Length, StringComparison.Ordinal))]),
            Is.EqualTo(new[] { $"{path}:1", $"{path}:5", $"{path}:14" }));
        Assert.That(t.Info.ToJson()["bad_lines_skipped"]!.GetValue<long>(), Is.EqualTo(3));
        Assert.That(t.Jsonl.FormatLine, Is.Null, "the objective gave the format");
        using var detected = JsonlDataset.Open(path, Bytes, 64, format: null, skipBadLines: true);
        Assert.That((detected.Format, detected.FormatLine, detected.BadLines), Is.EqualTo((DatasetFormat.Sft, (long?)2, 3L)), "the format comes from the first valid line");
    }

    [Test]
    public void TheFormatIsDetectedFromTheFirstValidLine()
    {
        using (var d = JsonlDataset.Open(Write(["", Pref("p", "c", "r"), Pref("p2", "c2", "r2")]), Bytes, 64))
            Assert.That((d.Format, d.FormatLine, d.Count), Is.EqualTo((DatasetFormat.Dpo, (long?)2, 2)));
        var e = Assert.Throws<InvalidInputException>(() => JsonlDataset.Open(Write([Pair("a", "b"), Pref("p", "c", "r")]), Bytes, 64));
        Assert.That(e!.Message, Does.Contain(":2: a dpo example").And.Contain("the format sft was detected from line 1"));
        var unknown = Assert.Throws<InvalidInputException>(() => JsonlDataset.Open(Write([Line(new { question = "a", answer = "b" })]), Bytes, 64));
        Assert.That(unknown!.Message, Does.Contain(":1: no example fields").And.Contain("'question', 'answer'"));
    }

    [Test]
    public void AnEmptyDatasetNamesTheFile()
    {
        string empty = Write([], "empty.jsonl");
        var e = Assert.Throws<InvalidInputException>(() => Datasets.Open(empty, "sft", Bytes, 1, 64, 1, 0, false));
        Assert.That(e!.Message, Does.StartWith($"{empty}: ").And.Contain("no valid example"));

        string blank = Write(["", "  ", ""], "blank.jsonl");
        e = Assert.Throws<InvalidInputException>(() => Datasets.Open(blank, "dpo", Bytes, 1, 64, 1, 0, false));
        Assert.That(e!.Message, Does.StartWith($"{blank}: ").And.Contain("no valid example"));

        string allBad = Write(["nope", "{}"], "bad.jsonl");
        e = Assert.Throws<InvalidInputException>(() => Datasets.Open(allBad, "sft", Bytes, 1, 64, 1, 0, true));
        Assert.That(e!.Message, Does.StartWith($"{allBad}: ").And.Contain("no valid example").And.Contain("2 bad lines skipped"));

        string few = Write(PairLines(3), "few.jsonl");
        e = Assert.Throws<InvalidInputException>(() => Datasets.Open(few, "sft", Bytes, 4, 64, 1, 0, false));
        Assert.That(e!.Message, Does.StartWith($"{few}: ").And.Contain("too few training examples for one batch"));
        e = Assert.Throws<InvalidInputException>(() => Datasets.Open(Write([Line(new { text = "short" })], "short.jsonl"), "lm", Bytes, 2, 64, 1, 0, false));
        Assert.That(e!.Message, Does.Contain("short.jsonl: too short for one batch"));
        e = Assert.Throws<InvalidInputException>(() => Datasets.Open(Path.Combine(Fixtures.TempDirectory(), "missing.jsonl"), "sft", Bytes, 1, 64, 1, 0, false));
        Assert.That(e!.Message, Does.Contain("missing.jsonl: data file not found"));
    }

    [Test]
    public void BatchersRefuseTheWrongFormatABadSizeAndTooFewExamples()
    {
        using var sft = JsonlDataset.Open(Write([Pair("a", "b"), Pair("c", "d"), Pair("e", "f")]), Bytes, 64, DatasetFormat.Sft);
        using var dpo = JsonlDataset.Open(Write([Pref("q", "yes", "no"), Pref("r", "yes", "no")]), Bytes, 64, DatasetFormat.Dpo);
        Assert.That(() => new DpoBatcher(sft, DatasetSplit.Train, 1, 1), Throws.ArgumentException.With.Message.Contains("a dpo batcher needs a dpo dataset").And.Message.Contains("is sft"));
        Assert.That(() => new SftBatcher(dpo, DatasetSplit.Train, 1, 1), Throws.ArgumentException.With.Message.Contains("an sft batcher needs an sft dataset").And.Message.Contains("is dpo"));
        Assert.That(() => new SftBatcher(sft, DatasetSplit.Train, 0, 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("batch"));
        Assert.That(() => new DpoBatcher(dpo, DatasetSplit.Train, -1, 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("pairs"));
        var e = Assert.Throws<InvalidInputException>(() => new SftBatcher(sft, DatasetSplit.Train, 4, 1));
        Assert.That(e!.Message, Does.Contain("too few training examples for one batch: 3 examples, and a batch of 4 sequences needs at least 4"));
        e = Assert.Throws<InvalidInputException>(() => new DpoBatcher(dpo, DatasetSplit.Train, 3, 1));
        Assert.That(e!.Message, Does.Contain("too few training pairs for one batch: 2 pairs, and a batch of 3 pairs needs at least 3"));
        Assert.That(new DpoBatcher(dpo, DatasetSplit.Train, 2, 1).Next().Batch, Is.EqualTo(4));
    }
}
