using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.Objectives;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Runtime.Training;

/// <summary>
/// A progress report after every step (and after the final evaluation); <see cref="IsLogStep"/> marks the ones a
/// line-by-line log prints: every <see cref="TrainingOptions.LogEvery"/> steps, evaluations and the last step.
/// </summary>
/// <param name="Step">Optimizer steps done.</param>
/// <param name="Steps">Optimizer steps in the run.</param>
/// <param name="Loss">Training loss of the last step (null when it was skipped).</param>
/// <param name="Lr">Learning rate of the last step.</param>
/// <param name="GradNorm">Global gradient norm of the last step, before clipping.</param>
/// <param name="TokensPerSecond">Training tokens per second of the last step.</param>
/// <param name="StepMs">Duration of the last step.</param>
/// <param name="EvalLoss">Held-out loss, when this step evaluated.</param>
/// <param name="SkippedSteps">Steps skipped so far because of a non-finite loss or gradient.</param>
/// <param name="IsLogStep">Whether a line-by-line log should print this report.</param>
public sealed record TrainingProgress(int Step, int Steps, float? Loss, float Lr, double GradNorm, double TokensPerSecond,
    double StepMs, double? EvalLoss, int SkippedSteps, bool IsLogStep = true);

/// <summary>What a run produced.</summary>
public sealed class TrainingResult
{
    /// <summary>Training loss at every optimizer step (null for a skipped step).</summary>
    public List<float?> Losses { get; } = new();

    /// <summary>Held-out evaluations: (step, metrics).</summary>
    public List<(int Step, EvalMetrics Metrics)> Evals { get; } = new();

    /// <summary>Duration of every step in milliseconds.</summary>
    public List<double> StepMs { get; } = new();

    /// <summary>Steps skipped for a non-finite loss or gradient.</summary>
    public int SkippedSteps { get; set; }

    /// <summary>Optimizer steps completed.</summary>
    public int StepsDone { get; set; }

    /// <summary>True when cancellation stopped the run early (a checkpoint was saved).</summary>
    public bool Cancelled { get; set; }

    /// <summary>The step the run resumed from, if it did.</summary>
    public int? ResumedFrom { get; set; }

    /// <summary>Training tokens per optimizer step.</summary>
    public long TokensPerStep { get; set; }

    /// <summary>Median step time, leaving out the first step of this process (JIT and caches warm up).</summary>
    public double StepMsMedian
    {
        get
        {
            var s = (StepMs.Count > 2 ? StepMs.Skip(1) : StepMs).OrderBy(x => x).ToList();
            return s.Count == 0 ? double.NaN : s.Count % 2 == 1 ? s[s.Count / 2] : 0.5 * (s[s.Count / 2 - 1] + s[s.Count / 2]);
        }
    }

    /// <summary>Training tokens per second at the median step time.</summary>
    public double TokensPerSecond => TokensPerStep / (StepMsMedian / 1000.0);
}

/// <summary>Too many consecutive steps had a non-finite loss or gradient.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>
/// The training loop: gradient accumulation, global-norm clipping over the trainable parameters, warm-up plus cosine
/// learning rate, masked AdamW, periodic held-out evaluation, metrics.jsonl, checkpoints with atomic replacement,
/// and resumption that continues exactly where a checkpoint left off (weights, optimizer moments, step, data
/// position). A step whose loss or gradient is not finite is skipped and counted; too many in a row stop the run.
/// </summary>
public sealed class Trainer
{
    private readonly ILanguageModel _model;
    private readonly ITrainingObjective _objective;
    private readonly IBatchSource _train;
    private readonly IBatchSource? _eval;
    private readonly TrainingOptions _o;
    private readonly string _out;
    private readonly JsonObject _fingerprint;
    private readonly OptimizerStep _step;
    private readonly CheckpointStore _checkpoints;

    /// <summary>
    /// Creates a trainer writing into <paramref name="outputDirectory"/>. <paramref name="fingerprint"/> describes the
    /// model and freezing (config, frozen names, policy); a resumed run must match it.
    /// </summary>
    public Trainer(ILanguageModel model, ITrainingObjective objective, IBatchSource train, IBatchSource? eval, TrainingOptions options,
        string outputDirectory, JsonObject fingerprint)
    {
        options.Validate();
        _model = model; _objective = objective; _train = train; _eval = eval; _o = options; _out = outputDirectory;
        _fingerprint = (JsonObject)fingerprint.DeepClone();
        _fingerprint["options"] = ScheduleOptions(options);
        _step = new OptimizerStep(model, new AdamWOptions(options.Beta1, options.Beta2, options.Eps, options.WeightDecay), options.ClipNorm);
        _checkpoints = new CheckpointStore(outputDirectory) { Keep = options.KeepCheckpoints };
    }

    /// <summary>The path of the per-step metrics file.</summary>
    public string MetricsPath => Path.Combine(_out, "metrics.jsonl");

