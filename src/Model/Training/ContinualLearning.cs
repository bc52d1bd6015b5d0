using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Model.Training;

/// <summary>One stage of a continual-learning sequence.</summary>
/// <param name="Name">A label (default: stage-N).</param>
/// <param name="Data">Its data file (relative paths are relative to stages.json).</param>
/// <param name="Objective">lm, sft or dpo.</param>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="Lr">Peak learning rate.</param>
public sealed record StageSpec(string Name, string Data, string Objective, int Steps, float Lr);

/// <summary>A continual-learning run: stages trained one after another, each with its own freeze draw.</summary>
public sealed record StagesRequest
{
    /// <summary>The starting model directory.</summary>
    public required string ModelDirectory { get; init; }

    /// <summary>The stages.json file.</summary>
    public required string StagesFile { get; init; }

    /// <summary>Where every stage's directory, the final model and run.json go.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>
    /// Makes a stage's freeze policy from the stage index: the draw of stage i comes from (seed, i), so every
    /// stage gets its own reproducible mask.
    /// </summary>
    public required Func<int, FreezePolicy> PolicyForStage { get; init; }

    /// <summary>Settings shared by every stage (steps and learning rate come from each stage).</summary>
    public TrainingOptions Options { get; init; } = new();

    /// <summary>Share of each stage's data held out for the score matrix.</summary>
    public double HeldOutFraction { get; init; } = 0.05;

    /// <summary>Skip malformed JSONL lines.</summary>
    public bool SkipBadLines { get; init; }

    /// <summary>DPO's β for DPO stages.</summary>
    public double Beta { get; init; } = 0.1;

    /// <summary>Continue an interrupted sequence (finished stages are kept, the current one resumes from its checkpoint).</summary>
    public bool Resume { get; init; }

    /// <summary>Extra settings for run.json.</summary>
    public JsonObject? ExtraConfig { get; init; }

    /// <summary>The arithmetic of every stage (a stage saved in bf16 passes BF16 frozen matrices to the next).</summary>
    public Precision Precision { get; init; }
}

