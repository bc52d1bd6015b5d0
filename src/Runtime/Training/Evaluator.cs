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
        double sum = 0;
        long count = 0;
        for (int b = 0; b < batches; b++)
        {
            var inputs = source.Next();
            int n = inputs.CountTargets();
            if (n == 0) continue;
            for (int i = 0; i < inputs.Rows; i++) inputs.RowScale[i] = inputs.Targets[i] == Kernels.Backend.IgnoreIndex ? 0f : 1f;
            model.SetInputs(inputs);
            model.Forward();
            sum += model.Loss();
            count += n;
        }
        return count > 0 ? sum / count : double.NaN;
    }
}