    /// <summary>Runs (or, with <paramref name="resume"/>, continues) the training; returns what it did.</summary>
    public TrainingResult Run(bool resume = false, IProgress<TrainingProgress>? progress = null, CancellationToken cancel = default)
    {
        Directory.CreateDirectory(_out);
        var r = new TrainingResult { TokensPerStep = (long)_train.Batch * _train.Seq * _o.GradAccum };
        int step = 0, consecutiveNan = 0;
        if (resume) (step, consecutiveNan) = Restore(r);
        else if (_checkpoints.Latest() is { } existing)
            throw new InvalidInputException(_out, $"holds checkpoints of an earlier run ({Path.GetFileName(existing)}); pass --resume to continue it or choose another --out");
        else
        {
            if (File.Exists(MetricsPath)) File.Delete(MetricsPath);
            // A fresh run starts with zero AdamW moments, even on a model an earlier run trained.
            var store = _model.Parameters;
            if (store.HasOptimizerState) { _model.Backend.Fill(store.Moment1, 0f); _model.Backend.Fill(store.Moment2, 0f); }
            _step.Optimizer.StepCount = 0;
        }

        var be = _model.Backend;
        using var metrics = new StreamWriter(MetricsPath, append: true) { AutoFlush = true };
        var sw = new Stopwatch();
        int lastEval = -1;
        for (; step < _o.Steps; step++)
        {
            if (cancel.IsCancellationRequested) { r.Cancelled = true; break; }
            sw.Restart();
            float lr = _o.LearningRate(step);
            float loss = _objective.Accumulate(_step, _train, _o.GradAccum);
            var (norm, finite) = _step.Finish(lr, loss);
            if (!finite)
            {
                r.SkippedSteps++;
                r.Losses.Add(null);
                if (++consecutiveNan >= _o.MaxConsecutiveNanSteps)
                    throw new TrainingDivergedException($"{consecutiveNan} consecutive steps had a non-finite loss or gradient " +
                        $"(step {step + 1}: loss {loss}, gradient norm {norm}); the run stopped. Lower --lr, raise --clip or check the data.");
            }
            else
            {
                consecutiveNan = 0;
                r.Losses.Add(loss);
            }
            be.Synchronize();
            double ms = sw.Elapsed.TotalMilliseconds;
            r.StepMs.Add(ms);
            r.StepsDone = step + 1;
            double tps = r.TokensPerStep / (ms / 1000.0);
            metrics.WriteLine(Line(("step", step + 1), ("loss", finite ? loss : null), ("lr", lr), ("grad_norm", double.IsFinite(norm) ? norm : null),
                ("tokens_per_s", tps), ("step_ms", ms), ("skipped", !finite)));

            double? evalLoss = null;
            if (_eval != null && _o.EvalEvery > 0 && (step + 1) % _o.EvalEvery == 0)
            {
                evalLoss = Evaluate(r, step + 1, metrics);
                lastEval = step + 1;
            }
            progress?.Report(new TrainingProgress(step + 1, _o.Steps, finite ? loss : null, lr, norm, tps, ms, evalLoss, r.SkippedSteps,
                IsLogStep: (step + 1) % _o.LogEvery == 0 || step + 1 == _o.Steps || evalLoss != null));
            if (_o.SaveEvery > 0 && (step + 1) % _o.SaveEvery == 0 && step + 1 < _o.Steps)
                SaveCheckpoint(step + 1, r, consecutiveNan);
        }
        if (_eval != null && lastEval != r.StepsDone && !r.Cancelled)
        {
            double e = Evaluate(r, r.StepsDone, metrics);
            progress?.Report(new TrainingProgress(r.StepsDone, _o.Steps, r.Losses.LastOrDefault(), _o.LearningRate(Math.Max(0, r.StepsDone - 1)),
                double.NaN, r.TokensPerSecond, r.StepMsMedian, e, r.SkippedSteps));
        }
        SaveCheckpoint(r.StepsDone, r, consecutiveNan);
        ParameterIo.SaveWeights(Path.Combine(_out, "model.safetensors"), _model.Parameters, be);
        return r;
    }

    private double Evaluate(TrainingResult r, int step, StreamWriter metrics)
    {
        var e = _objective.Evaluate(_model, _eval!, _o.EvalBatches);
        r.Evals.Add((step, e));
        var line = new JsonObject { ["step"] = step, ["eval_loss"] = e.Loss };
        foreach (var (k, v) in e.Extra) line["eval_" + k] = v;
        metrics.WriteLine(line.ToJsonString());
        return e.Loss;
    }

