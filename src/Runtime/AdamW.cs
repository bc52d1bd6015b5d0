using HftRuntime.Kernels;

namespace HftRuntime.Runtime;

/// <summary>AdamW settings (PyTorch's <c>torch.optim.AdamW</c> defaults unless given).</summary>
/// <param name="Beta1">First-moment decay.</param>
/// <param name="Beta2">Second-moment decay.</param>
/// <param name="Eps">Denominator epsilon.</param>
/// <param name="WeightDecay">Decoupled weight decay (applied to tensors declared with decay only).</param>
public sealed record AdamWOptions(float Beta1 = 0.9f, float Beta2 = 0.999f, float Eps = 1e-8f, float WeightDecay = 0.01f)
{
    /// <summary>Checks the ranges PyTorch accepts.</summary>
    public void Validate()
    {
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "beta1 must lie in [0, 1)");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "beta2 must lie in [0, 1)");
        if (!(Eps >= 0)) throw new ArgumentOutOfRangeException(nameof(Eps), Eps, "eps must be >= 0");
        if (!(WeightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "weight decay must be >= 0");
    }
}

/// <summary>
/// Masked AdamW over a <see cref="ParameterStore"/>: one fused launch over the trainable block's segment table;
/// frozen tensors have no state and are never touched.
/// </summary>
public sealed class AdamWOptimizer
{
    private readonly Backend _backend;
    private readonly ParameterStore _store;

    /// <summary>Creates the optimizer; the store must have been reserved with optimizer state.</summary>
    public AdamWOptimizer(Backend backend, ParameterStore store, AdamWOptions options)
    {
        options.Validate();
        if (!store.HasOptimizerState && store.TrainableCount > 0)
            throw new ArgumentException("the parameter store was created without optimizer state", nameof(store));
        _backend = backend; _store = store; Options = options;
    }

    /// <summary>The settings.</summary>
    public AdamWOptions Options { get; }

    /// <summary>Steps applied so far (bias correction uses it).</summary>
    public int StepCount { get; set; }

    /// <summary>
    /// Applies one step with learning rate <paramref name="lr"/> to every trainable tensor, using the gradients in
    /// the store; gradients are multiplied by gradScale[0] first when <paramref name="gradScale"/> is given. In a
    /// bf16 store the same pass rewrites the bf16 compute copy of the updated tensors.
    /// </summary>
    public void Step(float lr, Tensor gradScale = default)
    {
        if (!(lr >= 0) || float.IsInfinity(lr)) throw new ArgumentOutOfRangeException(nameof(lr), lr, "learning rate must be finite and >= 0");
        StepCount++;
        if (_store.TrainableCount == 0) return;
        var o = Options;
        _backend.AdamW(_store.TrainableValues, _store.Grads, _store.Moment1, _store.Moment2, _store.Segments, _store.SegmentCount,
            new AdamWStep(lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, StepCount), gradScale, _store.TrainableBf16);
    }
}
