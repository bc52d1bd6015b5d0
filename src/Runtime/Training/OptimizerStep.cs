namespace HftRuntime.Runtime.Training;

/// <summary>
/// The parts of one optimizer step, shared by the trainer and the benchmarks: forward and backward over micro-batches
/// (gradients accumulate), then the global gradient norm over the trainable block, clipping, and the masked AdamW
/// update — skipped when the loss or the norm is not finite.
/// </summary>
public sealed class OptimizerStep
{
    private readonly ILanguageModel _model;
    private readonly float[] _scalar = new float[1];

    /// <summary>Creates the step for <paramref name="model"/> with AdamW <paramref name="options"/> and clipping at <paramref name="clipNorm"/> (0: off).</summary>
    public OptimizerStep(ILanguageModel model, AdamWOptions options, float clipNorm)
    {
        _model = model;
        Optimizer = new AdamWOptimizer(model.Backend, model.Parameters, options);
        ClipNorm = clipNorm;
    }

    /// <summary>The model being trained.</summary>
    public ILanguageModel Model => _model;

    /// <summary>The optimizer (its step count is part of a checkpoint).</summary>
    public AdamWOptimizer Optimizer { get; }

    /// <summary>Global-norm clipping threshold (0: off).</summary>
    public float ClipNorm { get; }

    /// <summary>Zeroes the gradients (start of a step).</summary>
    public void Begin() => _model.ZeroGradients();

    /// <summary>Forward and backward of one micro-batch; returns its share of the objective (Σ loss · rowScale).</summary>
    public float ForwardBackward(ModelInputs inputs)
    {
        _model.SetInputs(inputs);
        _model.Forward(writeGradient: true);
        float loss = _model.Loss();
        _model.Backward();
        return loss;
    }

    /// <summary>
    /// Finishes the step: reads the global gradient norm (one scalar), and if it and <paramref name="loss"/> are
    /// finite, clips and applies AdamW at <paramref name="lr"/>. Returns the norm before clipping (NaN when nothing
    /// is trainable) and whether the update was applied.
    /// </summary>
    public (double Norm, bool Applied) Finish(float lr, float loss)
    {
        var be = _model.Backend;
        var store = _model.Parameters;
        if (store.TrainableCount == 0) return (double.NaN, float.IsFinite(loss));
        be.SumSquares(store.GradStats.Slice(0, 1), store.Grads);
        be.Download<float>(store.GradStats.Slice(0, 1), _scalar);
        double norm = Math.Sqrt(_scalar[0]);
        if (!float.IsFinite(loss) || !double.IsFinite(norm)) return (norm, false);
        _scalar[0] = ClipNorm > 0 && norm > ClipNorm ? (float)(ClipNorm / (norm + 1e-6)) : 1f;
        be.Upload<float>(store.GradStats.Slice(1, 1), _scalar);
        Optimizer.Step(lr, store.GradStats.Slice(1, 1));
        return (norm, true);
    }
}
