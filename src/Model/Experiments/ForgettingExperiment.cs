using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Model.Training;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Model.Experiments;

/// <summary>The sizes of a forgetting experiment.</summary>
/// <param name="Name">A label (quick, cpu, gpu).</param>
/// <param name="Base">The base architecture (d, layers, heads, FFN; the vocabulary comes from the tokenizer).</param>
/// <param name="PretrainSteps">Optimizer steps of pretraining on corpus A.</param>
/// <param name="PretrainBatch">Sequences per pretraining batch.</param>
/// <param name="PretrainSeq">Tokens per pretraining sequence.</param>
/// <param name="PretrainLr">Peak pretraining learning rate.</param>
/// <param name="FineTuneSteps">Optimizer steps of fine-tuning on task B (the same for FFT and HFT).</param>
/// <param name="FineTuneBatch">Sequences per fine-tuning batch.</param>
/// <param name="FineTuneSeq">Tokens per fine-tuning sequence.</param>
/// <param name="FineTuneLr">Peak fine-tuning learning rate (the same for FFT and HFT).</param>
/// <param name="ExactMatchPrompts">Held-out task prompts answered greedily.</param>
public sealed record ExperimentScale(string Name, LlamaConfig Base, int PretrainSteps, int PretrainBatch, int PretrainSeq, float PretrainLr,
    int FineTuneSteps, int FineTuneBatch, int FineTuneSeq, float FineTuneLr, int ExactMatchPrompts)
{
    /// <summary>
    /// The scale for a device: a tiny model for --quick (under a minute on two CPU cores), a small one on the CPU (about
    /// five minutes on two cores), a larger one on a GPU (meant for bf16 there: 3000 pretraining steps of 8192 tokens).
    /// </summary>
    public static ExperimentScale For(bool quick, bool gpu, int vocab) => (quick, gpu) switch
    {
        (true, _) => new("quick", Arch(vocab, 128, 2, 4, 344), 600, 16, 128, 3e-3f, 200, 16, 64, 3e-4f, 64),
        (false, false) => new("cpu", Arch(vocab, 256, 4, 4, 688), 1200, 16, 128, 2e-3f, 400, 16, 64, 3e-4f, 128),
        (false, true) => new("gpu", Arch(vocab, 512, 8, 8, 1376), 3000, 32, 256, 1e-3f, 600, 32, 64, 5e-4f, 273),
    };

    /// <summary>
    /// A scale from HFT_DEMO_SCALE = "d,layers,heads,ffn,pretrain steps,batch,seq,lr,fine-tune steps,batch,seq,lr,prompts"
    /// (for exploring sizes; null when the variable is not set).
    /// </summary>
    public static ExperimentScale? FromEnvironment(int vocab)
    {
        if (Environment.GetEnvironmentVariable("HFT_DEMO_SCALE") is not { Length: > 0 } v) return null;
        var x = v.Split(',');
        if (x.Length != 13) throw new ArgumentException("HFT_DEMO_SCALE needs 13 comma-separated values");
        int I(int i) => int.Parse(x[i], CultureInfo.InvariantCulture);
        float F(int i) => float.Parse(x[i], CultureInfo.InvariantCulture);
        return new("custom", Arch(vocab, I(0), I(1), I(2), I(3)), I(4), I(5), I(6), F(7), I(8), I(9), I(10), F(11), I(12));
    }

    private static LlamaConfig Arch(int vocab, int d, int layers, int heads, int ffn) => new()
    {
        VocabSize = vocab, HiddenSize = d, NumHiddenLayers = layers, NumAttentionHeads = heads, IntermediateSize = ffn,
        MaxPositionEmbeddings = 512, RmsNormEps = 1e-5, TieWordEmbeddings = true,
    };
}

/// <summary>The files of the experiment.</summary>
/// <param name="CorpusTrain">Corpus A, training part (plain text or .gz).</param>
/// <param name="CorpusHeldOut">Corpus A, held-out part (for the base perplexity).</param>
/// <param name="TaskTrain">Task B training pairs (SFT JSONL).</param>
/// <param name="TaskHeldOut">Task B held-out pairs (loss and exact match).</param>
/// <param name="Tokenizer">The tokenizer (a SentencePiece model file or "bytes").</param>
public sealed record ExperimentData(string CorpusTrain, string CorpusHeldOut, string TaskTrain, string TaskHeldOut, string Tokenizer);

