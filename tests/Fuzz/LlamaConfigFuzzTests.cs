using System.Text;
using System.Text.Json.Nodes;
using HftRuntime.Model;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Fuzz;

/// <summary>
/// Fuzzing of <see cref="LlamaConfig.Load"/>: mutated copies of the fixtures' config.json and of two configs with
/// Llama 3 RoPE scaling (transformers 4 and 5 spellings). An accepted config must validate, write itself with
/// <see cref="LlamaConfig.ToJson"/> and read that back as an equal config.
/// </summary>
[TestFixture]
public sealed class LlamaConfigFuzzTests
{
    private static readonly string[] Strings =
    [
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "rope_type", "type", "factor",
        "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "partial_rotary_factor",
        "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id", "initializer_range",
        "quantization_config", "attention_dropout", "attention_bias", "mlp_bias", "model_type", "hidden_act", "llama",
        "llama3", "default", "silu", "swish", "gelu", "linear", "dynamic", "yarn", "mistral",
    ];

    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Fixtures.TempDirectory();

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static byte[][] Seeds()
    {
        byte[] mha = File.ReadAllBytes(Path.Combine(Fixtures.Case("llama-mha"), "config.json"));
        byte[] gqa = File.ReadAllBytes(Path.Combine(Fixtures.Case("llama-gqa-tied-hft"), "config.json"));
        var v4 = JsonNode.Parse(mha)!.AsObject();
        v4.Remove("rope_parameters");
        v4["rope_theta"] = 500000.0;
        v4["rope_scaling"] = JsonNode.Parse("""{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32}""");
        v4["eos_token_id"] = JsonNode.Parse("[2, 3]");
        v4["partial_rotary_factor"] = 1.0;
        var v5 = JsonNode.Parse(gqa)!.AsObject();
        v5["rope_parameters"] = JsonNode.Parse("""{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}""");
        v5["bos_token_id"] = null;
        return [mha, gqa, Encoding.UTF8.GetBytes(v4.ToJsonString()), Encoding.UTF8.GetBytes(v5.ToJsonString())];
    }

    /// <summary>
    /// 15,000 mutated configs a run: JSON structural edits (70 %: values of other types, numbers at the edges of int,
    /// long and double such as 1e309, −1, 2^31 and 2^63, deep nesting, duplicate keys, lone surrogate escapes, long
    /// strings, removed members, renamed keys, the names of real fields and RoPE types as keys and values), byte edits
    /// (20 %) and truncation at every boundary (10 %), some followed by a byte edit. Allocation bound: 64 bytes per
    /// input byte plus 1 MB: the text is held as UTF-16 (2×), parsed into a JsonNode tree (about 10× for short
    /// tokens), written by ToJson and parsed again, and the rotary frequencies of an accepted config are computed
    /// (head_dim/2 floats, which the test only does for head_dim ≤ 65536: a config may describe a model far larger
    /// than itself; the weights justify that memory, not config.json).
    /// </summary>
    [Test]
    public void MutatedConfigs()
    {
        var seeds = Seeds();
        var boundaries = seeds.Select(s => Mutator.Boundaries(s)).ToArray();
        var run = new FuzzRun("llama-config");
        string path = Path.Combine(_dir, "config.json");
        foreach (int i in run.Iterations(15_000))
        {
            var m = run.NewMutator(i, Strings);
            int s = m.Rng.Next(seeds.Length);
            m.Log.Add($"seed {s}");
            int kind = m.Rng.Next(100);
            byte[] input = kind switch
            {
                < 70 => m.Json(seeds[s], 3),
                < 90 => m.Bytes(seeds[s], 3),
                _ => m.Truncate(seeds[s], boundaries[s]),
            };
            if (m.Chance(0.1)) input = m.Bytes(input, 1);
            File.WriteAllBytes(path, input);
            run.Check(i, m, input, ".json", 64L * input.Length + (1 << 20), path, () =>
            {
                var config = m.Chance(0.5) ? LlamaConfig.Load(path) : LlamaConfig.Load(_dir);
                config.Validate();
                string json = config.ToJson();
                var again = LlamaConfig.Parse(json, path);
                if (!again.Equals(config))
                    throw new InvalidOperationException($"ToJson does not round-trip: {config} became {again}");
                _ = config.GetHashCode();
                _ = config.ToString();
                _ = config.GetSourceJson();
                if (config.HeadDim <= 65536 && config.RopeInverseFrequencies().Length != config.HeadDim / 2)
                    throw new InvalidOperationException("wrong number of rotary frequencies");
            });
        }
        run.Finish();
    }
}