    private void SaveCheckpoint(int step, TrainingResult r, int consecutiveNan)
    {
        var state = new JsonObject
        {
            ["step"] = step,
            ["optimizer_steps"] = _step.Optimizer.StepCount,
            ["data_epoch"] = _train.Position.Epoch,
            ["data_index"] = _train.Position.Index,
            ["consecutive_nan_steps"] = consecutiveNan,
            ["skipped_steps"] = r.SkippedSteps,
            ["losses"] = new JsonArray(r.Losses.Select(l => (JsonNode?)(l is float f ? JsonValue.Create(f) : null)).ToArray()),
            ["evals"] = new JsonArray(r.Evals.Select(e => (JsonNode)RunReport.EvalJson(e.Step, e.Metrics)).ToArray()),
            ["step_ms"] = new JsonArray(r.StepMs.Select(x => (JsonNode)x).ToArray()),
            ["fingerprint"] = _fingerprint.DeepClone(),
        };
        var store = _model.Parameters;
        _checkpoints.Save(step, dir =>
        {
            ParameterIo.SaveWeights(Path.Combine(dir, "model.safetensors"), store, _model.Backend);
            if (store.HasOptimizerState) ParameterIo.SaveOptimizer(Path.Combine(dir, "optimizer.safetensors"), store, _model.Backend);
        }, state);
    }

    private (int Step, int ConsecutiveNan) Restore(TrainingResult r)
    {
        string dir = _checkpoints.Latest() ?? throw new InvalidInputException(_out, "has no checkpoint to resume from (checkpoints/latest is missing)");
        var state = CheckpointStore.ReadState(dir);
        string statePath = Path.Combine(dir, "trainer_state.json");
        var theirs = state["fingerprint"] as JsonObject ?? throw new InvalidInputException(statePath, "field 'fingerprint' is missing");
        var diffs = _fingerprint.Select(kv => kv.Key).Union(theirs.Select(kv => kv.Key))
            .Where(k => !JsonNode.DeepEquals(_fingerprint[k], theirs[k])).ToList();
        if (diffs.Count > 0)
            throw new InvalidInputException(statePath, $"belongs to another run: its {string.Join(", ", diffs)} differ from this one's " +
                $"(this: {string.Join("; ", diffs.Select(d => $"{d} = {_fingerprint[d]?.ToJsonString() ?? "null"}"))})");
        try
        {
            int step = state["step"]!.GetValue<int>();
            using (var weights = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors")))
                ParameterIo.LoadWeights(weights, _model.Parameters, _model.Backend);
            if (_model.Parameters.HasOptimizerState)
                ParameterIo.LoadOptimizer(Path.Combine(dir, "optimizer.safetensors"), _model.Parameters, _model.Backend);
            _step.Optimizer.StepCount = state["optimizer_steps"]!.GetValue<int>();
            _train.Position = new DataPosition(state["data_epoch"]!.GetValue<long>(), state["data_index"]!.GetValue<long>());
            r.SkippedSteps = state["skipped_steps"]!.GetValue<int>();
            foreach (var l in state["losses"]!.AsArray()) r.Losses.Add(l is null ? null : l.GetValue<float>());
            foreach (var e in state["evals"]!.AsArray()) r.Evals.Add(RunReport.ParseEval(e!.AsObject()));
            r.StepsDone = step;
            r.ResumedFrom = step;
            TrimMetrics(step);
            return (step, state["consecutive_nan_steps"]!.GetValue<int>());
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
        {
            throw new InvalidInputException(statePath, $"incomplete or malformed checkpoint state: {e.Message}", e);
        }
    }

    /// <summary>Drops metrics lines past the resumed step (written by the interrupted run after its last checkpoint).</summary>
    private void TrimMetrics(int step)
    {
        if (!File.Exists(MetricsPath)) return;
        var keep = File.ReadAllLines(MetricsPath).Where(l =>
        {
            try { return JsonNode.Parse(l)?["step"]?.GetValue<int>() <= step; }
            catch (System.Text.Json.JsonException) { return false; }
        }).ToList();
        File.WriteAllLines(MetricsPath, keep);
    }

    private static JsonObject ScheduleOptions(TrainingOptions o) => new()
    {
        ["steps"] = o.Steps, ["batch"] = o.Batch, ["seq"] = o.Seq, ["accum"] = o.GradAccum, ["lr"] = o.Lr, ["min_lr"] = o.MinLr,
        ["warmup"] = o.EffectiveWarmup, ["beta1"] = o.Beta1, ["beta2"] = o.Beta2, ["eps"] = o.Eps, ["weight_decay"] = o.WeightDecay,
        ["clip"] = o.ClipNorm, ["seed"] = o.Seed,
    };

    private static string Line(params (string Key, object? Value)[] fields)
    {
        var o = new JsonObject();
        foreach (var (k, v) in fields)
            o[k] = v switch
            {
                null => null,
                int i => i,
                float f => f,
                double d => d,
                bool b => b,
                _ => Convert.ToString(v, CultureInfo.InvariantCulture),
            };
        return o.ToJsonString();
    }
}
