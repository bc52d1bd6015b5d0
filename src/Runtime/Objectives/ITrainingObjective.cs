using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Runtime.Objectives;

/// <summary>Held-out figures of an objective: the loss and named extras (perplexity, reward margin, ...).</summary>
/// <param name="Loss">The objective's loss on held-out data.</param>
/// <param name="Extra">Other figures, by name as they appear in metrics.jsonl and run.json.</param>
public sealed record EvalMetrics(double Loss, IReadOnlyDictionary<string, double> Extra);

/// <summary>What a training objective does in one optimizer step and in an evaluation.</summary>
public interface ITrainingObjective
{
    /// <summary>The objective's name (lm, sft, dpo).</summary>
    string Name { get; }

    /// <summary>
    /// Accumulates one optimizer step's gradients from <paramref name="microBatches"/> batches of
    /// <paramref name="source"/> (after <see cref="OptimizerStep.Begin"/>) and returns the objective's value.
    /// </summary>
    float Accumulate(OptimizerStep step, IBatchSource source, int microBatches);

    /// <summary>Held-out metrics over <paramref name="batches"/> batches read from the start of <paramref name="source"/>.</summary>
    EvalMetrics Evaluate(ILanguageModel model, IBatchSource source, int batches);
}
