using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.Objectives;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Model.Training;

/// <summary>One fine-tuning run of a Hugging Face model directory (what <c>hft train</c> does).</summary>
public sealed record FineTuneRequest
{
    /// <summary>The model directory (config.json, model.safetensors, tokenizer).</summary>
    public required string ModelDirectory { get; init; }

    /// <summary>The training data (plain text or JSONL; see the objective).</summary>
    public required string DataPath { get; init; }

    /// <summary>Where the trained model, run.json, metrics.jsonl and checkpoints go.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>lm, sft or dpo.</summary>
    public string Objective { get; init; } = "lm";

    /// <summary>The freeze policy (<see cref="FreezePolicy.None"/> is full fine-tuning).</summary>
    public FreezePolicy Policy { get; init; } = FreezePolicy.Hft(1);

    /// <summary>Steps, batch, learning rate and the rest.</summary>
    public TrainingOptions Options { get; init; } = new();

    /// <summary>Share of the data held out for evaluation.</summary>
    public double HeldOutFraction { get; init; } = 0.05;

    /// <summary>Skip (and count) malformed JSONL lines instead of failing.</summary>
    public bool SkipBadLines { get; init; }

    /// <summary>DPO's β.</summary>
    public double Beta { get; init; } = 0.1;

    /// <summary>DPO's reference model directory (default: the starting model).</summary>
    public string? ReferenceDirectory { get; init; }

    /// <summary>Recompute each layer's activations in the backward pass instead of keeping them (less memory, one more forward).</summary>
    public bool CheckpointActivations { get; init; }

    /// <summary>fp32, or bf16 mixed precision (see <see cref="Runtime.Precision"/>).</summary>
    public Precision Precision { get; init; }

    /// <summary>Continue the run in <see cref="OutputDirectory"/> from its last checkpoint.</summary>
    public bool Resume { get; init; }

    /// <summary>Extra settings to record in run.json's resolved configuration (e.g. the command line's).</summary>
    public JsonObject? ExtraConfig { get; init; }

    /// <summary>"fft" when nothing is frozen by policy, else "hft".</summary>
    public string Method => Policy.Name == "none" ? "fft" : "hft";
}

/// <summary>What a fine-tuning run produced.</summary>
/// <param name="Training">Losses, timings, counts.</param>
/// <param name="Report">The run.json written.</param>
/// <param name="Frozen">The frozen tensor names.</param>
public sealed record FineTuneResult(TrainingResult Training, JsonObject Report, IReadOnlySet<string> Frozen);

/// <summary>
/// Fine-tuning of a model directory on a back-end: loads config, tokenizer and weights, draws the freeze, opens the
/// data, trains with the objective, and writes a complete model directory plus run.json (see the README). Every
/// check of the input happens before any work or any write.
/// </summary>
public static class FineTuning
{
    /// <summary>
    /// The precision the run in <paramref name="runDirectory"/> was saved in, from its latest checkpoint (fp32 when its
    /// fingerprint has no precision, as runs saved before bf16 existed); null when it has no checkpoint.
    /// </summary>
    /// <exception cref="InvalidInputException">The checkpoint's state is unreadable or names an unknown precision.</exception>
    public static Precision? SavedPrecision(string runDirectory)
    {
        if (new CheckpointStore(runDirectory).Latest() is not { } dir) return null;
        var state = CheckpointStore.ReadState(dir);
        if (state["fingerprint"]?["precision"] is not { } name) return Precision.Fp32;
        try { return PrecisionNames.Parse(name.GetValue<string>()); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidInputException(Path.Combine(dir, "trainer_state.json"), $"fingerprint.precision is not fp32 or bf16: {name.ToJsonString()}");
        }
    }

