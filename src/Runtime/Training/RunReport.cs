using System.Text.Json;
using System.Text.Json.Nodes;

namespace HftRuntime.Runtime.Training;

/// <summary>Builds and writes run.json: what was run (the caller's description) and what it measured.</summary>
public static class RunReport
{
    /// <summary>
    /// <paramref name="info"/> (method, policy, frozen, configuration, ...) plus the memory accounting of
    /// <paramref name="store"/> and the measurements of <paramref name="result"/>.
    /// </summary>
    public static JsonObject Build(JsonObject info, TrainingResult result, ParameterStore store, long activationBytes)
    {
        var o = (JsonObject)info.DeepClone();
        o["params_total"] = store.TrainableCount + store.FrozenCount;
        o["params_trainable"] = store.TrainableCount;
        o["bytes_weights"] = store.WeightBytes;
        o["bytes_grads"] = store.Grads.IsEmpty ? 0 : store.Grads.Bytes;
        o["bytes_optimizer"] = (store.Moment1.IsEmpty ? 0 : store.Moment1.Bytes) + (store.Moment2.IsEmpty ? 0 : store.Moment2.Bytes);
        o["bytes_activations"] = activationBytes;
        o["steps_done"] = result.StepsDone;
        o["step_ms_median"] = Finite(result.StepMsMedian);
        o["tokens_per_s"] = Finite(result.TokensPerSecond);
        o["tokens_per_step"] = result.TokensPerStep;
        o["skipped_steps"] = result.SkippedSteps;
        o["cancelled"] = result.Cancelled;
        if (result.ResumedFrom is int from) o["resumed_from_step"] = from;
        o["losses"] = new JsonArray(result.Losses.Select(l => (JsonNode?)(l is float f ? JsonValue.Create(f) : null)).ToArray());
        o["eval"] = new JsonArray(result.Evals.Select(e => (JsonNode)EvalJson(e.Step, e.Metrics)).ToArray());
        return o;
    }

    /// <summary>One evaluation as JSON: {"step", "loss", extras...}.</summary>
    public static JsonObject EvalJson(int step, Objectives.EvalMetrics m)
    {
        var o = new JsonObject { ["step"] = step, ["loss"] = m.Loss };
        foreach (var (k, v) in m.Extra) o[k] = v;
        return o;
    }

    /// <summary>Reads back what <see cref="EvalJson"/> wrote.</summary>
    public static (int Step, Objectives.EvalMetrics Metrics) ParseEval(JsonObject o)
    {
        var extra = new Dictionary<string, double>();
        foreach (var (k, v) in o)
            if (k is not "step" and not "loss" && v is not null) extra[k] = v.GetValue<double>();
        return (o["step"]!.GetValue<int>(), new Objectives.EvalMetrics(o["loss"]!.GetValue<double>(), extra));
    }

    /// <summary>Writes <paramref name="report"/> to <paramref name="path"/> (replaced atomically).</summary>
    public static void Write(string path, JsonObject report)
    {
        string tmp = path + ".tmp";
        CheckpointStore.WriteDurably(tmp, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.Move(tmp, path, overwrite: true);
    }

    private static JsonNode? Finite(double x) => double.IsFinite(x) ? JsonValue.Create(x) : null;
}
