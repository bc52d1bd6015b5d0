using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>
/// Generation with <see cref="LlamaGenerator"/>: the key/value-cache path gives exactly the tokens of recomputing the
/// model's full forward pass for every token (greedy and sampled, CPU back-end and the ILGPU kernels on ILGPU's CPU
/// accelerator, a random tiny model, the same model trained for a few steps, and the tied GQA reference model);
/// batching prompts of different lengths changes nothing; seeds reproduce; EOS and the length limit stop; bad input
/// fails clearly; <c>hft generate</c> runs.
/// </summary>
[TestFixture]
public sealed class GeneratorTests
{
    private string _random = null!;
    private string _trained = null!;
    private CpuBackend _cpu = null!;

    /// <summary>A random tiny model (bytes tokenizer) and the same model trained for 40 steps on pseudo-English.</summary>
    [OneTimeSetUp]
    public void SetUp()
    {
        _random = TestData.TinyModel(seed: 3);
        string dir = Path.GetDirectoryName(_random)!;
        string data = TestData.WriteText(dir, 40_000, seed: 2);
        _trained = Path.Combine(dir, "trained");
        var (code, _, err) = HftCli.Run("train", "--model", _random, "--data", data, "--method", "fft", "--steps", "40", "--batch", "8",
            "--seq", "64", "--lr", "3e-3", "--out", _trained, "--quiet");
        Assert.That(code, Is.EqualTo(0), err);
        _cpu = new CpuBackend(threads: 2);
    }

    /// <summary>Releases the CPU back-end.</summary>
    [OneTimeTearDown]
    public void TearDown() => _cpu.Dispose();

    private static LlamaModel Load(Backend backend, string dir, int batch = 1, int seq = 1, bool training = false, Func<LlamaConfig, LlamaConfig>? edit = null)
    {
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        if (edit is not null) config = edit(config);
        var model = LlamaModel.Create(backend, config, new LlamaModelOptions(batch, seq, Training: training, Optimizer: false));
        using (var w = SafeTensorsCheckpoint.Open(dir)) model.LoadWeights(w);
        return model;
    }

    private string Model(string which) => which switch
    {
        "random" => _random,
        "trained" => _trained,
        "gqa-tied" => Fixtures.Case("llama-gqa-tied-hft"),
        _ => throw new ArgumentException(which),
    };

    /// <summary>Prompts of different lengths (ids below 96, so they fit every test model's vocabulary).</summary>
    private static int[][] Prompts(params int[] lengths)
    {
        var rng = new Random(lengths.Sum());
        return lengths.Select(n => Enumerable.Range(0, n).Select(_ => 1 + rng.Next(95)).ToArray()).ToArray();
    }

    // ------------------------------------------------------------------ cache = recompute

    [TestCase("random", 0f, 1f)]
    [TestCase("trained", 0f, 1f)]
    [TestCase("trained", 1f, 1f)]
    [TestCase("trained", 0.8f, 0.9f)]
    [TestCase("gqa-tied", 0f, 1f)]
    [TestCase("gqa-tied", 1.2f, 0.95f)]
    public void CachedPathGivesTheTokensOfRecomputingOnTheCpu(string which, float temperature, float topP)
    {
        var prompts = Prompts(5, 1, 12, 5, 8);
        const int newTokens = 24;
        // A training layout with a batch smaller than the prompt count: the recomputing path runs in two batches.
        using var model = Load(_cpu, Model(which), batch: 3, seq: 12 + newTokens, training: true);
        using var generator = new LlamaGenerator(model, maxBatch: 4, maxLength: 40);
        var options = new GenerationOptions(newTokens, temperature, topP, Seed: 11, StopAtEos: false);
        var cached = generator.Generate(prompts, options);
        var recomputed = generator.Generate(prompts, options with { UseKvCache = false });
        Assert.That(cached, Is.EqualTo(recomputed));
        Assert.That(cached.Select(c => c.Length), Is.All.EqualTo(newTokens));
        if (which == "trained" && temperature == 0)
            Assert.That(cached.SelectMany(c => c).Distinct().Count(), Is.GreaterThan(3), "a trained model's greedy text is not one repeated token");
    }

