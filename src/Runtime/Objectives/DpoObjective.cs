using HftRuntime.Kernels;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Runtime.Objectives;

/// <summary>
/// DPO training: for each batch of pairs, the reference model (frozen weights, inference layout: no gradients, no
/// optimizer state — not a second trainable copy) and the policy score the chosen and rejected responses; the DPO
/// loss then sets each position's weight and the policy back-propagates once. The loss is the mean over every pair of
/// the accumulation window.
/// </summary>
public sealed class DpoObjective : ITrainingObjective
{
    private readonly ILanguageModel _reference;
    private float[] _losses = [];

    /// <summary>Creates the objective with DPO's β and the reference model.</summary>
    public DpoObjective(ILanguageModel reference, double beta)
    {
        if (!(beta > 0) || double.IsInfinity(beta)) throw new ArgumentOutOfRangeException(nameof(beta), beta, "--beta must be a positive number");
        _reference = reference;
        Beta = beta;
    }

    /// <summary>DPO's β.</summary>
    public double Beta { get; }

    /// <inheritdoc/>
    public string Name => "dpo";

    /// <inheritdoc/>
    public float Accumulate(OptimizerStep step, IBatchSource source, int microBatches)
    {
        var start = source.Position;
        int total = 0;
        for (int a = 0; a < microBatches; a++) total += Dpo.CountPairs(source.Next());
        source.Position = start;
        step.Begin();
        double loss = 0;
        for (int a = 0; a < microBatches; a++)
        {
            var inputs = source.Next();
            var stats = Score(step.Model, inputs, Math.Max(1, total));
            step.Model.SetRowScale(inputs.RowScale);
            step.Model.Backward();
            loss += stats.Loss;
        }
        return (float)loss;
    }

    /// <summary>Reference and policy log-probabilities of a batch, the loss, and the row weights (set in <paramref name="inputs"/>).</summary>
    private DpoStats Score(ILanguageModel policy, ModelInputs inputs, int normalizer)
    {
        _reference.SetInputs(inputs);
        _reference.Forward();
        var reference = Dpo.PairLogProbs(RowLosses(_reference, inputs.Rows), inputs);
        policy.SetInputs(inputs);
        policy.Forward();
        var current = Dpo.PairLogProbs(RowLosses(policy, inputs.Rows), inputs);
        return Dpo.LossAndRowScale(current, reference, Beta, inputs, normalizer);
    }

    private ReadOnlySpan<float> RowLosses(ILanguageModel model, int rows)
    {
        if (_losses.Length < rows) _losses = new float[rows];
        model.Backend.Download<float>(model.RowLosses.Slice(0, rows), _losses.AsSpan(0, rows));
        return _losses.AsSpan(0, rows);
    }

    /// <inheritdoc/>
    public EvalMetrics Evaluate(ILanguageModel model, IBatchSource source, int batches)
    {
        source.Position = new DataPosition(0, 0);
        double loss = 0, margin = 0;
        int correct = 0, pairs = 0;
        for (int b = 0; b < batches; b++)
        {
            var inputs = source.Next();
            var s = Score(model, inputs, 1);
            loss += s.Loss; margin += s.MarginSum; correct += s.Correct; pairs += s.Pairs;
        }
        pairs = Math.Max(1, pairs);
        return new EvalMetrics(loss / pairs, new Dictionary<string, double>
        {
            ["reward_margin"] = margin / pairs,
            ["preference_accuracy"] = (double)correct / pairs,
        });
    }
}
