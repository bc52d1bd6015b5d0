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
        _ => "neg_loss",
    };

    /// <summary>The score of the model in <paramref name="modelDirectory"/> on <paramref name="stage"/>'s held-out data.</summary>
    public double Score(string modelDirectory, StageSpec stage)
    {
        var config = LlamaConfig.Load(Path.Combine(modelDirectory, "config.json"));
        var tokenizer = Tokenizers.Tokenizers.Load(modelDirectory);
        var request = new FineTuneRequest
        {
            ModelDirectory = modelDirectory, DataPath = stage.Data, OutputDirectory = modelDirectory, Objective = stage.Objective,
            Options = options, HeldOutFraction = heldOut, SkipBadLines = skipBadLines,
        };
        var data = TrainingData.Open(request, tokenizer);
        var heldOutData = data.HeldOut ?? throw new InvalidInputException(stage.Data,
            "its held-out part is shorter than one batch, and the score matrix needs it: raise --held-out or add data");
        using var model = LlamaModel.Create(backend, config, new LlamaModelOptions(data.RowsPerBatch, options.Seq, Training: false));
        using (var w = SafeTensorsCheckpoint.Open(modelDirectory)) model.LoadWeights(w);
        if (stage.Objective == "dpo")
        {
            using var reference = LlamaModel.Create(backend, config, new LlamaModelOptions(data.RowsPerBatch, options.Seq, Training: false));
            using (var w = SafeTensorsCheckpoint.Open(startingModel)) reference.LoadWeights(w);
            return new DpoObjective(reference, beta).Evaluate(model, heldOutData, options.EvalBatches).Extra["preference_accuracy"];
        }
        return -new TokenObjective(stage.Objective).Evaluate(model, heldOutData, options.EvalBatches).Loss;
    }
}
