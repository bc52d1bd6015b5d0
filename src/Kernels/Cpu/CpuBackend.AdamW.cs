using System.Numerics;

namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    private struct AdamWArgs
    {
        public float* P, G, M, V;
        public ushort* P16;
        public long Start;
        public float GradScale, Decay, Beta1, Beta2, StepSize, Bc2Sqrt, Eps;
    }

    /// <inheritdoc/>
    protected override void AdamWCore(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor segments, int segmentCount, AdamWStep step, Tensor gradScale, Tensor paramBf16)
    {
        int* seg = I(segments);
        var a = new AdamWArgs
        {
            P = F(param), G = F(grad), M = F(m), V = F(v), P16 = paramBf16.IsEmpty ? null : H(paramBf16),
            GradScale = gradScale.IsEmpty ? 1f : *F(gradScale),
            Beta1 = step.Beta1, Beta2 = step.Beta2, StepSize = step.StepSize, Bc2Sqrt = step.BiasCorrection2Sqrt, Eps = step.Eps,
        };
        for (int s = 0; s < segmentCount; s++)
        {
            int start = seg[3 * s], length = seg[3 * s + 1];
            if (start < 0 || length < 0 || (long)start + length > param.Count)
                throw new ArgumentOutOfRangeException(nameof(segments), $"segment {s} [{start}, {(long)start + length}) is outside the trainable block of {param.Count} elements");
            a.Start = start;
            a.Decay = seg[3 * s + 2] != 0 ? 1f - step.Lr * step.WeightDecay : 1f;
            _pool.For(length, 1 << 16, &AdamWChunk, &a);
        }
    }

    private static void AdamWChunk(void* ptr, int s, int e)
    {
        var a = (AdamWArgs*)ptr;
        long o = a->Start;
        float* p = a->P + o, g = a->G + o, m = a->M + o, v = a->V + o;
        // PyTorch: p *= 1 - lr·wd; m = lerp(m, g, 1 - β1); v = β2·v + (1 - β2)·g²;
        // p -= step_size · m / (sqrt(v) / sqrt(bc2) + eps)
        float gs = a->GradScale, decay = a->Decay, b2 = a->Beta2, c1 = 1f - a->Beta1, c2 = 1f - a->Beta2;
        float stepSize = a->StepSize, bc2 = a->Bc2Sqrt, eps = a->Eps;
        int i = s, w = Vector<float>.Count;
        var vgs = new Vector<float>(gs); var vdecay = new Vector<float>(decay); var vc1 = new Vector<float>(c1);
        var vb2 = new Vector<float>(b2); var vc2 = new Vector<float>(c2); var vstep = new Vector<float>(stepSize);
        var vbc2 = new Vector<float>(bc2); var veps = new Vector<float>(eps);
        for (; i <= e - w; i += w)
        {
            var gi = Vector.Load(g + i) * vgs;
            var mi = Vector.Load(m + i);
            mi += vc1 * (gi - mi);
            var vi = vb2 * Vector.Load(v + i) + vc2 * gi * gi;
            var pi = Vector.Load(p + i) * vdecay;
            pi -= mi / (Vector.SquareRoot(vi) / vbc2 + veps) * vstep;
            mi.Store(m + i); vi.Store(v + i); pi.Store(p + i);
        }
        for (; i < e; i++)
        {
            float gi = g[i] * gs;
            float mi = m[i] + c1 * (gi - m[i]);
            float vi = b2 * v[i] + c2 * gi * gi;
            m[i] = mi; v[i] = vi;
            p[i] = p[i] * decay - mi / (MathF.Sqrt(vi) / bc2 + eps) * stepSize;
        }
        if (a->P16 != null) RoundRange(p, a->P16 + o, s, e);
    }
}