    // Small: ILGPU's CPU accelerator runs the kernels as simulated GPU threads, tens of milliseconds per launch.
    [TestCase("trained", 1f)]
    [TestCase("gqa-tied", 0f)]
    public void CachedPathGivesTheTokensOfRecomputingOnIlgpuKernels(string which, float temperature)
    {
        using var gpu = Devices.Create("ilgpu-cpu");
        var prompts = Prompts(3, 6);
        const int newTokens = 4;
        using var model = Load(gpu, Model(which), batch: 2, seq: 6 + newTokens);
        using var generator = new LlamaGenerator(model, maxBatch: 2, maxLength: 10);
        var options = new GenerationOptions(newTokens, temperature, 0.95f, Seed: 5, StopAtEos: false);
        var cached = generator.Generate(prompts, options);
        Assert.That(generator.Generate(prompts, options with { UseKvCache = false }), Is.EqualTo(cached));
        // And the same tokens as the CPU back-end.
        using var cpuModel = Load(_cpu, Model(which));
        using var cpuGenerator = new LlamaGenerator(cpuModel, 2, 10);
        Assert.That(cpuGenerator.Generate(prompts, options), Is.EqualTo(cached));
    }

    [Test]
    public void CachedPathMatchesRecomputingOnOneTokenPrompts()
    {
        using var model = Load(_cpu, _trained, batch: 2, seq: 20);
        using var generator = new LlamaGenerator(model, 2, 20);
        int[][] prompts = [[ByteTokenizer.BosTokenId], [ByteTokenizer.BosTokenId]];
        var options = new GenerationOptions(19, 1f, 1f, Seed: 3, StopAtEos: false);
        var cached = generator.Generate(prompts, options);
        Assert.That(generator.Generate(prompts, options with { UseKvCache = false }), Is.EqualTo(cached));
        Assert.That(cached[0], Is.Not.EqualTo(cached[1]), "the same prompt twice draws from two streams");
    }

    // ------------------------------------------------------------------ batching and seeds

    [TestCase(0f)]
    [TestCase(1f)]
    public void BatchOfDifferentLengthsEqualsOneByOne(float temperature)
    {
        var prompts = Prompts(9, 2, 6, 2, 13, 6);
        using var model = Load(_cpu, _trained);
        using var generator = new LlamaGenerator(model, maxBatch: 6, maxLength: 40);
        var options = new GenerationOptions(20, temperature, 0.9f, Seed: 21, StopAtEos: false);
        var batched = generator.Generate(prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            // Prompt i draws from stream i of the seed: alone, it is put at position i of a list of placeholders.
            var alone = temperature == 0
                ? generator.Generate([prompts[i]], options)[0]
                : generator.Generate(Enumerable.Range(0, i + 1).Select(j => j == i ? prompts[i] : [1]).ToArray(), options)[i];
            Assert.That(alone, Is.EqualTo(batched[i]), $"prompt {i}");
        }
        using var small = new LlamaGenerator(model, maxBatch: 4, maxLength: 40);
        Assert.That(small.Generate(prompts, options), Is.EqualTo(batched), "in batches of 4 and 2");
    }

    [Test]
    public void SamplingIsReproducibleFromTheSeedAndAnotherSeedDiffers()
    {
        var prompts = Prompts(6, 3);
        using var model = Load(_cpu, _trained);
        using var generator = new LlamaGenerator(model, 2, 48);
        var options = new GenerationOptions(40, 1f, 1f, Seed: 7, StopAtEos: false);
        var first = generator.Generate(prompts, options);
        Assert.That(generator.Generate(prompts, options), Is.EqualTo(first));
        using (var other = new LlamaGenerator(model, 2, 48)) Assert.That(other.Generate(prompts, options), Is.EqualTo(first));
        Assert.That(generator.Generate(prompts, options with { Seed = 8 }), Is.Not.EqualTo(first));
        var greedy = generator.Generate(prompts, options with { Temperature = 0 });
        Assert.That(generator.Generate(prompts, options with { Temperature = 0, Seed = 8 }), Is.EqualTo(greedy), "greedy ignores the seed");
    }

    // ------------------------------------------------------------------ stopping

