using HftRuntime.Kernels;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Runtime.Objectives;

/// <summary>
/// Causal language modelling and supervised fine-tuning: the mean cross-entropy over every position that has a
/// target (for SFT the data marks only response tokens), taken over the whole accumulation window.
/// </summary>
public sealed class TokenObjective(string name) : ITrainingObjective
{
    /// <inheritdoc/>
    public string Name => name;

    /// <inheritdoc/>
    public float Accumulate(OptimizerStep step, IBatchSource source, int microBatches)
    {
        // The objective is the mean over every counted position of the window: count them first.
        var start = source.Position;
        long total = 0;
        for (int a = 0; a < microBatches; a++) total += source.Next().CountTargets();
        source.Position = start;
        float w = 1f / Math.Max(1, total);
        step.Begin();
        float loss = 0;
        for (int a = 0; a < microBatches; a++)
        {
            var inputs = source.Next();
            for (int i = 0; i < inputs.Rows; i++) inputs.RowScale[i] = inputs.Targets[i] == Backend.IgnoreIndex ? 0f : w;
            loss += step.ForwardBackward(inputs);
        }
        return loss;
    }

    /// <inheritdoc/>
    public EvalMetrics Evaluate(ILanguageModel model, IBatchSource source, int batches)
    {
        double loss = Evaluator.MeanLoss(model, source, batches);
        return new EvalMetrics(loss, new Dictionary<string, double> { ["perplexity"] = Math.Exp(loss) });
    }
}
