using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// AdamW over the trainable block in one launch: work units are (segment, chunk) pairs; a unit reads its segment
/// (start, length, decay) from the device table and updates a strided share of it, with the formula and float
/// order of the CPU back-end. Elements outside every segment are not touched; a segment reaching outside the block
/// is clipped to it (the CPU back-end rejects it; a kernel must not fault).
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<ushort>, AdamWArgs> _adamw = null!;

    /// <summary>Scalars of one AdamW launch.</summary>
    internal struct AdamWArgs
    {
        public float Beta2, OneMinusBeta1, OneMinusBeta2, StepSize, Bc2Sqrt, Eps, DecayFactor;
        public int SegmentCount, Chunks, HasGradScale, HasBf16;
    }

    private void LoadAdamW() =>
        _adamw = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<ushort>, AdamWArgs>(AdamWKernel);

    /// <inheritdoc/>
    protected override void AdamWCore(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor segments, int segmentCount, AdamWStep step, Tensor gradScale, Tensor paramBf16)
    {
        int chunks = (int)Math.Clamp((param.Count + 64L * GroupSize - 1) / (64L * GroupSize), 1, 1024);
        var a = new AdamWArgs
        {
            Beta2 = step.Beta2, OneMinusBeta1 = 1f - step.Beta1, OneMinusBeta2 = 1f - step.Beta2,
            StepSize = step.StepSize, Bc2Sqrt = step.BiasCorrection2Sqrt, Eps = step.Eps,
            DecayFactor = 1f - step.Lr * step.WeightDecay,
            SegmentCount = segmentCount, Chunks = chunks, HasGradScale = gradScale.IsEmpty ? 0 : 1, HasBf16 = paramBf16.IsEmpty ? 0 : 1,
        };
        _adamw(Config(TileGroups((long)segmentCount * chunks)), F(param), F(grad), F(m), F(v), I(segments), FOrDummy(gradScale), Bf16OrDummy(paramBf16), a);
    }

    /// <summary>
    /// PyTorch's AdamW per element of each segment: p ·= 1 − lr·wd (decay segments); m = m + (1 − β1)(g − m);
    /// v = β2·v + (1 − β2)·g²; p −= step_size · m / (sqrt(v) / sqrt(bc2) + eps), g scaled by gradScale[0] if given; with HasBf16 the new p rounded to bfloat16 goes to p16 as well.
    /// </summary>
    [IlgpuKernel]
    internal static void AdamWKernel(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v,
        ArrayView<int> segments, ArrayView<float> gradScale, ArrayView<ushort> p16, AdamWArgs a)
    {
        float gs = a.HasGradScale != 0 ? gradScale[0] : 1f;
        long count = p.Length;
        int units = a.SegmentCount * a.Chunks;
        long stride = (long)a.Chunks * GroupSize;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int s = u / a.Chunks, chunk = u - s * a.Chunks;
            long start = segments[3 * s], end = start + segments[3 * s + 1];
            float decay = segments[3 * s + 2] != 0 ? a.DecayFactor : 1f;
            if (start < 0) start = 0;
            if (end > count) end = count;
            for (long i = start + (long)chunk * GroupSize + Group.IdxX; i < end; i += stride)
            {
                float gi = g[i] * gs;
                float mi = m[i] + a.OneMinusBeta1 * (gi - m[i]);
                float vi = a.Beta2 * v[i] + a.OneMinusBeta2 * gi * gi;
                m[i] = mi;
                v[i] = vi;
                float pi = p[i] * decay - mi / (XMath.Sqrt(vi) / a.Bc2Sqrt + a.Eps) * a.StepSize;
                p[i] = pi;
                if (a.HasBf16 != 0) p16[i] = RoundToBf16(pi);
            }
        }
    }
}
