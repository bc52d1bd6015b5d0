using System.Text;
using System.Text.Json.Nodes;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using SentencePieceTokenizer = HftRuntime.Model.Tokenizers.SentencePieceTokenizer;
using TiktokenTokenizer = HftRuntime.Model.Tokenizers.TiktokenTokenizer;

namespace HftRuntime.Tests.Model;

/// <summary>
/// The byte, SentencePiece and tiktoken tokenizers, the factory, and saving to / loading from a model directory.
/// The SentencePiece fixture (tests/fixtures/tokenizer) is a 512-piece BPE model trained with spm_train; the
/// expected ids below were produced by the reference implementation (spm_encode 0.1.97) on the same model.
/// </summary>
[TestFixture]
public sealed class TokenizerTests
{
    private const int FixtureVocabSize = 512; // spm_train --vocab_size

    private static readonly string[] Sentences =
    [
        "The lighthouse keeper counted ships.",
        "A tokenizer splits text into pieces.",
        "Numbers like 2024 and 3.14 split into digits.",
        "naïve café 日本 🙂",
        "Zebras   quietly  vex the keeper",
    ];

    // spm_encode --model=tests/fixtures/tokenizer/tokenizer.model --output_format=id, one line per sentence above.
    private static readonly int[][] ReferenceIds =
    [
        [311, 425, 303, 372, 267, 373, 490],
        [438, 272, 279, 475, 479, 497, 264, 263, 348, 454, 259, 470, 437, 315, 471, 474, 333, 452, 287, 490],
        [469, 507, 351, 446, 476, 392, 279, 469, 53, 51, 53, 55, 268, 469, 54, 490, 52, 55, 263, 348, 479, 471, 315, 471, 474, 354, 479, 484, 454, 490],
        [277, 473, 198, 178, 296, 468, 493, 198, 172, 469, 233, 154, 168, 233, 159, 175, 469, 243, 162, 156, 133],
        [469, 93, 470, 487, 477, 331, 469, 469, 469, 435, 479, 430, 433, 469, 469, 296, 495, 261, 303],
    ];

    // A 256-piece unigram model without byte fallback (tests/fixtures/tokenizer/unigram.model): sentences and the
    // ids spm_encode gives for them. Only "Z" is missing from its vocabulary.
    private static readonly (string Text, int[] Ids)[] UnigramReference =
    [
        ("The lighthouse keeper counted ships.", [21, 10, 83, 25, 61, 12, 59, 7]),
        ("She kept a small notebook where she wrote the weather.", [3, 82, 10, 3, 73, 77, 18, 13, 111, 48, 85, 186, 37, 17, 10, 34, 14, 95, 4, 134, 7]),
        ("quick brown foxes and lazy dogs", [128, 177, 189, 155, 42, 105, 54, 3, 8, 29, 181, 11, 174, 26, 57, 6]),
        ("Zebras   quietly  vex the keeper", [3, 0, 9, 180, 3, 3, 128, 23, 235, 24, 11, 3, 3, 28, 105, 4, 25]),
    ];

    private static string FixtureDirectory => Fixtures.Case("tokenizer");

    private static string FixtureModel => Path.Combine(FixtureDirectory, "tokenizer.model");

    private static List<int> Encode(ITokenizer tokenizer, string text)
    {
        var ids = new List<int>();
        tokenizer.Encode(text, ids);
        return ids;
    }

    private static InvalidInputException Bad(TestDelegate action) => Assert.Throws<InvalidInputException>(action)!;

    // ---- bytes -------------------------------------------------------------------------------------------------

    [Test]
    public void BytesDescribeThemselves()
    {
        var t = new ByteTokenizer();
        Assert.That(t.Kind, Is.EqualTo("bytes"));
        Assert.That(t.VocabSize, Is.EqualTo(258));
        Assert.That(t.BosId, Is.EqualTo(256));
        Assert.That(t.EosId, Is.EqualTo(257));
    }

    [Test]
    public void BytesAsciiRoundTrip()
    {
        var t = new ByteTokenizer();
        const string text = "Hello, world! 0123456789 ~\t\n";
        var ids = Encode(t, text);
        Assert.That(ids, Is.EqualTo(text.Select(c => (int)c).ToList()));
        Assert.That(t.Decode(ids.ToArray()), Is.EqualTo(text));
    }

