using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// AdamW over the trainable block in one launch: work units are (segment, chunk) pairs; a unit reads its segment
/// (start, length, decay) from the device table and updates a strided share of it, with the formula and float
/// order of the CPU back-end. Elements outside every segment are not touched; a segment reaching outside the block
/// is clipped to it (the CPU back-end rejects it; a kernel must not fault). Memory-bound (28 bytes per element,
/// 30 with the bf16 copy): loads and stores are 16 bytes wide where a segment allows.
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

    /// <summary>Four adjacent fp32 elements (a 16-byte load or store).</summary>
    internal struct F4
    {
        public float X, Y, Z, W;
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
        // The kernel reads whole quads of 16 bytes (8 for the bf16 copy): the tensors must start on such boundaries.
        Aligned(param, 16); Aligned(grad, 16); Aligned(m, 16); Aligned(v, 16);
        if (!paramBf16.IsEmpty) Aligned(paramBf16, 8);
        _adamw(Config(TileGroups((long)segmentCount * chunks)), F(param), F(grad), F(m), F(v), I(segments), FOrDummy(gradScale), Bf16OrDummy(paramBf16), a);
    }

    private static void Aligned(Tensor t, int bytes)
    {
        if (t.ByteOffset % bytes != 0) throw new ArgumentException($"AdamW tensor '{t.Name}' must start on a {bytes}-byte boundary", t.Name);
    }

    /// <summary>
    /// PyTorch's AdamW per element of each segment: p ·= 1 − lr·wd (decay segments); m = m + (1 − β1)(g − m);
    /// v = β2·v + (1 − β2)·g²; p −= step_size · m / (sqrt(v) / sqrt(bc2) + eps), g scaled by gradScale[0] if given;
    /// with HasBf16 the new p rounded to bfloat16 goes to p16 as well. The part of a segment between its first and
    /// last multiple of 4 goes in 16-byte quads (the arrays seen as F4; p16 as 8-byte U2); its ragged ends (at most 3
    /// elements each) element by element, by the segment's first chunk.
    /// </summary>
    [IlgpuKernel]
    internal static void AdamWKernel(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v,
        ArrayView<int> segments, ArrayView<float> gradScale, ArrayView<ushort> p16, AdamWArgs a)
    {
        var p4 = p.Cast<F4>(); var g4 = g.Cast<F4>(); var m4 = m.Cast<F4>(); var v4 = v.Cast<F4>();
        var p16q = p16.Cast<U2>();
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
            if (start >= end) continue;
            long q0 = (start + 3) >> 2, q1 = end >> 2; // whole quads [q0, q1)
            if (q0 >= q1) q0 = q1 = end >> 2;
            int t = Group.IdxX;
            if (chunk == 0 && t < 8)
            {
                // The ragged ends, at most 3 elements each: [start, 4·q0) by threads 0..3, [4·q1, end) by threads 4..7.
                long i = t < 4 ? start + t : 4 * q1 + t - 4;
                if (t < 4 ? i < 4 * q0 && i < end : i < end && i >= start)
                {
                    float pi = AdamWElement(p[i], g[i] * gs, ref m[i], ref v[i], decay, a);
                    p[i] = pi;
                    if (a.HasBf16 != 0) p16[i] = RoundToBf16(pi);
                }
            }
            // Two quads per step, their eight 16-byte loads issued together (one quad per step: 91 % of the copy
            // bandwidth on an H100).
            long j = q0 + (long)chunk * GroupSize + t;
            for (; j + stride < q1; j += 2 * stride)
            {
                F4 pa = p4[j], ga = g4[j], ma = m4[j], va = v4[j];
                F4 pb = p4[j + stride], gb = g4[j + stride], mb = m4[j + stride], vb = v4[j + stride];
                AdamWQuad(p4, m4, v4, p16q, j, pa, ga, ma, va, gs, decay, a);
                AdamWQuad(p4, m4, v4, p16q, j + stride, pb, gb, mb, vb, gs, decay, a);
            }
            if (j < q1) AdamWQuad(p4, m4, v4, p16q, j, p4[j], g4[j], m4[j], v4[j], gs, decay, a);
        }
    }

    /// <summary>One quad's update from its loaded values, stored at quad j (and its bf16 copy with a.HasBf16).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void AdamWQuad(ArrayView<F4> p4, ArrayView<F4> m4, ArrayView<F4> v4, ArrayView<U2> p16q, long j,
        F4 pq, F4 gq, F4 mq, F4 vq, float gs, float decay, AdamWArgs a)
    {
        pq.X = AdamWElement(pq.X, gq.X * gs, ref mq.X, ref vq.X, decay, a);
        pq.Y = AdamWElement(pq.Y, gq.Y * gs, ref mq.Y, ref vq.Y, decay, a);
        pq.Z = AdamWElement(pq.Z, gq.Z * gs, ref mq.Z, ref vq.Z, decay, a);
        pq.W = AdamWElement(pq.W, gq.W * gs, ref mq.W, ref vq.W, decay, a);
        m4[j] = mq;
        v4[j] = vq;
        p4[j] = pq;
        if (a.HasBf16 != 0) p16q[j] = PackQuad(pq);
    }

    /// <summary>One element's update (m and v in place); the new parameter.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float AdamWElement(float pi, float gi, ref float m, ref float v, float decay, AdamWArgs a)
    {
        float mi = m + a.OneMinusBeta1 * (gi - m);
        float vi = a.Beta2 * v + a.OneMinusBeta2 * gi * gi;
        m = mi;
        v = vi;
        return pi * decay - mi / (XMath.Sqrt(vi) / a.Bc2Sqrt + a.Eps) * a.StepSize;
    }
}
