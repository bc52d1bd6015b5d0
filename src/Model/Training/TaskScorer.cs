using HftRuntime.Kernels;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Objectives;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Model.Training;

/// <summary>Scores a model on a stage's held-out data (higher is better); see <see cref="ContinualLearning"/>.</summary>
internal sealed class TaskScorer(Backend backend, string startingModel, double heldOut, bool skipBadLines, TrainingOptions options, double beta)
{
    /// <summary>The score reported for an objective.</summary>
    public static string MetricName(string objective) => objective switch
    {
        "dpo" => "preference_accuracy",
        "sft" => "exact_match",
        _ => "neg_loss",
    };

    /// <summary>Held-out prompts scored by exact match per SFT stage (greedy generation is the costly part).</summary>
    public const int ExactMatchPrompts = 32;

    /// <summary>
    /// The score of the model in <paramref name="modelDirectory"/> on <paramref name="stage"/>'s held-out data (see
    /// <see cref="MetricName"/>) and the objective's held-out loss.
    /// </summary>
    public (double Score, double Loss) Score(string modelDirectory, StageSpec stage)
    {
        var config = LlamaConfig.Load(Path.Combine(modelDirectory, "config.json"));
        var tokenizer = Tokenizers.Tokenizers.Load(modelDirectory);
        var request = new FineTuneRequest
        {
            ModelDirectory = modelDirectory, DataPath = stage.Data, OutputDirectory = modelDirectory, Objective = stage.Objective,
            Options = options, HeldOutFraction = heldOut, SkipBadLines = skipBadLines,
        };
        using var data = FineTuning.OpenData(request, tokenizer);
        var heldOutData = data.HeldOut ?? throw new InvalidInputException(stage.Data,
            "its held-out part is shorter than one batch, and the score matrix needs it: raise --held-out or add data");
        using var model = LlamaModel.Create(backend, config, new LlamaModelOptions(data.Train.Batch, options.Seq, Training: false));
        using (var w = SafeTensorsCheckpoint.Open(modelDirectory)) model.LoadWeights(w);
        if (stage.Objective == "dpo")
        {
            using var reference = LlamaModel.Create(backend, config, new LlamaModelOptions(data.Train.Batch, options.Seq, Training: false));
            using (var w = SafeTensorsCheckpoint.Open(startingModel)) reference.LoadWeights(w);
            var m = new DpoObjective(reference, beta).Evaluate(model, heldOutData, options.EvalBatches);
            return (m.Extra["preference_accuracy"], m.Loss);
        }
        double loss = new TokenObjective(stage.Objective).Evaluate(model, heldOutData, options.EvalBatches).Loss;
        if (stage.Objective == "sft")
            return (ExactMatch.Score(ExactMatch.Answer(model, tokenizer, data.HeldOutPrompts(ExactMatchPrompts))), loss);
        return (-loss, loss);
    }
}
