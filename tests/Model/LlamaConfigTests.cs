using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Model;
using HftRuntime.Runtime;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

[TestFixture]
public class LlamaConfigTests
{
    private const string Source = "test-config.json";

    private static string FixtureDir(string model) => Path.Combine(TestContext.CurrentContext.TestDirectory, "fixtures", model);

    /// <summary>A small valid config (transformers 4 style) with some fields replaced or removed (null value = remove).</summary>
    private static string Json(params (string Key, JsonNode? Value)[] changes)
    {
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["model_type"] = "llama",
            ["vocab_size"] = 96,
            ["hidden_size"] = 64,
            ["intermediate_size"] = 160,
            ["num_hidden_layers"] = 2,
            ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2,
            ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = 10000.0,
            ["max_position_embeddings"] = 64,
        };
        foreach (var (key, value) in changes)
        {
            if (value is null) root.Remove(key);
            else root[key] = value;
        }
        return root.ToJsonString();
    }

    private static LlamaConfig Parse(params (string Key, JsonNode? Value)[] changes) => LlamaConfig.Parse(Json(changes), Source);

    private static JsonNode Node(string json) => JsonNode.Parse(json)!;

    // ---------------------------------------------------------------- fixtures and forms

    [Test]
    public void MhaFixtureParses()
    {
        var c = LlamaConfig.Load(Path.Combine(FixtureDir("llama-mha"), "config.json"));
        Assert.That(c.VocabSize, Is.EqualTo(96));
        Assert.That(c.HiddenSize, Is.EqualTo(64));
        Assert.That(c.IntermediateSize, Is.EqualTo(160));
        Assert.That(c.NumHiddenLayers, Is.EqualTo(2));
        Assert.That(c.NumAttentionHeads, Is.EqualTo(4));
        Assert.That(c.NumKeyValueHeads, Is.EqualTo(4));
        Assert.That(c.HeadDim, Is.EqualTo(16));
        Assert.That(c.RmsNormEps, Is.EqualTo(1e-5));
        Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
        Assert.That(c.RopeScaling, Is.Null);
        Assert.That(c.MaxPositionEmbeddings, Is.EqualTo(64));
        Assert.That(c.TieWordEmbeddings, Is.False);
        Assert.That(c.BosTokenId, Is.EqualTo(1));
        Assert.That(c.EosTokenId, Is.EqualTo(2));
        Assert.That(c.InitializerRange, Is.EqualTo(0.02));
        Assert.That(c.ModelType, Is.EqualTo("llama"));
        Assert.That(c.SourceName, Does.EndWith("config.json"));
        Assert.That(c.GetSourceJson()!["transformers_version"]!.GetValue<string>(), Is.EqualTo("5.17.0"));
    }

    [Test]
    public void GqaTiedFixtureParses()
    {
        var c = LlamaConfig.Load(FixtureDir("llama-gqa-tied-hft")); // a directory means its config.json
        Assert.That(c.NumHiddenLayers, Is.EqualTo(3));
        Assert.That(c.NumAttentionHeads, Is.EqualTo(4));
        Assert.That(c.NumKeyValueHeads, Is.EqualTo(2));
        Assert.That(c.HeadDim, Is.EqualTo(16));
        Assert.That(c.HasExplicitHeadDim, Is.True);
        Assert.That(c.TieWordEmbeddings, Is.True);
        Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
        Assert.That(c.RmsNormEps, Is.EqualTo(1e-5));
    }

    [Test]
    public void DefaultsFollowHuggingFace()
    {
        var c = Parse(("num_key_value_heads", null), ("rms_norm_eps", null), ("rope_theta", null),
            ("max_position_embeddings", null), ("model_type", null));
        Assert.That(c.NumKeyValueHeads, Is.EqualTo(4));
        Assert.That(c.HeadDim, Is.EqualTo(16));
        Assert.That(c.HasExplicitHeadDim, Is.False);
        Assert.That(c.RmsNormEps, Is.EqualTo(1e-6));
        Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
        Assert.That(c.RopeScaling, Is.Null);
        Assert.That(c.MaxPositionEmbeddings, Is.EqualTo(2048));
        Assert.That(c.TieWordEmbeddings, Is.False);
        Assert.That(c.BosTokenId, Is.EqualTo(1));
        Assert.That(c.EosTokenId, Is.EqualTo(2));
        Assert.That(c.InitializerRange, Is.EqualTo(0.02));
        Assert.That(c.ModelType, Is.EqualTo("llama"));
    }

    [Test]
    public void TopLevelRopeThetaForm()
    {
        var c = Parse(("rope_theta", 500000.0), ("rope_scaling", null), ("pretraining_tp", 2));
        Assert.That(c.RopeTheta, Is.EqualTo(500000.0));
        Assert.That(c.RopeScaling, Is.Null);
        var v5 = Parse(("rope_theta", null), ("rope_parameters", Node("""{"rope_type": "default", "rope_theta": 500000.0}""")));
        Assert.That(v5, Is.EqualTo(c));
        var explicitNull = LlamaConfig.Parse(Json().Replace("\"rope_theta\":10000", "\"rope_scaling\":null,\"rope_theta\":250000"), Source);
        Assert.That(explicitNull.RopeTheta, Is.EqualTo(250000.0));
    }

    [Test]
    public void TokenIdsAcceptIntegersListsAndNull()
    {
        var c = Parse(("bos_token_id", 128000), ("eos_token_id", Node("[128001, 128008, 128009]")));
        Assert.That(c.BosTokenId, Is.EqualTo(128000));
        Assert.That(c.EosTokenId, Is.EqualTo(128001));
        var written = JsonNode.Parse(c.ToJson())!;
        Assert.That(written["eos_token_id"]!.ToJsonString(), Is.EqualTo("[128001,128008,128009]"));

        var none = LlamaConfig.Parse(Json().Replace("{", "{\"bos_token_id\":null,\"eos_token_id\":[],"), Source);
        Assert.That(none.BosTokenId, Is.Null);
        Assert.That(none.EosTokenId, Is.Null);
        Assert.That(JsonNode.Parse(none.ToJson())!["bos_token_id"], Is.Null);
    }

    // Llama 3.1 8B settings.
    private const string Llama3Legacy =
        """{"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}""";

    private const string Llama3V5 =
        """{"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 500000.0, "rope_type": "llama3"}""";

    private static LlamaConfig Llama31(string form) => form switch
    {
        "transformers4" => Parse(("hidden_size", 4096), ("num_attention_heads", 32), ("num_key_value_heads", 8),
            ("max_position_embeddings", 131072), ("rope_theta", 500000.0), ("rope_scaling", Node(Llama3Legacy))),
        "transformers4-type" => Parse(("hidden_size", 4096), ("num_attention_heads", 32), ("num_key_value_heads", 8),
            ("max_position_embeddings", 131072), ("rope_theta", 500000.0),
            ("rope_scaling", Node(Llama3Legacy.Replace("\"rope_type\"", "\"type\"")))),
        "transformers5" => Parse(("hidden_size", 4096), ("num_attention_heads", 32), ("num_key_value_heads", 8),
            ("max_position_embeddings", 131072), ("rope_theta", null), ("rope_parameters", Node(Llama3V5))),
        _ => throw new ArgumentException(form),
    };

    [TestCase("transformers4")]
    [TestCase("transformers4-type")]
    [TestCase("transformers5")]
    public void Llama3ScalingIsReadInEveryForm(string form)
    {
        var c = Llama31(form);
        Assert.That(c.HeadDim, Is.EqualTo(128));
        Assert.That(c.RopeTheta, Is.EqualTo(500000.0));
        Assert.That(c.RopeScaling, Is.EqualTo(new Llama3RopeScaling(8.0, 1.0, 4.0, 8192)));
    }

    [Test]
    public void Llama3OriginalContextDefaultsToMaxPositions()
    {
        var c = Parse(("rope_theta", null), ("rope_parameters",
            Node("""{"factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "rope_theta": 500000, "rope_type": "llama3"}""")));
        Assert.That(c.RopeScaling!.OriginalMaxPositionEmbeddings, Is.EqualTo(64));
    }

    /// <summary>Hugging Face's default inverse frequency, in double precision.</summary>
    private static double ReferenceInvFreq(double theta, int i, int dim) => 1.0 / Math.Pow(theta, 2.0 * i / dim);

    /// <summary>Hugging Face's _compute_llama3_parameters for one frequency, in double precision.</summary>
    private static double ReferenceLlama3(double invFreq, double factor, double low, double high, double oldContext)
    {
        double lowFreqWavelen = oldContext / low;
        double highFreqWavelen = oldContext / high;
        double wavelen = 2 * Math.PI / invFreq;
        double invFreqLlama = wavelen > lowFreqWavelen ? invFreq / factor : invFreq;
        double smooth = (oldContext / wavelen - low) / (high - low);
        double smoothed = (1 - smooth) * invFreqLlama / factor + smooth * invFreqLlama;
        bool medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
        return medium ? smoothed : invFreqLlama;
    }

    [TestCase("transformers4")]
    [TestCase("transformers5")]
    public void Llama3InverseFrequenciesMatchTheReferenceFormula(string form)
    {
        var c = Llama31(form);
        float[] scaled = c.RopeInverseFrequencies();
        float[] plain = (c with { RopeScaling = null }).RopeInverseFrequencies();
        Assert.That(scaled, Has.Length.EqualTo(64));

        // Wavelength 2*pi*500000^(i/64): below 2048 (high frequency) up to i = 28, above 8192 (low) from i = 35.
        int high = 10, medium = 31, low = 50;
        double Wavelen(int i) => 2 * Math.PI / ReferenceInvFreq(500000, i, 128);
        Assert.That(Wavelen(high), Is.LessThan(2048));
        Assert.That(Wavelen(28), Is.LessThan(2048));
        Assert.That(Wavelen(29), Is.GreaterThan(2048));
        Assert.That(Wavelen(medium), Is.InRange(2048, 8192));
        Assert.That(Wavelen(34), Is.LessThan(8192));
        Assert.That(Wavelen(35), Is.GreaterThan(8192));
        Assert.That(Wavelen(low), Is.GreaterThan(8192));

        // High frequencies are untouched, low ones divided by the factor (exact in float32: 8 is a power of two).
        Assert.That(scaled[0], Is.EqualTo(1f));
        Assert.That(scaled[high], Is.EqualTo(plain[high]));
        Assert.That(scaled[low], Is.EqualTo(plain[low] / 8f));
        Assert.That(scaled[medium], Is.Not.EqualTo(plain[medium]));
        Assert.That(scaled[medium], Is.InRange(plain[medium] / 8f, plain[medium]));

        for (int i = 0; i < 64; i++)
        {
            double reference = ReferenceLlama3(ReferenceInvFreq(500000, i, 128), 8, 1, 4, 8192);
            Assert.That(scaled[i], Is.EqualTo(reference).Within(1e-4).Percent, $"index {i}");
            Assert.That(plain[i], Is.EqualTo(ReferenceInvFreq(500000, i, 128)).Within(1e-4).Percent, $"index {i}");
        }

    }

    [Test]
    public void DefaultInverseFrequenciesAreTheFloat32Formula()
    {
        var c = Parse();
        float[] inv = c.RopeInverseFrequencies();
        Assert.That(inv, Has.Length.EqualTo(8));
        for (int i = 0; i < inv.Length; i++)
        {
            float exponent = (float)(2 * i) / 16f;
            Assert.That(inv[i], Is.EqualTo(1f / (float)Math.Pow(10000f, exponent)), $"index {i}");
            Assert.That(inv[i], Is.EqualTo(ReferenceInvFreq(10000, i, 16)).Within(1e-4).Percent, $"index {i}");
        }
        Assert.That(inv[0], Is.EqualTo(1f));
        Assert.That(inv[4], Is.EqualTo(0.01f));
    }

    [Test]
    public void RopeTablesUseFloat32AnglesAndDoubleTrigonometry()
    {
        var c = LlamaConfig.Load(FixtureDir("llama-mha"));
        const int positions = 64;
        var cos = new float[positions * 8];
        var sin = new float[positions * 8];
        c.RopeTables(positions, cos, sin);
        float[] inv = c.RopeInverseFrequencies();
        for (int i = 0; i < 8; i++)
        {
            Assert.That(cos[i], Is.EqualTo(1f));
            Assert.That(sin[i], Is.EqualTo(0f));
        }
        foreach (int pos in new[] { 1, 37, 63 })
        {
            for (int i = 0; i < 8; i++)
            {
                float angle = pos * inv[i];
                Assert.That(cos[pos * 8 + i], Is.EqualTo((float)Math.Cos(angle)), $"cos pos {pos} i {i}");
                Assert.That(sin[pos * 8 + i], Is.EqualTo((float)Math.Sin(angle)), $"sin pos {pos} i {i}");
                double exact = pos * ReferenceInvFreq(10000, i, 16);
                Assert.That(cos[pos * 8 + i], Is.EqualTo(Math.Cos(exact)).Within(5e-5));
                Assert.That(sin[pos * 8 + i], Is.EqualTo(Math.Sin(exact)).Within(5e-5));
            }
        }
        Assert.Throws<ArgumentException>(() => c.RopeTables(positions, new float[10], sin));
    }

    // ---------------------------------------------------------------- rejected configs

    private static IEnumerable<TestCaseData> Rejected()
    {
        TestCaseData Case(string name, string json, params string[] expected) =>
            new TestCaseData(json, expected).SetName("Rejected_" + name);

        string llama3 = Llama3Legacy;
        yield return Case("RopeLinear", Json(("rope_scaling", Node("""{"rope_type": "linear", "factor": 2.0}"""))), "rope_scaling.rope_type", "linear");
        yield return Case("RopeDynamicLegacyType", Json(("rope_scaling", Node("""{"type": "dynamic", "factor": 2.0}"""))), "rope_scaling.type", "dynamic");
        yield return Case("RopeYarn", Json(("rope_parameters", Node("""{"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}"""))), "rope_parameters.rope_type", "yarn");
        yield return Case("RopeLongrope", Json(("rope_parameters", Node("""{"rope_type": "longrope", "rope_theta": 10000.0}"""))), "rope_parameters.rope_type", "longrope");
        yield return Case("AttentionBias", Json(("attention_bias", true)), "attention_bias");
        yield return Case("MlpBias", Json(("mlp_bias", true)), "mlp_bias");
        yield return Case("HiddenActGelu", Json(("hidden_act", "gelu")), "hidden_act", "gelu");
        yield return Case("PartialRotary", Json(("partial_rotary_factor", 0.5)), "partial_rotary_factor");
        yield return Case("PartialRotaryInRopeParameters",
            Json(("rope_parameters", Node("""{"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}"""))),
            "rope_parameters.partial_rotary_factor");
        yield return Case("ModelType", Json(("model_type", "mistral")), "model_type", "mistral");
        yield return Case("AttentionDropout", Json(("attention_dropout", 0.1)), "attention_dropout");
        yield return Case("Quantized", Json(("quantization_config", Node("""{"quant_method": "bitsandbytes"}"""))), "quantization_config");
        foreach (var field in new[] { "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads" })
            yield return Case("Missing_" + field, Json((field, null)), field, "missing");
        yield return Case("NullRequired", Json().Replace("\"vocab_size\":96", "\"vocab_size\":null"), "vocab_size", "missing");
        yield return Case("ZeroVocab", Json(("vocab_size", 0)), "vocab_size", "positive");
        yield return Case("NegativeHidden", Json(("hidden_size", -64)), "hidden_size");
        yield return Case("ZeroIntermediate", Json(("intermediate_size", 0)), "intermediate_size", "positive");
        yield return Case("ZeroLayers", Json(("num_hidden_layers", 0)), "num_hidden_layers", "positive");
        yield return Case("ZeroHeads", Json(("num_attention_heads", 0)), "num_attention_heads", "positive");
        yield return Case("ZeroKvHeads", Json(("num_key_value_heads", 0)), "num_key_value_heads", "positive");
        yield return Case("ZeroHeadDim", Json(("head_dim", 0)), "head_dim", "positive");
        yield return Case("ZeroMaxPositions", Json(("max_position_embeddings", 0)), "max_position_embeddings");
        yield return Case("HiddenNotDivisible", Json(("hidden_size", 66)), "hidden_size", "num_attention_heads", "divisible");
        yield return Case("HeadsNotMultipleOfKv", Json(("num_key_value_heads", 3)), "num_attention_heads", "num_key_value_heads");
        yield return Case("OddHeadDim", Json(("head_dim", 15)), "head_dim", "odd");
        yield return Case("OddDerivedHeadDim", Json(("hidden_size", 60)), "head_dim", "odd");
        yield return Case("ZeroEps", Json(("rms_norm_eps", 0.0)), "rms_norm_eps");
        yield return Case("NegativeTheta", Json(("rope_theta", -1.0)), "rope_theta");
        yield return Case("StringSize", Json(("vocab_size", "96")), "vocab_size", "integer");
        yield return Case("FractionalSize", Json(("hidden_size", 64.5)), "hidden_size", "integer");
        yield return Case("StringBool", Json(("tie_word_embeddings", "yes")), "tie_word_embeddings");
        yield return Case("StringEps", Json(("rms_norm_eps", "1e-5")), "rms_norm_eps", "number");
        yield return Case("RopeScalingNotObject", Json(("rope_scaling", "llama3")), "rope_scaling", "object");
        yield return Case("Llama3MissingFactor", Json(("rope_scaling", Node(llama3.Replace("\"factor\": 8.0,", "")))), "rope_scaling.factor", "missing");
        yield return Case("Llama3MissingLow", Json(("rope_scaling", Node(llama3.Replace("\"low_freq_factor\": 1.0,", "")))), "rope_scaling.low_freq_factor");
        yield return Case("Llama3HighNotAboveLow", Json(("rope_scaling", Node(llama3.Replace("\"high_freq_factor\": 4.0", "\"high_freq_factor\": 1.0")))), "high_freq_factor", "low_freq_factor");
        yield return Case("Llama3ZeroFactor", Json(("rope_scaling", Node(llama3.Replace("\"factor\": 8.0", "\"factor\": 0")))), "factor", "positive");
        yield return Case("ThetaConflict",
            Json(("rope_parameters", Node("""{"rope_type": "default", "rope_theta": 500000.0}"""))), "rope_theta", "rope_parameters.rope_theta", "disagree");
        yield return Case("ScalingConflict",
            Json(("rope_scaling", Node(llama3)), ("rope_parameters", Node("""{"rope_type": "default", "rope_theta": 10000.0}"""))),
            "rope_scaling", "rope_parameters", "disagree");
        yield return Case("PerLayerRope", Json(("rope_parameters", Node("""{"full_attention": {"rope_type": "default"}}"""))), "rope_parameters.full_attention");
        yield return Case("MalformedJson", "{\"vocab_size\": 96,", "not valid JSON");
        yield return Case("NotAnObject", "[1, 2, 3]", "not a JSON object");
        yield return Case("DuplicateKey", Json().Replace("{", "{\"vocab_size\":7,"), "not valid JSON");
    }

    [TestCaseSource(nameof(Rejected))]
    public void UnsupportedOrInvalidConfigIsRejected(string json, string[] expected)
    {
        var e = Assert.Throws<InvalidInputException>(() => LlamaConfig.Parse(json, Source))!;
        Assert.That(e.Source, Is.EqualTo(Source));
        Assert.That(e.Message, Does.StartWith(Source + ": "));
        foreach (var text in expected) Assert.That(e.Message, Does.Contain(text));
    }

    [Test]
    public void SwishIsAcceptedAsSilu() => Assert.That(Parse(("hidden_act", "swish")), Is.EqualTo(Parse()));

    [Test]
    public void MissingFileNamesThePath()
    {
        string path = Path.Combine(Path.GetTempPath(), "hft-no-such-dir-" + Guid.NewGuid().ToString("N"), "config.json");
        var e = Assert.Throws<InvalidInputException>(() => LlamaConfig.Load(path))!;
        Assert.That(e.Message, Does.Contain(path));
    }

    // ---------------------------------------------------------------- writing

    [TestCase("llama-mha")]
    [TestCase("llama-gqa-tied-hft")]
    public void FixtureRoundTripsThroughToJson(string model)
    {
        var original = LlamaConfig.Load(FixtureDir(model));
        string json = original.ToJson();
        var again = LlamaConfig.Parse(json, "written");
        Assert.That(again, Is.EqualTo(original));
        Assert.That(again.ToJson(), Is.EqualTo(json));

        var root = JsonNode.Parse(json)!.AsObject();
        Assert.That(root["architectures"]!.ToJsonString(), Is.EqualTo("[\"LlamaForCausalLM\"]"));
        Assert.That(root["model_type"]!.GetValue<string>(), Is.EqualTo("llama"));
        Assert.That(root["torch_dtype"]!.GetValue<string>(), Is.EqualTo("float32"));
        Assert.That(root["dtype"]!.GetValue<string>(), Is.EqualTo("float32"));
        Assert.That(root["rope_theta"]!.GetValue<double>(), Is.EqualTo(10000.0));
        Assert.That(root["rope_parameters"]!["rope_theta"]!.GetValue<double>(), Is.EqualTo(10000.0));
        Assert.That(root["rope_parameters"]!["rope_type"]!.GetValue<string>(), Is.EqualTo("default"));
        Assert.That(root.ContainsKey("pad_token_id"), Is.True, "fields the class does not model are kept");
        Assert.That(root["use_cache"]!.GetValue<bool>(), Is.True);
        Assert.That(json, Does.Contain("\"rope_theta\": 10000.0"));
        Assert.That(json, Does.Contain("\"rms_norm_eps\": 1e-05"));
        Assert.That(root.Select(p => p.Key), Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal));
    }

    [Test]
    public void Llama3ScalingIsWrittenInBothForms()
    {
        var c = Llama31("transformers4");
        var root = JsonNode.Parse(c.ToJson())!.AsObject();
        var legacy = root["rope_scaling"]!.AsObject();
        var parameters = root["rope_parameters"]!.AsObject();
        Assert.That(root["rope_theta"]!.GetValue<double>(), Is.EqualTo(500000.0));
        Assert.That(legacy["rope_type"]!.GetValue<string>(), Is.EqualTo("llama3"));
        Assert.That(legacy["factor"]!.GetValue<double>(), Is.EqualTo(8.0));
        Assert.That(legacy["low_freq_factor"]!.GetValue<double>(), Is.EqualTo(1.0));
        Assert.That(legacy["high_freq_factor"]!.GetValue<double>(), Is.EqualTo(4.0));
        Assert.That(legacy["original_max_position_embeddings"]!.GetValue<int>(), Is.EqualTo(8192));
        Assert.That(legacy.ContainsKey("rope_theta"), Is.False);
        Assert.That(parameters["rope_type"]!.GetValue<string>(), Is.EqualTo("llama3"));
        Assert.That(parameters["rope_theta"]!.GetValue<double>(), Is.EqualTo(500000.0));
        Assert.That(parameters["factor"]!.GetValue<double>(), Is.EqualTo(8.0));
        Assert.That(parameters["original_max_position_embeddings"]!.GetValue<int>(), Is.EqualTo(8192));

        Assert.That(LlamaConfig.Parse(c.ToJson(), "written"), Is.EqualTo(c));
        // Each form alone (as transformers 4 or 5 would read it) gives the same config.
        root.Remove("rope_parameters");
        Assert.That(LlamaConfig.Parse(root.ToJsonString(), "v4-only"), Is.EqualTo(c));
        root = JsonNode.Parse(c.ToJson())!.AsObject();
        root.Remove("rope_scaling");
        root.Remove("rope_theta");
        Assert.That(LlamaConfig.Parse(root.ToJsonString(), "v5-only"), Is.EqualTo(c));
    }

    [Test]
    public void ConfigBuiltInCode()
    {
        var c = new LlamaConfig
        {
            VocabSize = 32000,
            HiddenSize = 512,
            IntermediateSize = 1376,
            NumHiddenLayers = 8,
            NumAttentionHeads = 8,
            NumKeyValueHeads = 4,
            MaxPositionEmbeddings = 1024,
            RopeTheta = 500000,
            RopeScaling = new Llama3RopeScaling(8, 1, 4, 8192),
            TieWordEmbeddings = true,
        };
        c.Validate();
        Assert.That(c.HeadDim, Is.EqualTo(64));
        Assert.That(c.GetSourceJson(), Is.Null);
        Assert.That(LlamaConfig.Parse(c.ToJson(), "written"), Is.EqualTo(c));

        var wider = c with { NumAttentionHeads = 16 };
        Assert.That(wider.HeadDim, Is.EqualTo(32), "the derived head width follows the head count");
        Assert.That(wider.NumKeyValueHeads, Is.EqualTo(4));
        var mha = new LlamaConfig { VocabSize = 10, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 1, NumAttentionHeads = 2 };
        Assert.That((mha with { NumAttentionHeads = 4 }).NumKeyValueHeads, Is.EqualTo(4), "kv heads default to the head count");

        var bad = c with { NumAttentionHeads = 3 };
        var e = Assert.Throws<InvalidInputException>(bad.Validate)!;
        Assert.That(e.Message, Does.Contain("hidden_size").And.Contain("LlamaConfig"));
        Assert.Throws<InvalidInputException>(() => bad.ToJson());
        Assert.Throws<InvalidInputException>(() => (c with { NumKeyValueHeads = 3 }).Validate());
    }
}
