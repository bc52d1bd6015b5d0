using System.Text;
using System.Text.Json.Nodes;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime.Data;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using TokenizerFactory = HftRuntime.Model.Tokenizers.Tokenizers;

namespace HftRuntime.Tests.Fuzz;

/// <summary>
/// Fuzzing of the tokenizer readers: SentencePiece models (<see cref="SentencePieceTokenizer.FromBytes"/> and
/// <see cref="SentencePieceTokenizer.Load"/>, over our protobuf scanner and Microsoft.ML.Tokenizers) from the BPE and
/// unigram fixtures, and model directories (<see cref="TokenizerFactory.Load"/>) with mutated
/// tokenizer_config.json files. An accepted tokenizer must encode text to ids inside its vocabulary, decode any id
/// inside it, and survive a save and reload.
/// </summary>
[TestFixture]
public sealed class TokenizerFuzzTests
{
    private static readonly string[] Texts =
    [
        "The lighthouse keeper counted ships.", "Café ☕ 😀 日本語 ∑", "  multiple   spaces\n\ttabs\r\n", "0123456789",
        "<s></s><unk><pad>", "▁▁", new string('a', 200), "\u0000\u0001\u007f", "<|user|>\nhello\n<|assistant|>\n",
    ];

    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Fixtures.TempDirectory();

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static string FixtureModel(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "fixtures", "tokenizer", name);

    /// <summary>
    /// 24,000 mutated SentencePiece models a run (half from each fixture): protobuf structural edits (50 %: varints set to
    /// 0, −1, 2^31, 2^63 and other edges, scores set to NaN and infinities, pieces emptied, duplicated, made invalid
    /// UTF-8 or long, lengths that lie, fields deleted, duplicated, renumbered, given another wire type, and injected
    /// trainer-spec fields such as model_type, vocab_size, byte_fallback and unk/bos/eos/pad ids), byte edits (35 %)
    /// and truncation at every field boundary (15 %). Allocation bound: 256 bytes per model byte plus 4 MB;
    /// Microsoft.ML.Tokenizers builds dictionaries and tries of the pieces (strings at 2 bytes a char, entries of
    /// about 100 bytes for pieces of a few bytes), and the constant covers its fixed tables and the encoded texts.
    /// </summary>
    [Test]
    public void MutatedSentencePieceModels()
    {
        byte[][] seeds = [File.ReadAllBytes(FixtureModel("tokenizer.model")), File.ReadAllBytes(FixtureModel("unigram.model"))];
        var boundaries = seeds.Select(s => Mutator.ProtobufBoundaries(s)).ToArray();
        var run = new FuzzRun("sentencepiece");
        string path = Path.Combine(_dir, "tokenizer.model");
        string saveDir = Path.Combine(_dir, "saved");
        foreach (int i in run.Iterations(24_000))
        {
            var m = run.NewMutator(i);
            int s = i % seeds.Length;
            m.Log.Add(s == 0 ? "seed tokenizer.model (bpe)" : "seed unigram.model");
            int kind = m.Rng.Next(100);
            byte[] input = kind switch
            {
                < 50 => m.Protobuf(seeds[s], 3),
                < 85 => m.Bytes(seeds[s], 3),
                _ => m.Truncate(seeds[s], boundaries[s]),
            };
            bool fromFile = m.Chance(0.15), save = m.Chance(0.05);
            if (fromFile) File.WriteAllBytes(path, input);
            run.Check(i, m, input, ".model", 256L * input.Length + (4 << 20), path, () =>
            {
                var tokenizer = fromFile ? SentencePieceTokenizer.Load(path) : SentencePieceTokenizer.FromBytes(input, path);
                CheckIds(tokenizer.BosId, tokenizer.VocabSize, "BOS");
                CheckIds(tokenizer.EosId, tokenizer.VocabSize, "EOS");
                CheckIds(tokenizer.UnknownId, tokenizer.VocabSize, "unknown");
                _ = tokenizer.PieceToId("▁the");
                _ = tokenizer.PieceToId("<unk>");
                Exercise(tokenizer, m);
                if (save)
                {
                    tokenizer.Save(saveDir);
                    var again = TokenizerFactory.Load(saveDir);
                    if (again.VocabSize != tokenizer.VocabSize || again.BosId != tokenizer.BosId || again.EosId != tokenizer.EosId)
                        throw new InvalidOperationException("a saved tokenizer reloads differently");
                }
            });
        }
        run.Finish();
    }

