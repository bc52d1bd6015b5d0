using HftRuntime.Runtime.Data;

namespace HftRuntime.Runtime.Training;

/// <summary>Held-out loss of a model: the mean cross-entropy over every counted position of some batches.</summary>
public static class Evaluator
{
    /// <summary>
    /// Mean loss over <paramref name="batches"/> batches read from the start of <paramref name="source"/> (its
    /// position is reset to the beginning first, so every evaluation sees the same data).
    /// </summary>
    public static double MeanLoss(ILanguageModel model, IBatchSource source, int batches)
    {
        source.Position = new DataPosition(0, 0);
        var (sum, tokens, _) = SumLoss(model, source, batches, wholeEpoch: false);
        return tokens > 0 ? sum / tokens : double.NaN;
    }

    /// <summary>
    /// Σ cross-entropy over every counted position of batches read from <paramref name="source"/>'s current position:
    /// at most <paramref name="maxBatches"/> (0: no limit), and with <paramref name="wholeEpoch"/> only until the epoch
    /// ends, so each position of the data counts once. Returns the sum, the positions counted and the batches read.
    /// </summary>
    public static (double Sum, long Tokens, int Batches) SumLoss(ILanguageModel model, IBatchSource source, int maxBatches, bool wholeEpoch)
    {
        long epoch = source.Position.Epoch;
        double sum = 0;
        long tokens = 0;
        int batches = 0;
        while ((maxBatches == 0 || batches < maxBatches) && (!wholeEpoch || source.Position.Epoch == epoch))
        {
            var inputs = source.Next();
            batches++;
            int n = inputs.CountTargets();
            if (n == 0) continue;
            for (int i = 0; i < inputs.Rows; i++) inputs.RowScale[i] = inputs.Targets[i] == Kernels.Backend.IgnoreIndex ? 0f : 1f;
            model.SetInputs(inputs);
            model.Forward();
            sum += model.Loss();
            tokens += n;
        }
        return (sum, tokens, batches);
    }
}
