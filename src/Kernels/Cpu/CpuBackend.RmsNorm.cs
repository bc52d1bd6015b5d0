using System.Numerics;
using System.Numerics.Tensors;

namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    private struct RmsNormArgs { public float* Y, Rstd, X, W, Dx, Dw, Dy, Res; public ushort* Y16; public int N, Dim; public float Eps; }

    /// <inheritdoc/>
    protected override void RmsNormForwardCore(Tensor y, Tensor rstd, Tensor x, Tensor w, int n, int dim, float eps, Tensor residual, Tensor yBf16)
    {
        var a = new RmsNormArgs
        {
            Y = y.IsEmpty ? null : F(y), Rstd = F(rstd), X = F(x), W = F(w), N = n, Dim = dim, Eps = eps,
            Res = residual.IsEmpty ? null : F(residual), Y16 = yBf16.IsEmpty ? null : H(yBf16),
        };
        _pool.For(n, Math.Max(1, 16384 / dim), &RmsNormForwardRows, &a);
    }

    private static void RmsNormForwardRows(void* p, int s, int e)
    {
        var a = (RmsNormArgs*)p;
        int d = a->Dim;
        var w = new ReadOnlySpan<float>(a->W, d);
        // Without an fp32 output the row goes through this thread's scratch on its way to bf16.
        float* tmp = a->Y == null ? ScratchBuffer.Get(d) : null;
        for (int i = s; i < e; i++)
        {
            var x = new Span<float>(a->X + (long)i * d, d);
            if (a->Res != null) TensorPrimitives.Add(x, new ReadOnlySpan<float>(a->Res + (long)i * d, d), x);
            float* yp = a->Y != null ? a->Y + (long)i * d : tmp;
            var y = new Span<float>(yp, d);
            float r = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(x) / d + a->Eps);
            a->Rstd[i] = r;
            TensorPrimitives.Multiply(x, r, y);
            TensorPrimitives.Multiply(y, w, y);
            if (a->Y16 != null) RoundRange(yp, a->Y16 + (long)i * d, 0, d);
        }
    }

    /// <inheritdoc/>
    protected override void RmsNormBackwardCore(Tensor dx, Tensor dw, Tensor dy, Tensor x, Tensor w, Tensor rstd, int n, int dim, Tensor dxBf16)
    {
        var a = new RmsNormArgs { Dx = F(dx), Dw = dw.IsEmpty ? null : F(dw), Dy = F(dy), X = F(x), W = F(w), Rstd = F(rstd), N = n, Dim = dim };
        _pool.For(n, Math.Max(1, 8192 / dim), &RmsNormBackwardRows, &a);
        // The weight gradient sums over rows: split by columns so the order (and result) is thread-independent.
        if (a.Dw != null) _pool.For(dim, 64, &RmsNormWeightGradColumns, &a);
        if (!dxBf16.IsEmpty) ToBf16Core(dxBf16.Slice(0, n * dim), dx.Slice(0, n * dim));
    }

    private static void RmsNormBackwardRows(void* p, int s, int e)
    {
        var a = (RmsNormArgs*)p;
        int d = a->Dim, vw = System.Numerics.Vector<float>.Count;
        float* w = a->W;
        for (int i = s; i < e; i++)
        {
            float* x = a->X + (long)i * d, dy = a->Dy + (long)i * d, dx = a->Dx + (long)i * d;
            float r = a->Rstd[i];
            // c = r³ · mean(dy·w·x); dx += r·dy·w − c·x
            var acc = System.Numerics.Vector<float>.Zero;
            int j = 0;
            for (; j <= d - vw; j += vw)
                acc += System.Numerics.Vector.Load(dy + j) * System.Numerics.Vector.Load(w + j) * System.Numerics.Vector.Load(x + j);
            float dot = System.Numerics.Vector.Sum(acc);
            for (; j < d; j++) dot += dy[j] * w[j] * x[j];
            float c = r * r * r * dot / d;
            var vr = new System.Numerics.Vector<float>(r);
            var vc = new System.Numerics.Vector<float>(c);
            j = 0;
            for (; j <= d - vw; j += vw)
                (System.Numerics.Vector.Load(dx + j) + vr * System.Numerics.Vector.Load(dy + j) * System.Numerics.Vector.Load(w + j)
                    - vc * System.Numerics.Vector.Load(x + j)).Store(dx + j);
            for (; j < d; j++) dx[j] += r * dy[j] * w[j] - c * x[j];
        }
    }

    private static void RmsNormWeightGradColumns(void* p, int s, int e)
    {
        var a = (RmsNormArgs*)p;
        int d = a->Dim, wdt = e - s;
        var dw = new Span<float>(a->Dw + s, wdt);
        for (int i = 0; i < a->N; i++)
        {
            float r = a->Rstd[i];
            float* xr = a->X + (long)i * d + s, dyr = a->Dy + (long)i * d + s;
            for (int j = 0; j < wdt; j++) dw[j] += dyr[j] * xr[j] * r;
        }
    }
}