    /// <summary>
    /// 12,000 mutated model directories a run: tokenizer_config.json written by the bytes and the SentencePiece
    /// tokenizers (one with extra Hugging Face fields and an EOS list), edited as JSON (70 %: kinds, ids of every type
    /// and size, lone surrogates, duplicate keys, ...), as bytes (20 %) or truncated (10 %); now and then the
    /// tokenizer.model beside it is missing or mutated too. Allocation bound: 64 bytes per byte of the config plus 256
    /// per byte of the model (as above) plus 4 MB.
    /// </summary>
    [Test]
    public void MutatedTokenizerDirectories()
    {
        byte[] model = File.ReadAllBytes(FixtureModel("tokenizer.model"));
        var seeds = new List<(string Name, byte[] Config, bool HasModel)>();
        string seedDir = Path.Combine(_dir, "seed");
        new ByteTokenizer().Save(seedDir);
        seeds.Add(("bytes", File.ReadAllBytes(Path.Combine(seedDir, "tokenizer_config.json")), false));
        Directory.Delete(seedDir, true);
        SentencePieceTokenizer.FromBytes(model, "fixture").Save(seedDir);
        byte[] spConfig = File.ReadAllBytes(Path.Combine(seedDir, "tokenizer_config.json"));
        seeds.Add(("sentencepiece", spConfig, true));
        var extended = JsonNode.Parse(spConfig)!.AsObject();
        extended["eos_token_id"] = JsonNode.Parse("[2, 2]");
        extended["chat_template"] = "{% for m in messages %}{{ m.content }}{% endfor %}";
        extended["added_tokens_decoder"] = JsonNode.Parse("""{"0": {"content": "<unk>", "special": true}}""");
        extended["model_max_length"] = 1000000000000000019884624838656.0;
        seeds.Add(("sentencepiece-extended", Encoding.UTF8.GetBytes(extended.ToJsonString()), true));
        Directory.Delete(seedDir, true);

        string[] extra =
        [
            "hft_tokenizer", "bytes", "sentencepiece", "tiktoken", "tiktoken_encoding", "bos_token_id", "eos_token_id",
            "bos_token", "eos_token", "unk_token", "<s>", "</s>", "<unk>",
        ];
        var run = new FuzzRun("tokenizer-directory");
        string dir = Path.Combine(_dir, "model");
        Directory.CreateDirectory(dir);
        string configPath = Path.Combine(dir, "tokenizer_config.json"), modelPath = Path.Combine(dir, "tokenizer.model");
        foreach (int i in run.Iterations(12_000))
        {
            var m = run.NewMutator(i, extra);
            var seed = seeds[i % seeds.Count];
            m.Log.Add($"seed {seed.Name}");
            byte[] input = JsonMutant(m, seed.Config);
            File.WriteAllBytes(configPath, input);
            byte[] modelBytes = model;
            bool hasModel = seed.HasModel ? !m.Chance(0.05) : m.Chance(0.05);
            if (hasModel && m.Chance(0.1))
            {
                m.Log.Add("model:");
                modelBytes = m.Chance(0.5) ? m.Protobuf(model, 2) : m.Bytes(model, 2);
            }
            if (hasModel) File.WriteAllBytes(modelPath, modelBytes);
            else File.Delete(modelPath);
            if (!hasModel) m.Log.Add("no tokenizer.model");

            long bound = 64L * input.Length + (hasModel ? 256L * modelBytes.Length : 0) + (4 << 20);
            run.Check(i, m, input, ".json", bound, dir, () =>
            {
                var tokenizer = TokenizerFactory.Load(dir);
                CheckIds(tokenizer.BosId, tokenizer.VocabSize, "BOS");
                CheckIds(tokenizer.EosId, tokenizer.VocabSize, "EOS");
                Exercise(tokenizer, m);
            });
        }
        run.Finish();
    }