    [Test]
    public void BytesMultiByteUtf8RoundTrip()
    {
        var t = new ByteTokenizer();
        const string text = "naïve café 日本 🙂";
        var ids = Encode(t, text);
        Assert.That(ids, Is.EqualTo(Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToList()));
        Assert.That(ids, Has.Count.EqualTo(24)); // ï, é: 2 bytes; 日, 本: 3; 🙂: 4
        Assert.That(ids, Has.All.InRange(0, 255));
        Assert.That(t.Decode(ids.ToArray()), Is.EqualTo(text));
    }

    [Test]
    public void BytesLongTextRoundTrip()
    {
        var t = new ByteTokenizer();
        string text = string.Concat(Enumerable.Repeat("日本 🙂 abc ", 500)); // beyond the stack buffers
        var ids = Encode(t, text);
        Assert.That(ids, Has.Count.EqualTo(Encoding.UTF8.GetByteCount(text)));
        Assert.That(t.Decode(ids.ToArray()), Is.EqualTo(text));
    }

    [Test]
    public void BytesEncodeAppends()
    {
        var t = new ByteTokenizer();
        var ids = new List<int> { t.BosId!.Value };
        t.Encode("ab", ids);
        t.Encode("", ids);
        Assert.That(ids, Is.EqualTo(new[] { 256, 97, 98 }));
    }

    [Test]
    public void BytesDecodeDropsSpecialIdsAndReplacesInvalidUtf8()
    {
        var t = new ByteTokenizer();
        Assert.That(t.Decode([256, 72, 105, 257]), Is.EqualTo("Hi"));
        // a stray continuation byte, a truncated two-byte sequence, an invalid lead byte
        Assert.That(t.Decode([0x80, 0x41, 0xC3, 0x42, 0xFF]), Is.EqualTo("\uFFFDA\uFFFDB\uFFFD"));
        // special ids are dropped before the bytes are decoded, so they do not break a character
        Assert.That(t.Decode([0xC3, 256, 0xA9]), Is.EqualTo("é"));
        Assert.That(t.Decode([]), Is.EqualTo(""));
    }

