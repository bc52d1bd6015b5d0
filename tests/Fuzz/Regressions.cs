using System.Buffers.Binary;
using System.Text;
using HftRuntime.Model;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using TokenizerFactory = HftRuntime.Model.Tokenizers.Tokenizers;

namespace HftRuntime.Tests.Fuzz;

/// <summary>
/// The bugs the fuzz tests found, each reduced to a plain unit test. Most are one System.Text.Json behaviour met in
/// every JSON reader: a JSON escape can encode a lone surrogate (<c>"\ud800"</c>), which passes parsing (and UTF-8
/// validation, being ASCII) but makes GetString, JsonProperty.Name, JsonNode access and writing throw
/// InvalidOperationException; invalid UTF-8 inside a string does the same in a reader that did not validate it; and a
/// JsonObject with a duplicate key throws ArgumentException on first access.
/// </summary>
[TestFixture]
public sealed class FuzzRegressionTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Fixtures.TempDirectory();

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static InvalidInputException Rejected(TestDelegate read, string source)
    {
        var e = Assert.Throws<InvalidInputException>(read)!;
        Assert.That(e.Message, Does.Contain(source));
        return e;
    }

    // ---- safetensors -------------------------------------------------------------------------------------------

    private string WriteSafeTensors(string header, int dataBytes)
    {
        string path = Path.Combine(_dir, "model.safetensors");
        byte[] json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)json.Length);
        json.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>safetensors-file #1019, #1086: a lone surrogate escape in a tensor name, a dtype or the metadata
    /// escaped as InvalidOperationException from SafeTensorsFile.Open.</summary>
    [TestCase("""{"a\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""", "tensor name")]
    [TestCase("""{"w": {"dtype": "F3\udfff", "shape": [1], "data_offsets": [0, 4]}}""", "dtype")]
    [TestCase("""{"__metadata__": {"format": "p\ud800t"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""", "__metadata__")]
    [TestCase("""{"__metadata__": {"\udc00": "pt"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""", "__metadata__")]
    public void SafeTensorsHeaderWithLoneSurrogate(string header, string what)
    {
        string path = WriteSafeTensors(header, 4);
        var e = Rejected(() => SafeTensorsFile.Open(path).Dispose(), path);
        Assert.That(e.Message, Does.Contain(what).And.Contain("not valid Unicode"));
        Rejected(() => SafeTensorsCheckpoint.Open(_dir).Dispose(), path);
    }

    private string WriteShardedCheckpoint()
    {
        SafeTensorsWriter.WriteSharded(_dir,
        [
            SafeTensorsWriter.Entry.FromFloat32("a", new float[64]),
            SafeTensorsWriter.Entry.FromFloat32("b", new float[64]),
        ], maxShardBytes: 256);
        return Path.Combine(_dir, SafeTensorsCheckpoint.IndexFileName);
    }

    /// <summary>safetensors-index #18 and others: invalid UTF-8 inside a string of the index (which JsonDocument does not
    /// check) escaped as InvalidOperationException.</summary>
    [Test]
    public void ShardIndexWithInvalidUtf8()
    {
        string index = WriteShardedCheckpoint();
        string text = File.ReadAllText(index);
        int at = text.IndexOf("model-00001", StringComparison.Ordinal);
        byte[] bytes = [.. Encoding.UTF8.GetBytes(text[..at]), 0xFF, .. Encoding.UTF8.GetBytes(text[at..])];
        File.WriteAllBytes(index, bytes);
        var e = Rejected(() => SafeTensorsCheckpoint.Open(_dir).Dispose(), index);
        Assert.That(e.Message, Does.Contain("UTF-8"));
    }

    /// <summary>safetensors-index #77, #82, #114: a lone surrogate escape in a tensor name, a shard name or the metadata
    /// of the index escaped as InvalidOperationException.</summary>
    [TestCase("\"a\"", "\"a\\ud800\"")]
    [TestCase("model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors\\udfff")]
    [TestCase("\"metadata\": {", "\"metadata\": {\"\\ud800\": 1, ")]
    public void ShardIndexWithLoneSurrogate(string find, string replace)
    {
        string index = WriteShardedCheckpoint();
        string text = File.ReadAllText(index);
        Assert.That(text, Does.Contain(find));
        File.WriteAllText(index, text.Replace(find, replace));
        var e = Rejected(() => SafeTensorsCheckpoint.Open(_dir).Dispose(), index);
        Assert.That(e.Message, Does.Contain("not valid Unicode"));
    }

    // ---- config.json -------------------------------------------------------------------------------------------

    private static string Config(string extra) =>
        "{\"vocab_size\": 96, \"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2, " +
        "\"num_attention_heads\": 4" + extra + "}";

    /// <summary>llama-config #105, #243, #459 and others: a lone surrogate escape in a string value or a key escaped
    /// as InvalidOperationException from Parse (reading the field, or in the error message for a field of the wrong
    /// type), or later from ToJson (for a field this class does not model, kept from the source).</summary>
    [TestCase(", \"model_type\": \"llama\\ud800\"")]
    [TestCase(", \"hidden_act\": \"\\udc00\"")]
    [TestCase(", \"bos_token_id\": [\"\\ud800\"]")]
    [TestCase(", \"pad_token_id\": \"\\ud800\"")]
    [TestCase(", \"x\\ud800\": 1")]
    [TestCase(", \"rope_scaling\": {\"rope_type\": \"llama3\\ud800\"}")]
    public void ConfigWithLoneSurrogate(string extra)
    {
        var e = Rejected(() => LlamaConfig.Parse(Config(extra), "fuzz-config.json"), "fuzz-config.json");
        Assert.That(e.Message, Does.Contain("not valid Unicode"));
        string path = Path.Combine(_dir, "config.json");
        File.WriteAllText(path, Config(extra));
        Rejected(() => LlamaConfig.Load(path), path);
    }

    /// <summary>llama-config #307: with a duplicate key elsewhere, the duplicate-key check itself unescaped a lone
    /// surrogate key and threw InvalidOperationException out of JsonNode.Parse.</summary>
    [Test]
    public void ConfigWithLoneSurrogateKeyAndDuplicateKey()
    {
        Rejected(() => LlamaConfig.Parse(Config(", \"a\\ud800\": 1, \"mlp_bias\": false, \"mlp_bias\": false"), "fuzz-config.json"), "fuzz-config.json");
    }

    /// <summary>A config with ordinary non-ASCII text in unmodelled fields still reads and round-trips.</summary>
    [Test]
    public void ConfigWithValidUnicodeStillRoundTrips()
    {
        var config = LlamaConfig.Parse(Config(", \"note\": \"caf\\u00e9 \\ud83d\\ude00 日本\""), "fuzz-config.json");
        Assert.That(LlamaConfig.Parse(config.ToJson(), "again"), Is.EqualTo(config));
        Assert.That(config.GetSourceJson()!["note"]!.GetValue<string>(), Is.EqualTo("café 😀 日本"));
    }

    // ---- JSON Lines --------------------------------------------------------------------------------------------

    /// <summary>jsonl #145, #1025, #1181: a lone surrogate escape in a key of a line escaped as InvalidOperationException
    /// from JsonlDataset.Open instead of a bad line naming file:line.</summary>
    [TestCase("{\"text\": \"fine\", \"a\\ud800\": 1}")]
    [TestCase("{\"te\\udfffxt\": \"x\"}")]
    public void JsonlLineWithLoneSurrogateKey(string bad)
    {
        string path = Path.Combine(_dir, "data.jsonl");
        File.WriteAllText(path, "{\"text\": \"first line\"}\n" + bad + "\n{\"text\": \"third line\"}\n");
        var tokenizer = new ByteTokenizer();
        var e = Rejected(() => JsonlDataset.Open(path, tokenizer, 16, DatasetFormat.Lm).Dispose(), path + ":2");
        Assert.That(e.Message, Does.Contain("not valid text"));
        using var skipped = JsonlDataset.Open(path, tokenizer, 16, DatasetFormat.Lm, skipBadLines: true);
        Assert.That((skipped.Count, skipped.BadLines), Is.EqualTo((2, 1L)));
    }

    // ---- plain text --------------------------------------------------------------------------------------------

    private static byte[] Gzip(string text)
    {
        var output = new MemoryStream();
        using (var gz = new System.IO.Compression.GZipStream(output, System.IO.Compression.CompressionLevel.Optimal, leaveOpen: true))
            gz.Write(Encoding.UTF8.GetBytes(text));
        return output.ToArray();
    }

    private static readonly string GzText = string.Concat(Enumerable.Range(0, 200).Select(i => $"Line {i} of a corpus.\n"));

    /// <summary>
    /// text-gz (truncation): GZipStream returns what it decoded of a stream cut short, so a .gz corpus cut anywhere in
    /// its deflate data or trailer was read as a shorter text without a word. The CRC-32 and length trailer is now
    /// checked.
    /// </summary>
    [Test]
    public void TruncatedGzipIsRejected()
    {
        byte[] full = Gzip(GzText);
        string path = Path.Combine(_dir, "corpus.txt.gz");
        foreach (int cut in new[] { full.Length - 1, full.Length - 4, full.Length - 8, full.Length - 9, full.Length / 2, 20, 10, 3, 0 })
        {
            File.WriteAllBytes(path, full[..cut]);
            var e = Rejected(() => TokenCorpus.FromTextFile(path, new ByteTokenizer(), 0), path);
            Assert.That(e.Message, Does.Contain("gzip").Or.Contain("no text"), $"cut at {cut} of {full.Length}");
        }
        File.WriteAllBytes(path, full);
        Assert.That(TokenCorpus.FromTextFile(path, new ByteTokenizer(), 0).Train, Has.Length.EqualTo(GzText.Length + 2));
    }

    /// <summary>A corrupt CRC is rejected (GZipStream checks a complete member itself); a file of two gzip members (as
    /// <c>cat a.gz b.gz</c> makes) is read whole.</summary>
    [Test]
    public void GzipTrailerIsChecked()
    {
        string path = Path.Combine(_dir, "corpus.txt.gz");
        byte[] full = Gzip(GzText);
        byte[] badCrc = (byte[])full.Clone();
        badCrc[^8] ^= 1;
        File.WriteAllBytes(path, badCrc);
        Assert.That(Rejected(() => TokenCorpus.FromTextFile(path, new ByteTokenizer(), 0), path).Message, Does.Contain("not a valid gzip file"));
        File.WriteAllBytes(path, [.. full, .. Gzip("and a second member\n")]);
        Assert.That(TokenCorpus.FromTextFile(path, new ByteTokenizer(), 0).Train, Has.Length.EqualTo(GzText.Length + 20 + 2));
    }

    /// <summary>
    /// A text corpus is read whole into one string: a file over 2 GB made File.ReadAllBytes throw a raw IOException,
    /// and one over about 1 GB an OutOfMemoryException when decoded. Both are now an InvalidInputException before
    /// anything is read (the file here is sparse: nothing is written).
    /// </summary>
    [Test]
    public void TextLargerThanTheLimitIsRejectedBeforeReading()
    {
        string path = Path.Combine(_dir, "huge.txt");
        using (var f = new FileStream(path, FileMode.CreateNew)) f.SetLength(2_500_000_000L);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Rejected(() => TokenCorpus.FromTextFile(path, new ByteTokenizer(), 0), path);
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.LessThan(1 << 20));
        Assert.That(e.Message, Does.Contain("JSON Lines"));
    }

    // ---- tokenizers --------------------------------------------------------------------------------------------

    /// <summary>tokenizer-directory #9, #24 and others: a duplicate key in tokenizer_config.json escaped as
    /// ArgumentException (from the JsonObject's dictionary) out of Tokenizers.Load.</summary>
    [TestCase("{\"hft_tokenizer\": \"bytes\", \"hft_tokenizer\": \"bytes\"}")]
    [TestCase("{\"hft_tokenizer\": \"bytes\", \"eos_token_id\": 257, \"eos_token_id\": 257}")]
    [TestCase("{\"hft_tokenizer\": \"bytes\", \"chat_template\": \"a\", \"chat_template\": \"b\"}")]
    public void TokenizerConfigWithDuplicateKey(string config)
    {
        string path = Path.Combine(_dir, "tokenizer_config.json");
        File.WriteAllText(path, config);
        Rejected(() => TokenizerFactory.Load(_dir), path);
    }

    /// <summary>tokenizer-directory #122: a lone surrogate escape in tokenizer_config.json escaped as
    /// InvalidOperationException (here while writing the error message about a wrong id).</summary>
    [TestCase("{\"hft_tokenizer\": \"bytes\", \"eos_token_id\": \"\\ud800\"}")]
    [TestCase("{\"hft_tokenizer\": \"byt\\udc00es\"}")]
    [TestCase("{\"hft_tokenizer\": \"bytes\", \"\\ud800\": 1}")]
    public void TokenizerConfigWithLoneSurrogate(string config)
    {
        string path = Path.Combine(_dir, "tokenizer_config.json");
        File.WriteAllText(path, config);
        var e = Rejected(() => TokenizerFactory.Load(_dir), path);
        Assert.That(e.Message, Does.Contain("not valid Unicode"));
    }

    /// <summary>Saving a tokenizer replaces a corrupt tokenizer_config.json; one with duplicate keys or a lone
    /// surrogate used to make Save throw (ArgumentException, InvalidOperationException).</summary>
    [TestCase("{\"hft_tokenizer\": \"bytes\", \"hft_tokenizer\": \"bytes\"}")]
    [TestCase("{\"note\": \"\\ud800\"}")]
    public void SaveReplacesACorruptTokenizerConfig(string config)
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), config);
        new ByteTokenizer().Save(_dir);
        Assert.That(TokenizerFactory.Load(_dir), Is.InstanceOf<ByteTokenizer>());
    }

    /// <summary>
    /// sentencepiece #2609 and others: in a unigram model, a piece that Microsoft.ML.Tokenizers leaves out of its
    /// vocabulary (a control piece other than BOS/EOS, type 3; a byte piece without byte fallback, type 6; a type
    /// outside the enum) made Decode of that id, which lies inside [0, VocabSize), throw NullReferenceException.
    /// Such ids are now dropped like control pieces.
    /// </summary>
    [TestCase(3)]
    [TestCase(6)]
    [TestCase(0)]
    [TestCase(7)]
    public void UnigramPieceOutsideTheLibraryVocabularyDecodes(int type)
    {
        byte[] model = File.ReadAllBytes(Path.Combine(Fixtures.Case("tokenizer"), "unigram.model"));
        const int piece = 40;
        var tokenizer = SentencePieceTokenizer.FromBytes(SetPieceType(model, piece, type), "unigram-odd-piece.model");
        Assert.That(tokenizer.VocabSize, Is.EqualTo(256));
        Assert.That(tokenizer.Decode([piece]), Is.Empty);
        if (type != 6) // a byte piece makes the library decode the others differently: only "no exception" holds
        {
            var reference = SentencePieceTokenizer.FromBytes(model, "unigram.model");
            Assert.That(tokenizer.Decode([21, piece, 10]), Is.EqualTo(reference.Decode([21, 10])));
        }
        for (int id = 0; id < tokenizer.VocabSize; id++) Assert.DoesNotThrow(() => tokenizer.Decode([id]), $"id {id}");
    }

    /// <summary>
    /// sentencepiece #26511 (HFT_FUZZ_SEED=1): a unigram piece whose text holds NUL ("\u007f\0") was accepted by
    /// Microsoft.ML.Tokenizers' trie builder, and encoding text with U+007F then threw IndexOutOfRangeException (other
    /// NUL pieces, "a\0", the builder refused). A piece with NUL is now rejected when the model is read.
    /// </summary>
    [TestCase("\u007f\0")]
    [TestCase("\u007f\0\0\0\0\0\0\0")]
    [TestCase("a\0")]
    public void PieceWithNulIsRejected(string escaped)
    {
        string text = System.Text.RegularExpressions.Regex.Unescape(escaped);
        byte[] model = File.ReadAllBytes(Path.Combine(Fixtures.Case("tokenizer"), "unigram.model"));
        byte[] bad = ReplacePiece(model, "\u2581learn", text);
        var e = Rejected(() => SentencePieceTokenizer.FromBytes(bad, "unigram-nul.model"), "unigram-nul.model");
        Assert.That(e.Message, Does.Contain("NUL"));
        Assert.That(SentencePieceTokenizer.FromBytes(ReplacePiece(model, "\u2581learn", "\u007f"), "unigram-del.model").Decode([21]), Is.Not.Empty);
    }

    /// <summary>The model with the text of the piece <paramref name="find"/> replaced (one-byte lengths only).</summary>
    private static byte[] ReplacePiece(byte[] model, string find, string replace)
    {
        byte[] f = Encoding.UTF8.GetBytes(System.Text.RegularExpressions.Regex.Unescape(find)), r = Encoding.UTF8.GetBytes(replace);
        int at = model.AsSpan().IndexOf(f);
        // ... 0x0A <message length> 0x0A <text length> text ...
        Assert.That((model[at - 4], model[at - 2], (int)model[at - 1]), Is.EqualTo(((byte)0x0A, (byte)0x0A, f.Length)));
        int message = model[at - 3] - f.Length + r.Length;
        return [.. model[..(at - 4)], 0x0A, (byte)message, 0x0A, (byte)r.Length, .. r, .. model[(at + f.Length)..]];
    }

    /// <summary>The model with the type field (3) of piece <paramref name="index"/> appended: protobuf keeps the last
    /// value of a repeated scalar field.</summary>
    private static byte[] SetPieceType(byte[] model, int index, int type)
    {
        var output = new List<byte>();
        int pos = 0, pieces = 0;
        while (pos < model.Length)
        {
            int start = pos;
            ulong key = Varint(model, ref pos);
            if ((key & 7) != 2) throw new InvalidOperationException("the fixture has only length-delimited top-level fields");
            int length = (int)Varint(model, ref pos);
            if (key >> 3 == 1 && pieces++ == index)
            {
                if (length + 2 >= 0x80) throw new InvalidOperationException("the piece is too long for this simple rewrite");
                output.Add((byte)key);
                output.Add((byte)(length + 2)); // the fixture's pieces are short: one-byte lengths
                output.AddRange(model.AsSpan(pos, length).ToArray());
                output.Add(3 << 3);
                output.Add((byte)type);
            }
            else
            {
                output.AddRange(model.AsSpan(start, pos + length - start).ToArray());
            }
            pos += length;
        }
        return output.ToArray();
    }

    private static ulong Varint(byte[] data, ref int pos)
    {
        ulong value = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte b = data[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
    }
}