    [TestCase(true)]
    [TestCase(false)]
    public void EosStopsASequenceAndOnlyWhenAsked(bool useCache)
    {
        var prompts = Prompts(5, 3);
        using var free = Load(_cpu, _trained, seq: 40);
        int[][] unstopped;
        using (var g = new LlamaGenerator(free, 2, 40)) unstopped = g.Generate(prompts, new GenerationOptions(30, StopAtEos: false));
        // Make the token the first sequence greedily generates 4th the model's EOS: it must stop right after it.
        int eos = unstopped[0][3];
        using var model = Load(_cpu, _trained, seq: 40, edit: c => c with { EosTokenId = eos });
        using var generator = new LlamaGenerator(model, 2, 40);
        var stopped = generator.Generate(prompts, new GenerationOptions(30, UseKvCache: useCache));
        for (int i = 0; i < prompts.Length; i++)
        {
            int first = Array.IndexOf(unstopped[i], eos);
            var want = first < 0 ? unstopped[i] : unstopped[i][..(first + 1)];
            Assert.That(stopped[i], Is.EqualTo(want), $"prompt {i}");
        }
        Assert.That(stopped[0], Has.Length.LessThanOrEqualTo(4));
        Assert.That(generator.Generate(prompts, new GenerationOptions(30, StopAtEos: false, UseKvCache: useCache)), Is.EqualTo(unstopped));
    }

    /// <summary>Ids beside config.json's EOS end a sequence too (the tokenizer's EOS, Llama 3's &lt;|eot_id|&gt;).</summary>
    [Test]
    public void StopIdsEndASequenceLikeEos()
    {
        var prompts = Prompts(5, 3);
        using var model = Load(_cpu, _trained, seq: 40, edit: c => c with { EosTokenId = null });
        using var generator = new LlamaGenerator(model, 2, 40);
        var unstopped = generator.Generate(prompts, new GenerationOptions(30));
        int stop = unstopped[1][2];
        var stopped = generator.Generate(prompts, new GenerationOptions(30, StopIds: new HashSet<int> { stop, -5 }));
        for (int i = 0; i < prompts.Length; i++)
        {
            int first = Array.IndexOf(unstopped[i], stop);
            Assert.That(stopped[i], Is.EqualTo(first < 0 ? unstopped[i] : unstopped[i][..(first + 1)]), $"prompt {i}");
        }
        Assert.That(stopped[1], Has.Length.LessThanOrEqualTo(3));
        Assert.That(generator.Generate(prompts, new GenerationOptions(30, StopAtEos: false, StopIds: new HashSet<int> { stop })), Is.EqualTo(unstopped),
            "--ignore-eos ignores them too");
    }