    /// <summary>Runs the request; <paramref name="log"/> receives a few human-readable lines.</summary>
    public static FineTuneResult Run(Backend backend, FineTuneRequest request, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancel = default, Action<string>? log = null)
    {
        var o = request.Options;
        o.Validate();
        if (request.Objective is not ("lm" or "sft" or "dpo"))
            throw new ArgumentException($"unknown objective '{request.Objective}'; expected lm, sft or dpo");
        if (!(request.HeldOutFraction >= 0 && request.HeldOutFraction < 1))
            throw new ArgumentOutOfRangeException("held-out", request.HeldOutFraction, "--held-out must lie in [0, 1)");
        OutputPaths.RequireDistinct(request.OutputDirectory, request.ModelDirectory, "input model directory", "write the trained model elsewhere (--out)");
        var config = LlamaConfig.Load(Path.Combine(request.ModelDirectory, "config.json"));
        var tokenizer = Tokenizers.Tokenizers.Load(request.ModelDirectory);
        if (tokenizer.VocabSize > config.VocabSize)
            throw new InvalidInputException(request.ModelDirectory, $"the tokenizer has {tokenizer.VocabSize} ids but config.json's vocab_size is {config.VocabSize}");
        var frozen = request.Policy.SelectFrozen(LlamaModel.TensorNames(config));
        using var data = OpenData(request, tokenizer);
        if (data.HeldOut is null) log?.Invoke($"warning: the held-out part of {request.DataPath} is shorter than one batch; no evaluation");
        LlamaConfig? referenceConfig = null;
        if (request.Objective == "dpo" && request.ReferenceDirectory is { } refDir)
        {
            referenceConfig = LlamaConfig.Load(Path.Combine(refDir, "config.json"));
            if (referenceConfig != config)
                throw new InvalidInputException(refDir, $"the reference model's config.json differs from {request.ModelDirectory}'s");
        }

        int rows = data.Train.Batch;
        int lossChunk = LlamaModelOptions.DefaultLossChunkRows(rows, o.Seq, config.VocabSize);
        var layout = new LlamaModelOptions(rows, o.Seq, frozen, CheckpointActivations: request.CheckpointActivations, Precision: request.Precision,
            LossChunkRows: lossChunk);
        log?.Invoke("memory: " + LlamaModel.EstimateMemory(backend, config, layout).Describe());
        using var model = LlamaModel.Create(backend, config, layout);
        using (var weights = SafeTensorsCheckpoint.Open(request.ModelDirectory)) model.LoadWeights(weights);
        using var reference = request.Objective == "dpo" ? LlamaModel.Create(backend, config, new LlamaModelOptions(rows, o.Seq, Training: false, Precision: request.Precision, LossChunkRows: lossChunk)) : null;
        if (reference != null)
            using (var weights = SafeTensorsCheckpoint.Open(request.ReferenceDirectory ?? request.ModelDirectory)) reference.LoadWeights(weights);
        ITrainingObjective objective = request.Objective == "dpo" ? new DpoObjective(reference!, request.Beta) : new TokenObjective(request.Objective);

        var frozenNames = new JsonArray(frozen.OrderBy(n => n, StringComparer.Ordinal).Select(n => (JsonNode)n).ToArray());
        var fingerprint = new JsonObject
        {
            ["model_config"] = JsonNode.Parse(config.ToJson()),
            ["frozen"] = frozenNames.DeepClone(),
            ["policy"] = request.Policy.Describe(),
            ["objective"] = request.Objective,
            ["data_sha256"] = data.Info.Sha256,
        };
        // Only bf16 runs carry the key, so fp32 runs saved before precision existed still resume.
        if (request.Precision != Precision.Fp32) fingerprint["precision"] = request.Precision.Name();
        double costBound = LlamaCostModel.CostBound(config, o.Seq, frozen);
        var s = model.Parameters;
        log?.Invoke($"device {backend.DeviceName}, attention in {model.AttentionPrecision}");
        log?.Invoke(string.Format(CultureInfo.InvariantCulture, "{0} ({1}): {2:N0} of {3:N0} parameters trainable ({4} tensors frozen), cost bound {5:F3}, arena {6:F1} MiB",
            request.Method, request.Objective, s.TrainableCount, s.TrainableCount + s.FrozenCount, frozen.Count, costBound,
            (model.Arena.ReservedBytes + (reference?.Arena.ReservedBytes ?? 0)) / 1048576.0));

        var trainer = new Trainer(model, objective, data.Train, data.HeldOut, o, request.OutputDirectory, fingerprint);
        var result = trainer.Run(request.Resume, progress, cancel);

        File.WriteAllText(Path.Combine(request.OutputDirectory, "config.json"), config.ToJson());
        tokenizer.Save(request.OutputDirectory);
        var info = new JsonObject
        {
            ["method"] = request.Method,
            ["objective"] = request.Objective,
            ["policy"] = request.Policy.Describe(),
            ["seed"] = o.Seed,
            ["frozen"] = frozenNames,
            ["cost_bound"] = costBound,
            ["device"] = backend.DeviceName,
            ["attention_precision"] = model.AttentionPrecision,
            ["data"] = data.Info.ToJson(),
            ["config"] = ResolvedConfig(request, tokenizer, data.Info.Sha256),
            ["model_config"] = JsonNode.Parse(config.ToJson()),
        };
        // Which bf16 GEMM kernel the ILGPU back-end ran (and, for a PTX one, which forms passed their check).
        if (request.Precision == Precision.Bf16 && backend is IlgpuBackend ib) info["bf16_gemm"] = ib.Bf16GemmSummary;
        var report = RunReport.Build(info, result, model.Parameters, model.ActivationBytes);
        RunReport.Write(Path.Combine(request.OutputDirectory, "run.json"), report);
        return new FineTuneResult(result, report, frozen);
    }