/// <summary>
/// Continual learning (the paper's TRACE setting): the stages run in order, each starting from the previous one's
/// weights with a new freeze mask drawn from (seed, stage index); after every stage the model is scored on every
/// stage's held-out set. run.json gets the score matrix (row = after stage i, column = task j), <c>op</c> (the mean
/// final score over all tasks) and <c>bwt</c> (backward transfer: the mean over tasks j &lt; T−1 of
/// score[T−1][j] − score[j][j]), and per stage its frozen list and losses.
/// Scores, higher is better: lm → −(held-out loss); sft → exact match of greedy answers on up to 32 held-out prompts;
/// dpo → preference accuracy against the starting model. <c>held_out_losses</c> holds each objective's held-out loss
/// in the same layout.
/// </summary>
public static class ContinualLearning
{
    /// <summary>Reads and checks a stages.json file.</summary>
    public static IReadOnlyList<StageSpec> ReadStages(string path)
    {
        if (!File.Exists(path)) throw new InvalidInputException(path, "stages file not found");
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidInputException(path, "not a JSON object"); }
        catch (JsonException e) { throw new InvalidInputException(path, $"malformed JSON: {e.Message}", e); }
        var list = root["stages"] as JsonArray ?? throw new InvalidInputException(path, "field 'stages' (a list) is missing");
        if (list.Count == 0) throw new InvalidInputException(path, "'stages' is empty");
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var stages = new List<StageSpec>();
        for (int i = 0; i < list.Count; i++)
        {
            string where = $"stages[{i}]";
            var s = list[i] as JsonObject ?? throw new InvalidInputException(path, $"{where} is not an object");
            T Field<T>(string name, T? fallback = default)
            {
                var node = s[name];
                if (node is null) return fallback ?? throw new InvalidInputException(path, $"{where}.{name} is missing");
                try { return node.GetValue<T>(); }
                catch (Exception e) when (e is InvalidOperationException or FormatException)
                { throw new InvalidInputException(path, $"{where}.{name} is not a {typeof(T).Name}", e); }
            }
            string data = Field<string>("data");
            data = Path.IsPathRooted(data) ? data : Path.Combine(dir, data);
            if (!File.Exists(data)) throw new InvalidInputException(path, $"{where}.data: file '{data}' not found");
            string objective = Field<string>("objective");
            if (objective is not ("lm" or "sft" or "dpo")) throw new InvalidInputException(path, $"{where}.objective '{objective}' is not lm, sft or dpo");
            int steps = Field<int>("steps");
            if (steps <= 0) throw new InvalidInputException(path, $"{where}.steps must be positive");
            double lr = Field<double>("lr");
            if (!(lr > 0)) throw new InvalidInputException(path, $"{where}.lr must be positive");
            string name = s["name"]?.GetValue<string>() ?? $"stage-{i}";
            if (name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || name.Length == 0)
                throw new InvalidInputException(path, $"{where}.name '{name}' cannot name a directory");
            stages.Add(new StageSpec(name, data, objective, steps, (float)lr));
        }
        return stages;
    }

    /// <summary>Runs the stages; returns the run report (also written to OUT/run.json).</summary>
    public static JsonObject Run(Backend backend, StagesRequest r, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancel = default, Action<string>? log = null)
    {
        var stages = ReadStages(r.StagesFile);
        int n = stages.Count;
        var scores = new double?[n, n];
        var losses = new double?[n, n];
        var stageReports = new JsonArray();
        string current = r.ModelDirectory;
        var scorer = new TaskScorer(backend, r.ModelDirectory, r.HeldOutFraction, r.SkipBadLines, r.Options, r.Beta);
        bool cancelled = false;
        for (int i = 0; i < n && !cancelled; i++)
        {
            var st = stages[i];
            string dir = Path.Combine(r.OutputDirectory, $"stage-{i:D2}-{st.Name}");
            var policy = r.PolicyForStage(i);
            var request = new FineTuneRequest
            {
                ModelDirectory = current, DataPath = st.Data, OutputDirectory = dir, Objective = st.Objective, Policy = policy,
                Options = r.Options with { Steps = st.Steps, Lr = st.Lr, MinLr = Math.Min(r.Options.MinLr, st.Lr) },
                HeldOutFraction = r.HeldOutFraction, SkipBadLines = r.SkipBadLines, Beta = r.Beta,
                Resume = r.Resume && Directory.Exists(Path.Combine(dir, "checkpoints")), ExtraConfig = r.ExtraConfig, Precision = r.Precision,
            };
            JsonObject report;
            if (r.Resume && Finished(dir, st.Steps) is { } done)
            {
                log?.Invoke($"stage {i} ({st.Name}) already finished; reusing {dir}");
                report = done;
            }
            else
            {
                log?.Invoke($"stage {i} ({st.Name}): {st.Objective} on {Path.GetFileName(st.Data)}, {st.Steps} steps, lr {st.Lr.ToString(CultureInfo.InvariantCulture)}");
                var result = FineTuning.Run(backend, request, progress, cancel, log);
                report = result.Report;
                cancelled = result.Training.Cancelled;
            }
            stageReports.Add(new JsonObject
            {
                ["name"] = st.Name, ["data"] = st.Data, ["objective"] = st.Objective, ["steps"] = st.Steps, ["lr"] = st.Lr,
                ["directory"] = dir, ["policy"] = report["policy"]?.DeepClone(), ["frozen"] = report["frozen"]?.DeepClone(),
                ["losses"] = report["losses"]?.DeepClone(), ["eval"] = report["eval"]?.DeepClone(),
                ["cost_bound"] = report["cost_bound"]?.DeepClone(), ["step_ms_median"] = report["step_ms_median"]?.DeepClone(),
            });
            if (cancelled) break;
            for (int j = 0; j < n; j++) (scores[i, j], losses[i, j]) = scorer.Score(dir, stages[j]);
            log?.Invoke($"scores after stage {i}: " + string.Join(", ", Enumerable.Range(0, n).Select(j => $"{stages[j].Name} {scores[i, j]:F4}")));
            current = dir;
        }

        var final = new JsonObject
        {
            ["method"] = r.PolicyForStage(0).Name == "none" ? "fft" : "hft",
            ["policy"] = r.PolicyForStage(0).Describe(),
            ["seed"] = r.Options.Seed,
            ["stages"] = stageReports,
            ["score_metric"] = new JsonArray(stages.Select(s => (JsonNode)TaskScorer.MetricName(s.Objective)).ToArray()),
            ["scores"] = Matrix(scores, n),
            ["held_out_losses"] = Matrix(losses, n),
            ["cancelled"] = cancelled,
        };
        if (!cancelled)
        {
            final["op"] = Enumerable.Range(0, n).Average(j => scores[n - 1, j]!.Value);
            final["bwt"] = n > 1 ? Enumerable.Range(0, n - 1).Average(j => scores[n - 1, j]!.Value - scores[j, j]!.Value) : null;
            foreach (var f in new[] { "config.json", "model.safetensors" })
                File.Copy(Path.Combine(current, f), Path.Combine(r.OutputDirectory, f), overwrite: true);
            Tokenizers.Tokenizers.Load(current).Save(r.OutputDirectory);
        }
        RunReport.Write(Path.Combine(r.OutputDirectory, "run.json"), final);
        return final;
    }

    private static JsonArray Matrix(double?[,] m, int n) => new(Enumerable.Range(0, n).Select(i => (JsonNode)new JsonArray(
        Enumerable.Range(0, n).Select(j => (JsonNode?)(m[i, j] is double v ? JsonValue.Create(v) : null)).ToArray())).ToArray());

    /// <summary>The run.json of a stage directory whose run finished all its steps, or null.</summary>
    private static JsonObject? Finished(string dir, int steps)
    {
        string path = Path.Combine(dir, "run.json");
        if (!File.Exists(path)) return null;
        var o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
        return o?["steps_done"]?.GetValue<int>() == steps && o["cancelled"]?.GetValue<bool>() == false ? o : null;
    }
}
