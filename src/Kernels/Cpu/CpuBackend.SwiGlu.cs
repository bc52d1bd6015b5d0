using System.Numerics.Tensors;

namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    private struct SwiGluArgs { public float* H, G, U, Dg, Du; public ushort* H16; }

    private const int SwiGluChunk = 1024;

    /// <inheritdoc/>
    protected override void SwiGluForwardCore(Tensor h, Tensor gate, Tensor up, Tensor hBf16)
    {
        var a = new SwiGluArgs { H = h.IsEmpty ? null : F(h), G = F(gate), U = F(up), H16 = hBf16.IsEmpty ? null : H(hBf16) };
        _pool.For(gate.Count, 16 * SwiGluChunk, &SwiGluForwardChunk, &a);
    }

    private static void SwiGluForwardChunk(void* p, int s, int e)
    {
        var a = (SwiGluArgs*)p;
        float* sig = stackalloc float[SwiGluChunk];
        float* tmp = stackalloc float[SwiGluChunk];
        for (int c = s; c < e; c += SwiGluChunk)
        {
            int len = Math.Min(SwiGluChunk, e - c);
            var g = new ReadOnlySpan<float>(a->G + c, len);
            var sg = new Span<float>(sig, len);
            TensorPrimitives.Sigmoid(g, sg);
            float* hp = a->H != null ? a->H + c : tmp;
            var h = new Span<float>(hp, len);
            TensorPrimitives.Multiply(g, sg, h);
            TensorPrimitives.Multiply(h, new ReadOnlySpan<float>(a->U + c, len), h);
            if (a->H16 != null) RoundRange(hp, a->H16 + c, 0, len);
        }
    }

    /// <inheritdoc/>
    protected override void SwiGluBackwardCore(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up)
    {
        var a = new SwiGluArgs { H = F(dh), G = F(gate), U = F(up), Dg = F(dGate), Du = F(dUp) };
        _pool.For(dh.Count, 16 * SwiGluChunk, &SwiGluBackwardChunk, &a);
    }

    private static void SwiGluBackwardChunk(void* p, int s, int e)
    {
        var a = (SwiGluArgs*)p;
        Span<float> sig = stackalloc float[SwiGluChunk];
        for (int c = s; c < e; c += SwiGluChunk)
        {
            int len = Math.Min(SwiGluChunk, e - c);
            TensorPrimitives.Sigmoid(new ReadOnlySpan<float>(a->G + c, len), sig[..len]);
            float* g = a->G + c, u = a->U + c, dh = a->H + c, dg = a->Dg + c, du = a->Du + c;
            for (int j = 0; j < len; j++)
            {
                float gj = g[j], uj = u[j], sj = sig[j], dhj = dh[j];
                float silu = gj * sj;
                dg[j] = dhj * uj * sj * (1f + gj * (1f - sj));
                du[j] = dhj * silu;
            }
        }
    }
}