    [Test]
    public void StopTokensComeFromTheTokenizerAndBothConfigsEosLists()
    {
        string dir = Fixtures.TempDirectory();
        var tokenizer = new HftRuntime.Model.Tokenizers.ByteTokenizer();
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"eos_token_id": [5, 7]}""");
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{"eos_token_id": 9, "do_sample": true}""");
        var want = new HashSet<int> { 5, 7, 9 };
        if (tokenizer.EosId is int eos) want.Add(eos);
        Assert.That(StopTokens.Read(dir, tokenizer), Is.EquivalentTo(want));
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{"eos_token_id": "nine"}""");
        Assert.That(() => StopTokens.Read(dir, tokenizer), Throws.InstanceOf<InvalidInputException>().With.Message.Contains("generation_config.json"));
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), "{ not json");
        Assert.That(() => StopTokens.Read(dir, tokenizer), Throws.InstanceOf<InvalidInputException>().With.Message.Contains("generation_config.json"));
    }

    [Test]
    public void ASequenceStopsAtTheGeneratorsLength()
    {
        var prompts = Prompts(3, 10);
        using var model = Load(_cpu, _trained, seq: 11);
        using var generator = new LlamaGenerator(model, 2, 12);
        var options = new GenerationOptions(50, StopAtEos: false);
        var cached = generator.Generate(prompts, options);
        Assert.That(cached.Select(c => c.Length), Is.EqualTo(new[] { 9, 2 }), "prompt + continuation = 12 tokens");
        Assert.That(generator.Generate(prompts, options with { UseKvCache = false }), Is.EqualTo(cached));
    }

    // ------------------------------------------------------------------ text

    [Test]
    public void GreedyAnswersDecodeTheGreedyContinuation()
    {
        var tokenizer = Tokenizers.Load(_trained);
        using var model = Load(_cpu, _trained);
        using var generator = new LlamaGenerator(model, 2, 64);
        string[] prompts = ["The whale", "Captain", "A long night of"];
        var answers = generator.GreedyAnswers(prompts, tokenizer, 16);
        Assert.That(answers, Has.Length.EqualTo(3));
        for (int i = 0; i < prompts.Length; i++)
        {
            var ids = LlamaGenerator.EncodePrompt(prompts[i], tokenizer);
            Assert.That(ids[0], Is.EqualTo(ByteTokenizer.BosTokenId));
            Assert.That(ids.Length, Is.EqualTo(prompts[i].Length + 1));
            var tokens = generator.Generate([ids], GenerationOptions.Greedy(16))[0];
            Assert.That(answers[i], Is.EqualTo(tokenizer.Decode(tokens)));
            Assert.That(answers[i], Is.Not.Empty);
        }
    }

    // ------------------------------------------------------------------ sampling

    [Test]
    public void SampleTokenFollowsTemperatureAndTopP()
    {
        float[] logits = [MathF.Log(0.2f), MathF.Log(0.5f), MathF.Log(0.3f), float.MinValue / 2];
        var rng = new Rng(1);
        Assert.That(LlamaGenerator.SampleToken(logits, 0f, 1f, rng), Is.EqualTo(1), "greedy");
        Assert.That(LlamaGenerator.SampleToken([1f, 3f, 3f], 0f, 1f, rng), Is.EqualTo(1), "ties go to the lowest id");
        Assert.That(Enumerable.Range(0, 200).Select(_ => LlamaGenerator.SampleToken(logits, 1f, 0.4f, rng)), Is.All.EqualTo(1), "top-p 0.4 keeps only the best");

        int[] Counts(float t, float p)
        {
            var counts = new int[logits.Length];
            for (int i = 0; i < 20000; i++) counts[LlamaGenerator.SampleToken(logits, t, p, rng)]++;
            return counts;
        }
        var full = Counts(1f, 1f);
        Assert.That(full[0] / 20000.0, Is.EqualTo(0.2).Within(0.015));
        Assert.That(full[1] / 20000.0, Is.EqualTo(0.5).Within(0.015));
        Assert.That(full[2] / 20000.0, Is.EqualTo(0.3).Within(0.015));
        Assert.That(full[3], Is.Zero);
        var nucleus = Counts(1f, 0.7f); // 0.5 + 0.3 reach 0.7: renormalised to 5/8 and 3/8
        Assert.That(nucleus[0] + nucleus[3], Is.Zero);
        Assert.That(nucleus[1] / 20000.0, Is.EqualTo(0.625).Within(0.015));
        var cold = Counts(0.5f, 1f); // probabilities squared: 0.04, 0.25, 0.09 over 0.38
        Assert.That(cold[1] / 20000.0, Is.EqualTo(0.25 / 0.38).Within(0.015));
        Assert.Throws<InvalidOperationException>(() => LlamaGenerator.SampleToken([0f, float.NaN], 1f, 1f, rng));
    }

    // ------------------------------------------------------------------ memory and bad input

    [Test]
    public void TheGeneratorUsesTheModelsWeightsAndOwnsOnlyItsCache()
    {
        using var model = Load(_cpu, _random);
        var c = model.Config;
        long before = model.Arena.ReservedBytes;
        using var generator = new LlamaGenerator(model, 3, 50);
        long cache = 2L * c.NumHiddenLayers * 3 * 50 * c.NumKeyValueHeads * c.HeadDim * sizeof(float);
        long weights = (model.Parameters.TrainableCount + model.Parameters.FrozenCount) * sizeof(float);
        Assert.That(generator.ArenaBytes, Is.GreaterThanOrEqualTo(cache));
        Assert.That(generator.ArenaBytes, Is.LessThan(cache + weights), "no copy of the weights");
        Assert.That(model.Arena.ReservedBytes, Is.EqualTo(before));
        var w = model.DownloadWeights("model.layers.0.self_attn.q_proj.weight");
        generator.Generate(Prompts(4), new GenerationOptions(8));
        Assert.That(model.DownloadWeights("model.layers.0.self_attn.q_proj.weight"), Is.EqualTo(w));
    }

    [Test]
    public void BadInputFailsClearly()
    {
        using var model = Load(_cpu, _random, seq: 8);
        using var generator = new LlamaGenerator(model, 2, 10);
        var ok = new GenerationOptions(4);
        Assert.That(() => generator.Generate([[]], ok), Throws.ArgumentException.With.Message.Contains("prompt 0 is empty"));
        Assert.That(() => generator.Generate([[1, 2], new int[10]], ok), Throws.ArgumentException.With.Message.Contains("prompt 1 has 10 tokens"));
        Assert.That(() => generator.Generate([[1, 300]], ok), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("vocabulary"));
        Assert.That(() => generator.Generate([[1]], new GenerationOptions(0)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("new tokens"));
        Assert.That(() => generator.Generate([[1]], new GenerationOptions(4, Temperature: -1)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("temperature"));
        Assert.That(() => generator.Generate([[1]], new GenerationOptions(4, TopP: 0)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("top-p"));
        Assert.That(() => generator.Generate([[1]], new GenerationOptions(4, TopP: 1.5f)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("top-p"));
        Assert.That(() => generator.Generate([[1, 2, 3, 4, 5, 6]], new GenerationOptions(4, UseKvCache: false)),
            Throws.ArgumentException.With.Message.Contains("laid out for 8"));
        Assert.That(generator.Generate([[1, 2, 3, 4, 5]], new GenerationOptions(4, UseKvCache: false))[0], Has.Length.EqualTo(4), "fits: 8 tokens fed at most");
        Assert.That(generator.Generate([], ok), Is.Empty);
        Assert.Throws<ArgumentOutOfRangeException>(() => new LlamaGenerator(model, 0, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LlamaGenerator(model, 1, 1));
    }

    // ------------------------------------------------------------------ command line

    [Test]
    public void GenerateCommandPrintsTheContinuation()
    {
        var (code, stdout, stderr) = HftCli.Run("generate", "--model", _trained, "--prompt", "The whale", "--max-tokens", "16", "--temperature", "0", "--device", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        var tokenizer = Tokenizers.Load(_trained);
        using var model = Load(_cpu, _trained);
        using var generator = new LlamaGenerator(model, 1, 64);
        Assert.That(stdout, Is.EqualTo(generator.GreedyAnswers(["The whale"], tokenizer, 16)[0] + Environment.NewLine));

        var sampled = HftCli.Run("generate", "--model", _trained, "--prompt", "The whale", "--max-tokens", "12", "--seed", "4", "--device", "cpu");
        var again = HftCli.Run("generate", "--model", _trained, "--prompt", "The whale", "--max-tokens", "12", "--seed", "4", "--device", "cpu", "--no-cache");
        Assert.That(sampled.Code, Is.EqualTo(0), sampled.Err);
        Assert.That(again.Out, Is.EqualTo(sampled.Out), "the default sampling, with and without the cache");
    }

    [TestCase("--prompt", "", "--prompt is empty")]
    [TestCase("--max-tokens", "0", "--max-tokens must be positive")]
    [TestCase("--temperature", "-0.5", "--temperature must be")]
    [TestCase("--top-p", "0", "--top-p must lie in (0, 1]")]
    [TestCase("--top-p", "1.5", "--top-p must lie in (0, 1]")]
    [TestCase("--model", "missing", "model directory not found")]
    public void GenerateCommandRejectsBadInput(string option, string value, string message)
    {
        var args = new Dictionary<string, string> { ["--model"] = _random, ["--prompt"] = "Hello", ["--device"] = "cpu" };
        args[option] = option == "--model" ? Path.Combine(Path.GetTempPath(), "hft-no-such-model-" + Guid.NewGuid().ToString("N")) : value;
        var (code, _, stderr) = HftCli.Run(["generate", .. args.SelectMany(kv => new[] { kv.Key, kv.Value })]);
        Assert.That(code, Is.EqualTo(2), stderr);
        Assert.That(stderr, Does.Contain(message));
    }

    [Test]
    public void GenerateCommandKeepsToTheModelsContext()
    {
        string dir = TestData.TinyModel(seed: 5);
        string configPath = Path.Combine(dir, "config.json");
        File.WriteAllText(configPath, (LlamaConfig.Load(configPath) with { MaxPositionEmbeddings = 16 }).ToJson());
        var (code, _, stderr) = HftCli.Run("generate", "--model", dir, "--prompt", new string('a', 15), "--device", "cpu");
        Assert.That(code, Is.EqualTo(2), stderr);
        Assert.That(stderr, Does.Contain("the prompt has 16 tokens").And.Contain("max_position_embeddings"));
        // BOS + 10 bytes leave room for 5 new tokens of the 64 asked for.
        var run = HftCli.Run("generate", "--model", dir, "--prompt", new string('a', 10), "--temperature", "0", "--ignore-eos", "--device", "cpu");
        Assert.That(run.Code, Is.EqualTo(0), run.Err);
        using var model = Load(_cpu, dir);
        using var generator = new LlamaGenerator(model, 1, 16);
        var ids = LlamaGenerator.EncodePrompt(new string('a', 10), new ByteTokenizer());
        var tokens = generator.Generate([ids], new GenerationOptions(64, StopAtEos: false))[0];
        Assert.That(tokens, Has.Length.EqualTo(5));
        Assert.That(run.Out, Is.EqualTo(new ByteTokenizer().Decode(tokens) + Environment.NewLine));
    }
}