    [Test]
    public void BytesDecodeRejectsIdsOutsideTheVocabulary()
    {
        var t = new ByteTokenizer();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([65, 258]))!;
        Assert.That(e.Message, Does.Contain("258").And.Contain("position 1"));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([-1]));
    }

    [Test]
    public void BytesSaveAndLoad()
    {
        string dir = Path.Combine(Fixtures.TempDirectory(), "model");
        new ByteTokenizer().Save(dir);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!.AsObject();
        Assert.That((string?)json["hft_tokenizer"], Is.EqualTo("bytes"));
        Assert.That((int?)json["bos_token_id"], Is.EqualTo(256));
        Assert.That((int?)json["eos_token_id"], Is.EqualTo(257));

        var loaded = Tokenizers.Load(dir);
        Assert.That(loaded, Is.InstanceOf<ByteTokenizer>());
        Assert.That(Encode(loaded, Sentences[3]), Is.EqualTo(Encode(new ByteTokenizer(), Sentences[3])));
        Assert.That(Tokenizers.Create(dir), Is.InstanceOf<ByteTokenizer>());
    }

    [Test]
    public void SaveKeepsOtherFieldsOfAnExistingConfig()
    {
        string dir = Fixtures.TempDirectory();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"chat_template\": \"{{ x }}\", \"hft_tokenizer\": \"sentencepiece\"}");
        new ByteTokenizer().Save(dir);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!.AsObject();
        Assert.That((string?)json["chat_template"], Is.EqualTo("{{ x }}"));
        Assert.That((string?)json["hft_tokenizer"], Is.EqualTo("bytes"));
        Assert.That(Tokenizers.Load(dir), Is.InstanceOf<ByteTokenizer>());
    }

    // ---- SentencePiece -----------------------------------------------------------------------------------------

    [Test]
    public void SentencePieceDescribesTheModel()
    {
        var t = SentencePieceTokenizer.Load(FixtureModel);
        Assert.That(t.Kind, Is.EqualTo("sentencepiece"));
        Assert.That(t.ModelType, Is.EqualTo("bpe"));
        Assert.That(t.VocabSize, Is.EqualTo(FixtureVocabSize));
        Assert.That(t.UnknownId, Is.EqualTo(0));
        Assert.That(t.BosId, Is.EqualTo(1));
        Assert.That(t.EosId, Is.EqualTo(2));
        Assert.That(t.PieceToId("<0x41>"), Is.EqualTo(3 + 0x41), "byte-fallback pieces follow the three control pieces");
        Assert.That(t.PieceToId("no such piece"), Is.Null);
    }

    [Test]
    public void SentencePieceMatchesTheReferenceImplementation()
    {
        var t = SentencePieceTokenizer.Load(FixtureModel);
        for (int i = 0; i < Sentences.Length; i++)
            Assert.That(Encode(t, Sentences[i]), Is.EqualTo(ReferenceIds[i]), Sentences[i]);
    }

    [Test]
    public void SentencePieceUnigramMatchesTheReferenceImplementation()
    {
        var t = SentencePieceTokenizer.Load(Path.Combine(FixtureDirectory, "unigram.model"));
        Assert.That((t.ModelType, t.VocabSize, t.UnknownId, t.BosId, t.EosId), Is.EqualTo(("unigram", 256, 0, 1, 2)));
        foreach (var (text, expected) in UnigramReference)
        {
            var ids = Encode(t, text);
            Assert.That(ids, Is.EqualTo(expected), text);
            Assert.That(t.Decode(ids.ToArray()), Is.EqualTo(text.Replace("Z", "")), "the unknown piece is dropped");
        }
    }

    [Test]
    public void UnigramWithByteFallbackIsRejected()
    {
        // Microsoft.ML.Tokenizers 2.0.1 gives wrong ids for the byte pieces of unigram models. A second TrainerSpec
        // (field 2) appended to the model is merged into the first: here it sets byte_fallback (field 35) to true.
        string dir = Fixtures.TempDirectory();
        string path = Path.Combine(dir, "tokenizer.model");
        File.WriteAllBytes(path, [.. File.ReadAllBytes(Path.Combine(FixtureDirectory, "unigram.model")), 0x12, 0x03, 0x98, 0x02, 0x01]);
        var e = Bad(() => Tokenizers.Load(dir));
        Assert.That(e.Message, Does.Contain(path).And.Contain("byte_fallback"));
    }

    [Test]
    public void WordModelIsRejected()
    {
        string path = Path.Combine(Fixtures.TempDirectory(), "word.model");
        File.WriteAllBytes(path, [.. File.ReadAllBytes(FixtureModel), 0x12, 0x02, 0x18, 0x03]); // model_type (field 3) = WORD
        var e = Bad(() => SentencePieceTokenizer.Load(path));
        Assert.That(e.Message, Does.Contain(path).And.Contain("word"));
    }

    [Test]
    public void SentencePieceRoundTrip()
    {
        var t = SentencePieceTokenizer.Load(FixtureModel);
        string[] more = ["She kept a small notebook.", "Unseen words: quixotic, Äpfel, ĳ, 1+1=2!", "tab\there", "x"];
        foreach (string s in Sentences.Concat(more))
        {
            var ids = Encode(t, s);
            Assert.That(ids, Has.All.InRange(0, t.VocabSize - 1), s);
            Assert.That(ids, Has.None.EqualTo(t.BosId).And.None.EqualTo(t.EosId).And.None.EqualTo(t.UnknownId), s);
            Assert.That(t.Decode(ids.ToArray()), Is.EqualTo(s));
        }
        Assert.That(Encode(t, ""), Is.Empty);
    }

    [Test]
    public void SentencePieceFrequentWordsAreSinglePieces()
    {
        var t = SentencePieceTokenizer.Load(FixtureModel);
        Assert.That(Encode(t, "lighthouse"), Has.Count.EqualTo(1));
        Assert.That(Encode(t, "the keeper and the lighthouse"), Has.Count.EqualTo(5));
        // a word that never occurs in the training text needs many pieces
        Assert.That(Encode(t, "xylophone").Count, Is.GreaterThan(3));
    }

    [Test]
    public void SentencePieceDecodeDropsControlPieces()
    {
        var t = SentencePieceTokenizer.Load(FixtureModel);
        var ids = new List<int> { t.BosId!.Value };
        t.Encode("the keeper", ids);
        ids.Add(t.EosId!.Value);
        Assert.That(t.Decode(ids.ToArray()), Is.EqualTo("the keeper"));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([5, FixtureVocabSize]));
    }

    [Test]
    public void SentencePieceSaveCopiesTheModelAndLoadsBack()
    {
        var original = SentencePieceTokenizer.Load(FixtureModel);
        string dir = Path.Combine(Fixtures.TempDirectory(), "checkpoint");
        original.Save(dir);

        Assert.That(File.ReadAllBytes(Path.Combine(dir, "tokenizer.model")), Is.EqualTo(File.ReadAllBytes(FixtureModel)));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!.AsObject();
        Assert.That((string?)json["hft_tokenizer"], Is.EqualTo("sentencepiece"));
        Assert.That((int?)json["bos_token_id"], Is.EqualTo(1));
        Assert.That((int?)json["eos_token_id"], Is.EqualTo(2));
        Assert.That((string?)json["bos_token"], Is.EqualTo("<s>"));

        foreach (var loaded in new[] { Tokenizers.Load(dir), Tokenizers.Create(dir), Tokenizers.Create(Path.Combine(dir, "tokenizer.model")) })
        {
            Assert.That(loaded, Is.InstanceOf<SentencePieceTokenizer>());
            Assert.That((loaded.VocabSize, loaded.BosId, loaded.EosId), Is.EqualTo((original.VocabSize, original.BosId, original.EosId)));
            foreach (string s in Sentences) Assert.That(Encode(loaded, s), Is.EqualTo(Encode(original, s)), s);
        }

        // saving again into the directory it was loaded from leaves the model intact
        Tokenizers.Load(dir).Save(dir);
        Assert.That(File.ReadAllBytes(Path.Combine(dir, "tokenizer.model")), Is.EqualTo(File.ReadAllBytes(FixtureModel)));
    }

    [Test]
    public void DirectoryWithOnlyTokenizerModelLoads()
    {
        string dir = Fixtures.TempDirectory();
        File.Copy(FixtureModel, Path.Combine(dir, "tokenizer.model"));
        // a Hugging Face config without our field does not get in the way
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"tokenizer_class\": \"LlamaTokenizer\", \"bos_token\": \"<s>\"}");
        var t = Tokenizers.Load(dir);
        Assert.That(t, Is.InstanceOf<SentencePieceTokenizer>());
        Assert.That(Encode(t, Sentences[0]), Is.EqualTo(ReferenceIds[0]));
    }

    // ---- tiktoken ----------------------------------------------------------------------------------------------

    [Test]
    public void TiktokenCl100k()
    {
        var t = Tokenizers.Create("tiktoken:cl100k_base");
        Assert.That(t.Kind, Is.EqualTo("tiktoken"));
        Assert.That(t.VocabSize, Is.EqualTo(100277));
        Assert.That(t.BosId, Is.Null);
        Assert.That(t.EosId, Is.EqualTo(100257));
        Assert.That(Encode(t, "Hello world"), Is.EqualTo(new[] { 9906, 1917 }));
        foreach (string s in Sentences)
        {
            var ids = Encode(t, s);
            Assert.That(ids, Has.All.InRange(0, t.VocabSize - 1), s);
            Assert.That(t.Decode(ids.ToArray()), Is.EqualTo(s));
        }
        Assert.That(t.Decode([9906, 100257, 1917]), Is.EqualTo("Hello world"));

        string dir = Fixtures.TempDirectory();
        t.Save(dir);
        var loaded = Tokenizers.Load(dir);
        Assert.That(loaded, Is.InstanceOf<TiktokenTokenizer>());
        Assert.That(Encode(loaded, Sentences[1]), Is.EqualTo(Encode(t, Sentences[1])));
    }

    [Test]
    public void TiktokenUnknownEncoding()
    {
        var e = Bad(() => Tokenizers.Create("tiktoken:o200k_base"));
        Assert.That(e.Message, Does.Contain("tiktoken:o200k_base").And.Contain("cl100k_base"));
    }

    // ---- bad input ---------------------------------------------------------------------------------------------

    [Test]
    public void UnknownSpec()
    {
        var e = Bad(() => Tokenizers.Create("wordpiece"));
        Assert.That(e.Message, Does.StartWith("wordpiece:").And.Contain("bytes").And.Contain("tokenizer.model"));
        Assert.That(e.Source, Is.EqualTo("wordpiece"));
        Bad(() => Tokenizers.Create(""));
    }

    [Test]
    public void MissingFile()
    {
        string path = Path.Combine(Fixtures.TempDirectory(), "nope", "tokenizer.model");
        Assert.That(Bad(() => Tokenizers.Create(path)).Message, Does.Contain(path));
        Assert.That(Bad(() => SentencePieceTokenizer.Load(path)).Message, Does.Contain(path).And.Contain("not found"));
    }

    [Test]
    public void DirectoryWithoutTokenizer()
    {
        string dir = Fixtures.TempDirectory();
        var e = Bad(() => Tokenizers.Load(dir));
        Assert.That(e.Message, Does.Contain(dir).And.Contain("tokenizer.model").And.Contain("tokenizer_config.json")
            .And.Contain("tokenizer.json"));
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{}");
        Assert.That(Bad(() => Tokenizers.Load(dir)).Message, Does.StartWith(Path.Combine(dir, "tokenizer.json") + ": ").And.Contain("not a Hugging Face tokenizer.json"));
        Assert.That(Bad(() => Tokenizers.Load(Path.Combine(dir, "missing"))).Message, Does.Contain("missing"));
    }

    private static IEnumerable<TestCaseData> GarbageModels()
    {
        yield return new TestCaseData(Array.Empty<byte>()).SetName("GarbageModel(empty)");
        yield return new TestCaseData(Encoding.UTF8.GetBytes("this is plain text, not a protobuf\n")).SetName("GarbageModel(text)");
        yield return new TestCaseData(Enumerable.Range(0, 1000).Select(i => (byte)(i * 37 + 11)).ToArray()).SetName("GarbageModel(noise)");
        yield return new TestCaseData(new byte[] { 0x08, 0x01 }).SetName("GarbageModel(other protobuf)");
    }

    [TestCaseSource(nameof(GarbageModels))]
    public void GarbageModel(byte[] bytes)
    {
        string dir = Fixtures.TempDirectory();
        string path = Path.Combine(dir, "tokenizer.model");
        File.WriteAllBytes(path, bytes);
        Assert.That(Bad(() => Tokenizers.Load(dir)).Message, Does.Contain(path));
        Assert.That(Bad(() => Tokenizers.Create(path)).Message, Does.Contain(path));
    }

    [Test]
    public void TruncatedModel()
    {
        string dir = Fixtures.TempDirectory();
        string path = Path.Combine(dir, "tokenizer.model");
        var bytes = File.ReadAllBytes(FixtureModel);
        File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        Assert.That(Bad(() => Tokenizers.Load(dir)).Message, Does.Contain(path));
    }

    [TestCase("{not json", "not valid JSON")]
    [TestCase("{\"hft_tokenizer\": \"wordpiece\"}", "hft_tokenizer")]
    [TestCase("{\"hft_tokenizer\": 3}", "hft_tokenizer")]
    [TestCase("{\"hft_tokenizer\": \"bytes\", \"bos_token_id\": 1}", "bos_token_id")]
    [TestCase("{\"hft_tokenizer\": \"sentencepiece\"}", "tokenizer.model")]
    [TestCase("{\"hft_tokenizer\": \"tiktoken\", \"tiktoken_encoding\": \"nope\"}", "tiktoken_encoding")]
    public void BadTokenizerConfig(string json, string expected)
    {
        string dir = Fixtures.TempDirectory();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), json);
        var e = Bad(() => Tokenizers.Load(dir));
        Assert.That(e.Message, Does.Contain(dir).And.Contain(expected));
    }

    [Test]
    public void SentencePieceConfigMustAgreeWithTheModel()
    {
        string dir = Fixtures.TempDirectory();
        File.Copy(FixtureModel, Path.Combine(dir, "tokenizer.model"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"hft_tokenizer\": \"sentencepiece\", \"bos_token_id\": 1, \"eos_token_id\": 3}");
        var e = Bad(() => Tokenizers.Load(dir));
        Assert.That(e.Message, Does.Contain("tokenizer_config.json").And.Contain("eos_token_id").And.Contain('3').And.Contain('2'));
    }
}