    /// <summary>Opens the request's data for its objective (see <see cref="Datasets.Open"/>).</summary>
    internal static TrainingData OpenData(FineTuneRequest r, ITokenizer tokenizer) =>
        Datasets.Open(r.DataPath, r.Objective, tokenizer, r.Options.Batch, r.Options.Seq, r.Options.Seed, r.HeldOutFraction, r.SkipBadLines);

    private static JsonObject ResolvedConfig(FineTuneRequest r, ITokenizer tokenizer, string dataSha256)
    {
        var o = r.Options;
        string version = typeof(FineTuning).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
        int plus = version.IndexOf('+');
        var c = new JsonObject
        {
            ["model"] = Path.GetFullPath(r.ModelDirectory), ["data"] = Path.GetFullPath(r.DataPath), ["data_sha256"] = dataSha256, ["out"] = Path.GetFullPath(r.OutputDirectory),
            ["tokenizer"] = tokenizer.Kind, ["objective"] = r.Objective, ["method"] = r.Method, ["policy"] = r.Policy.Name,
            ["held_out"] = r.HeldOutFraction, ["skip_bad_lines"] = r.SkipBadLines, ["beta"] = r.Beta,
            ["reference"] = r.ReferenceDirectory is null ? null : Path.GetFullPath(r.ReferenceDirectory), ["resume"] = r.Resume,
            ["checkpoint_activations"] = r.CheckpointActivations, ["precision"] = r.Precision.Name(),
            ["seed"] = o.Seed, ["steps"] = o.Steps, ["batch"] = o.Batch, ["seq"] = o.Seq, ["accum"] = o.GradAccum, ["lr"] = o.Lr,
            ["min_lr"] = o.MinLr, ["warmup"] = o.EffectiveWarmup, ["weight_decay"] = o.WeightDecay, ["beta1"] = o.Beta1, ["beta2"] = o.Beta2,
            ["eps"] = o.Eps, ["clip"] = o.ClipNorm, ["eval_every"] = o.EvalEvery, ["eval_batches"] = o.EvalBatches, ["save_every"] = o.SaveEvery,
            ["keep_checkpoints"] = o.KeepCheckpoints, ["log_every"] = o.LogEvery, ["max_nan_steps"] = o.MaxConsecutiveNanSteps,
            ["tool_version"] = plus < 0 ? version : version[..plus],
            ["git_commit"] = plus < 0 ? "unknown" : version[(plus + 1)..],
        };
        foreach (var (k, v) in r.ExtraConfig ?? new JsonObject()) c[k] = v?.DeepClone();
        return c;
    }
}