    /// <summary>
    /// 6,000 mutated Hugging Face tokenizer.json files a run (<see cref="HfBpeTokenizer"/>), from a small byte-level
    /// BPE with Llama 3's Split pattern, individual digits, an NFC normalizer, merges in both spellings, special and
    /// plain added tokens (the plain one with lstrip, rstrip and single_word), Llama 3's post-processor (a BOS template),
    /// and a tokenizer_config.json naming BOS and EOS: JSON edits (70 %: types, kinds, patterns
    /// that backtrack, ids of every size, ...), byte edits (20 %) and truncation (10 %); now and then the config is
    /// mutated instead. Allocation bound: 512 bytes per input byte (the parsed document, the vocabulary's dictionary
    /// and strings, the id table) plus 4 MB.
    /// </summary>
    [Test]
    public void MutatedTokenizerJsonFiles()
    {
        var seedJson = Model.HfBpeTokenizerTests.Small(new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Model.HfBpeTokenizerTests.Llama3Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "Digits", ["individual_digits"] = true },
                Model.HfBpeTokenizerTests.ByteLevelPre(prefix: false, regex: false)),
        });
        seedJson["normalizer"] = new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "NFC" }) };
        // Llama 3's post-processor (BOS from its template) and added-token flags, so that their readers are mutated too.
        seedJson["post_processor"] = Model.HfBpeTokenizerTests.Llama3PostProcessor("<|end|>");
        var tool = seedJson["added_tokens"]!.AsArray()[1]!.AsObject();
        tool["lstrip"] = true; tool["rstrip"] = true; tool["single_word"] = true;
        byte[] seed = Encoding.UTF8.GetBytes(seedJson.ToJsonString());
        byte[] config = Encoding.UTF8.GetBytes("""{"bos_token": "<|end|>", "eos_token": {"content": "<|end|>", "special": true}, "chat_template": "x"}""");
        string[] extra =
        [
            "ByteLevel", "Split", "Digits", "Sequence", "Metaspace", "Regex", "String", "Isolated", "Removed", "BPE", "WordPiece",
            "byte_fallback", "ignore_merges", "NFC", "NFKD", "(a+)+$", "(?<=x)", @"\p{L}", "Ġ", "<|end|>", "bos_token", "content",
            "post_processor", "TemplateProcessing", "SpecialToken", "RobertaProcessing", "add_bos_token", "lstrip", "single_word", "𝑥", "😀",
        ];
        var run = new FuzzRun("tokenizer-json");
        string dir = Path.Combine(_dir, "hf");
        Directory.CreateDirectory(dir);
        string jsonPath = Path.Combine(dir, "tokenizer.json"), configPath = Path.Combine(dir, "tokenizer_config.json");
        foreach (int i in run.Iterations(6_000))
        {
            var m = run.NewMutator(i, extra);
            bool mutateConfig = m.Chance(0.1);
            byte[] target = mutateConfig ? config : seed;
            if (mutateConfig) m.Log.Add("tokenizer_config.json:");
            byte[] input = JsonMutant(m, target);
            File.WriteAllBytes(jsonPath, mutateConfig ? seed : input);
            File.WriteAllBytes(configPath, mutateConfig ? input : config);
            run.Check(i, m, input, mutateConfig ? ".config.json" : ".json", 512L * (seed.Length + input.Length) + (4 << 20), dir, () =>
            {
                var tokenizer = TokenizerFactory.Load(dir);
                CheckIds(tokenizer.BosId, tokenizer.VocabSize, "BOS");
                CheckIds(tokenizer.EosId, tokenizer.VocabSize, "EOS");
                Exercise(tokenizer, m);
            });
        }
        run.Finish();
    }

    /// <summary>A JSON file mutated as JSON (70 %), as bytes (20 %) or truncated (10 %).</summary>
    private static byte[] JsonMutant(Mutator m, byte[] json) => m.Rng.Next(100) switch
    {
        < 70 => m.Json(json, 3),
        < 90 => m.Bytes(json, 3),
        _ => m.Truncate(json, Mutator.Boundaries(json)),
    };

    private static void CheckIds(int? id, int vocabSize, string what)
    {
        if (vocabSize <= 0) throw new InvalidOperationException($"vocabulary size {vocabSize}");
        if (id is int v && (uint)v >= (uint)vocabSize) throw new InvalidOperationException($"{what} id {v} outside the vocabulary of {vocabSize}");
    }

    /// <summary>Encodes every test text (ids inside the vocabulary), decodes them and some random ids.</summary>
    private static void Exercise(ITokenizer tokenizer, Mutator m)
    {
        var ids = new List<int>();
        foreach (string text in Texts)
        {
            ids.Clear();
            tokenizer.Encode(text, ids);
            foreach (int id in ids)
            {
                if ((uint)id >= (uint)tokenizer.VocabSize)
                    throw new InvalidOperationException($"'{text}' encodes to id {id}, outside the vocabulary of {tokenizer.VocabSize}");
            }
            _ = tokenizer.Decode(ids.ToArray());
        }
        var random = new int[16];
        for (int k = 0; k < random.Length; k++) random[k] = m.Rng.Next(tokenizer.VocabSize);
        random[0] = 0;
        random[1] = tokenizer.VocabSize - 1;
        _ = tokenizer.Decode(random);
        foreach (int id in random) _ = tokenizer.Decode([id]);
    }
}