/// <summary>
/// The paper's central claim, measured: pretrain a base Llama on corpus A (or reuse OUT/base), fine-tune it on task B
/// with full fine-tuning and with Half Fine-Tuning (same steps, learning rate, seed and data order), and compare how much
/// each forgets of A (perplexity on A's held-out part before and after) and how well each learns B (held-out task loss
/// and exact match). forgetting_ratio = (ppl_hft − ppl_before) / (ppl_fft − ppl_before), or null (with a warning) when
/// full fine-tuning did not raise the perplexity. With several seeds (the freeze draw and data order of fine-tuning)
/// every figure is a mean with a sibling "_std", and "forgetting_ratio_seeds" lists each seed's ratio.
/// </summary>
public static class ForgettingExperiment
{
    /// <summary>Runs the experiment into <paramref name="outDir"/>; returns report.json's content (also written there).</summary>
    public static JsonObject Run(Backend backend, ExperimentData data, ExperimentScale scale, string outDir, int seeds,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancel = default, Action<string>? log = null, Precision precision = Precision.Fp32)
    {
        if (seeds < 1) throw new ArgumentOutOfRangeException(nameof(seeds), seeds, "--seeds must be at least 1");
        foreach (var f in new[] { data.CorpusTrain, data.CorpusHeldOut, data.TaskTrain, data.TaskHeldOut })
            if (!File.Exists(f)) throw new InvalidInputException(f, "demo data file not found");
        Directory.CreateDirectory(outDir);
        var clock = Stopwatch.StartNew();
        string baseDir = Path.Combine(outDir, "base");
        var pretrain = EnsureBase(backend, data, scale, baseDir, precision, progress, cancel, log);
        double pplBefore = Perplexity(backend, baseDir, data.CorpusHeldOut, scale);
        log?.Invoke(string.Format(CultureInfo.InvariantCulture, "base: perplexity on A (held out) {0:F2}", pplBefore));

        var perSeed = new List<Dictionary<string, JsonObject>>();
        for (int s = 1; s <= seeds; s++)
        {
            var runs = new Dictionary<string, JsonObject>();
            foreach (var method in new[] { "fft", "hft" })
            {
                string dir = Path.Combine(outDir, seeds == 1 ? method : $"{method}-seed{s}");
                log?.Invoke($"{method} (seed {s}): fine-tuning on {Path.GetFileName(data.TaskTrain)}");
                var request = new FineTuneRequest
                {
                    ModelDirectory = baseDir, DataPath = data.TaskTrain, OutputDirectory = dir, Objective = "sft",
                    Policy = method == "fft" ? FreezePolicy.None : FreezePolicy.Hft((ulong)s),
                    Options = new TrainingOptions
                    {
                        Steps = scale.FineTuneSteps, Batch = scale.FineTuneBatch, Seq = scale.FineTuneSeq, Lr = scale.FineTuneLr,
                        Seed = (ulong)s, EvalEvery = 0, EvalBatches = 4, LogEvery = Math.Max(1, scale.FineTuneSteps / 10),
                    },
                    HeldOutFraction = 0, Precision = precision,
                };
                var result = FineTuning.Run(backend, request, progress, cancel);
                if (result.Training.Cancelled) throw new OperationCanceledException("the demo was interrupted");
                var r = result.Report;
                var eval = Evaluate(backend, dir, data.TaskHeldOut, scale, maxBatches: 0);
                var seen = Evaluate(backend, dir, data.TaskTrain, scale, maxBatches: 1);
                runs[method] = new JsonObject
                {
                    ["base_ppl_after"] = Perplexity(backend, dir, data.CorpusHeldOut, scale),
                    ["task_loss"] = eval.Loss,
                    ["task_exact_match"] = eval.ExactMatch ?? 0.0,
                    ["task_exact_match_train"] = seen.ExactMatch ?? 0.0,
                    ["step_ms_median"] = JsonNumbers.ToDouble(r["step_ms_median"]),
                    ["tokens_per_s"] = JsonNumbers.ToDouble(r["tokens_per_s"]),
                    ["bytes_optimizer"] = (double)r["bytes_optimizer"]!.GetValue<long>(),
                    ["params_trainable"] = (double)r["params_trainable"]!.GetValue<long>(),
                    ["cost_bound"] = JsonNumbers.ToDouble(r["cost_bound"]),
                    ["losses"] = r["losses"]!.DeepClone(),
                    ["answers"] = new JsonArray(eval.Answers.Take(8).Select(a => (JsonNode)new JsonObject
                    {
                        ["prompt"] = a.Prompt, ["reference"] = a.Reference, ["answer"] = a.Answer,
                    }).ToArray()),
                };
                log?.Invoke(string.Format(CultureInfo.InvariantCulture, "{0}: A perplexity {1:F2}, task loss {2:F3}, exact match {3:P1} (held out), {4:P1} (seen in training)",
                    method, JsonNumbers.ToDouble(runs[method]["base_ppl_after"]), eval.Loss, eval.ExactMatch ?? 0, seen.ExactMatch ?? 0));
            }
            perSeed.Add(runs);
        }

        var report = new JsonObject
        {
            ["device"] = backend.DeviceName,
            ["scale"] = scale.Name, ["precision"] = precision.Name(),
            ["model"] = JsonNode.Parse(ModelConfig(baseDir).ToJson()),
            ["seeds"] = seeds,
            ["pretrain"] = pretrain,
            ["fine_tune"] = new JsonObject
            {
                ["data"] = Path.GetFileName(data.TaskTrain), ["steps"] = scale.FineTuneSteps, ["batch"] = scale.FineTuneBatch,
                ["seq"] = scale.FineTuneSeq, ["lr"] = scale.FineTuneLr, ["exact_match_prompts"] = scale.ExactMatchPrompts,
            },
            ["base_ppl_before"] = pplBefore,
        };
        foreach (var method in new[] { "fft", "hft" })
        {
            var o = new JsonObject();
            foreach (var key in new[] { "base_ppl_after", "task_loss", "task_exact_match", "task_exact_match_train", "step_ms_median", "tokens_per_s", "bytes_optimizer", "params_trainable", "cost_bound" })
                Aggregate(o, key, perSeed.Select(r => JsonNumbers.ToDouble(r[method][key])).ToArray(), seeds);
            o["losses"] = perSeed[0][method]["losses"]!.DeepClone();
            o["answers"] = perSeed[0][method]["answers"]!.DeepClone();
            report[method] = o;
        }
        var ratios = perSeed.Select(r => ForgettingRatio(pplBefore, JsonNumbers.ToDouble(r["fft"]["base_ppl_after"]), JsonNumbers.ToDouble(r["hft"]["base_ppl_after"]))).ToArray();
        if (seeds > 1) report["forgetting_ratio_seeds"] = new JsonArray(ratios.Select(x => x is double d ? (JsonNode)d : null).ToArray());
        if (ratios.All(x => x is not null)) Aggregate(report, "forgetting_ratio", ratios.Select(x => x!.Value).ToArray(), seeds);
        else
        {
            report["forgetting_ratio"] = null;
            report["warning"] = "full fine-tuning did not raise the perplexity on A, so there was no forgetting to compare";
        }
        double fftLoss = JsonNumbers.ToDouble(report["fft"]!["task_loss"]), hftLoss = JsonNumbers.ToDouble(report["hft"]!["task_loss"]);
        report["task_loss_ratio_hft_fft"] = hftLoss / fftLoss;
        report["step_time_ratio_hft_fft"] = JsonNumbers.ToDouble(report["hft"]!["step_ms_median"]) / JsonNumbers.ToDouble(report["fft"]!["step_ms_median"]);
        report["goal"] = new JsonObject
        {
            ["forgetting_ratio_at_most"] = 0.5, ["task_loss_within"] = 0.05,
            ["met"] = report["forgetting_ratio"] is JsonNode fr && JsonNumbers.ToDouble(fr) <= 0.5 && hftLoss <= 1.05 * fftLoss,
        };
        report["seconds"] = clock.Elapsed.TotalSeconds;
        File.WriteAllText(Path.Combine(outDir, "report.json"), report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return report;
    }

    /// <summary>(ppl_hft − ppl_before) / (ppl_fft − ppl_before), or null when FFT did not raise the perplexity.</summary>
    public static double? ForgettingRatio(double before, double fft, double hft) => fft - before > 0 ? (hft - before) / (fft - before) : null;

    private static void Aggregate(JsonObject o, string key, double[] values, int seeds)
    {
        double mean = values.Average();
        o[key] = mean;
        if (seeds > 1) o[key + "_std"] = Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Length - 1));
    }

    private static LlamaConfig ModelConfig(string dir) => LlamaConfig.Load(Path.Combine(dir, "config.json"));

    /// <summary>Pretrains the base on A unless OUT/base already holds one of this scale; returns what run.json says of it.</summary>
    private static JsonObject EnsureBase(Backend backend, ExperimentData data, ExperimentScale scale, string baseDir, Precision precision,
        IProgress<TrainingProgress>? progress, CancellationToken cancel, Action<string>? log)
    {
        string marker = Path.Combine(baseDir, "demo_base.json");
        var tokenizer = Tokenizers.Tokenizers.Create(data.Tokenizer);
        var config = scale.Base with { VocabSize = tokenizer.VocabSize, BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId };
        if (File.Exists(marker) && File.Exists(Path.Combine(baseDir, "model.safetensors")))
        {
            var existing = JsonNode.Parse(File.ReadAllText(marker))!.AsObject();
            if (existing["scale"]?.GetValue<string>() == scale.Name && ModelConfig(baseDir) == config)
            {
                log?.Invoke($"base: reusing {baseDir}");
                return existing;
            }
            throw new InvalidInputException(baseDir, $"holds a base of another scale or architecture; remove it or choose another --out");
        }
        string init = baseDir + ".init";
        if (Directory.Exists(init)) Directory.Delete(init, recursive: true);
        Directory.CreateDirectory(init);
        using (var model = LlamaModel.Create(backend, config, new LlamaModelOptions(1, 1, Training: false)))
        {
            model.InitializeWeights(1);
            File.WriteAllText(Path.Combine(init, "config.json"), config.ToJson());
            model.SaveWeights(Path.Combine(init, "model.safetensors"));
        }
        tokenizer.Save(init);
        log?.Invoke(string.Format(CultureInfo.InvariantCulture, "base: pretraining a {0:N0}-parameter Llama on {1} ({2} steps of {3} x {4} tokens, {5})",
            LlamaModel.ParameterSpecs(config).Sum(p => p.Count), Path.GetFileName(data.CorpusTrain), scale.PretrainSteps, scale.PretrainBatch, scale.PretrainSeq, precision.Name()));
        if (Directory.Exists(baseDir)) Directory.Delete(baseDir, recursive: true);
        var result = FineTuning.Run(backend, new FineTuneRequest
        {
            ModelDirectory = init, DataPath = data.CorpusTrain, OutputDirectory = baseDir, Objective = "lm", Policy = FreezePolicy.None,
            Options = new TrainingOptions
            {
                Steps = scale.PretrainSteps, Batch = scale.PretrainBatch, Seq = scale.PretrainSeq, Lr = scale.PretrainLr, MinLr = scale.PretrainLr / 10,
                WeightDecay = 0.1f, Beta2 = 0.95f, Seed = 1, EvalEvery = 0, EvalBatches = 4, LogEvery = Math.Max(1, scale.PretrainSteps / 20),
            },
            HeldOutFraction = 0, Precision = precision,
        }, progress, cancel);
        Directory.Delete(init, recursive: true);
        if (result.Training.Cancelled) throw new OperationCanceledException("the demo was interrupted during pretraining");
        var info = new JsonObject
        {
            ["scale"] = scale.Name, ["data"] = Path.GetFileName(data.CorpusTrain), ["steps"] = scale.PretrainSteps,
            ["tokens"] = (long)scale.PretrainSteps * scale.PretrainBatch * scale.PretrainSeq, ["precision"] = precision.Name(),
            ["final_loss"] = result.Training.Losses.LastOrDefault(), ["step_ms_median"] = result.Training.StepMsMedian,
            ["losses"] = result.Report["losses"]!.DeepClone(),
        };
        File.WriteAllText(marker, info.ToJsonString());
        return info;
    }

    private static double Perplexity(Backend backend, string modelDir, string text, ExperimentScale scale)
    {
        using var model = LlamaModel.Load(backend, modelDir, new LlamaModelOptions(scale.PretrainBatch, scale.PretrainSeq, Training: false), out var tok);
        return ModelEvaluation.Run(model, tok, text, "lm").Perplexity;
    }

    private static EvaluationResult Evaluate(Backend backend, string modelDir, string taskData, ExperimentScale scale, int maxBatches)
    {
        using var model = LlamaModel.Load(backend, modelDir, new LlamaModelOptions(scale.FineTuneBatch, scale.FineTuneSeq, Training: false), out var tok);
        return ModelEvaluation.Run(model, tok, taskData, "sft", maxBatches, exactMatchPrompts: scale.ExactMatchPrompts);
    }
}
