using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// RMSNorm. Forward and the input gradient use one warp per row (lanes stride over the row, butterfly shuffles
/// reduce it). The weight gradient is a reduction over rows without atomics: chunks of rows give per-column partial
/// sums in scratch, a second kernel adds each column's partials in order.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, RmsNormArgs> _rmsForward = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _rmsBackwardDx = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> _rmsDwPartial = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _rmsDwFinal = null!;

    private void LoadRmsNorm()
    {
        _rmsForward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, RmsNormArgs>(RmsNormForwardKernel);
        _rmsBackwardDx = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(RmsNormBackwardDxKernel);
        _rmsDwPartial = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(RmsNormDwPartialKernel);
        _rmsDwFinal = Load<ArrayView<float>, ArrayView<float>, int, int>(RmsNormDwFinalKernel);
    }

    private int RowWarpGroups(int rows) => TileGroups((rows + WarpsPerGroup - 1) / WarpsPerGroup);

    /// <summary>Shape and fused parts of a forward launch.</summary>
    internal struct RmsNormArgs
    {
        public int N, Dim, HasY, HasResidual, HasBf16;
        public float Eps;
    }

    /// <inheritdoc/>
    protected override void RmsNormForwardCore(Tensor y, Tensor rstd, Tensor x, Tensor w, int n, int dim, float eps, Tensor residual, Tensor yBf16)
    {
        var a = new RmsNormArgs { N = n, Dim = dim, Eps = eps, HasY = y.IsEmpty ? 0 : 1, HasResidual = residual.IsEmpty ? 0 : 1, HasBf16 = yBf16.IsEmpty ? 0 : 1 };
        _rmsForward(Config(RowWarpGroups(n)), FOrDummy(y), F(rstd), F(x), F(w), FOrDummy(residual), Bf16OrDummy(yBf16), a);
    }

    /// <inheritdoc/>
    protected override void RmsNormBackwardCore(Tensor dx, Tensor dw, Tensor dy, Tensor x, Tensor w, Tensor rstd, int n, int dim)
    {
        _rmsBackwardDx(Config(RowWarpGroups(n)), F(dx), F(dy), F(x), F(w), F(rstd), n, dim);
        if (dw.IsEmpty) return;
        int rowsPerChunk = Math.Max(32, (n + 1023) / 1024);
        int chunks = (n + rowsPerChunk - 1) / rowsPerChunk;
        var partials = Scratch((long)chunks * dim);
        _rmsDwPartial(Config(StreamGroups((long)chunks * dim)), partials, F(dy), F(x), F(rstd), n, dim, rowsPerChunk);
        _rmsDwFinal(Config(StreamGroups(dim)), F(dw), partials, dim, chunks);
    }

    /// <summary>
    /// y = x · rstd · w per row of x [n, dim], rstd[i] = 1 / sqrt(mean(x_i²) + eps); one warp per row. Fused: with
    /// HasResidual x += residual first (each lane rewrites the elements it reads again), with HasBf16 y also goes to
    /// y16 rounded to bfloat16, and without HasY only there.
    /// </summary>
    [IlgpuKernel]
    internal static void RmsNormForwardKernel(ArrayView<float> y, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> w,
        ArrayView<float> residual, ArrayView<ushort> y16, RmsNormArgs a)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        int lane = Warp.LaneIdx, warps = Grid.DimX * WarpsPerGroup, dim = a.Dim;
        for (int row = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx; row < a.N; row += warps)
        {
            long o = (long)row * dim;
            float ss = 0f;
            for (int j = lane; j < dim; j += WarpSize)
            {
                float v = x[o + j];
                if (a.HasResidual != 0)
                {
                    v += residual[o + j];
                    x[o + j] = v;
                }
                ss += v * v;
            }
            ss = DeviceReduce.WarpSum(ss, shared);
            float r = 1f / XMath.Sqrt(ss / dim + a.Eps);
            if (lane == 0) rstd[row] = r;
            for (int j = lane; j < dim; j += WarpSize)
            {
                float v = x[o + j] * r * w[j];
                if (a.HasY != 0) y[o + j] = v;
                if (a.HasBf16 != 0) y16[o + j] = RoundToBf16(v);
            }
        }
    }

    /// <summary>dx += rstd·dy·w − c·x with c = rstd³·mean(dy·w·x), per row; one warp per row.</summary>
    [IlgpuKernel]
    internal static void RmsNormBackwardDxKernel(ArrayView<float> dx, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, int n, int dim)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        int lane = Warp.LaneIdx, warps = Grid.DimX * WarpsPerGroup;
        for (int row = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx; row < n; row += warps)
        {
            long o = (long)row * dim;
            float dot = 0f;
            for (int j = lane; j < dim; j += WarpSize) dot += dy[o + j] * w[j] * x[o + j];
            dot = DeviceReduce.WarpSum(dot, shared);
            float r = rstd[row];
            float c = r * r * r * dot / dim;
            for (int j = lane; j < dim; j += WarpSize) dx[o + j] += r * dy[o + j] * w[j] - c * x[o + j];
        }
    }

    /// <summary>partials[c, j] = Σ over rows i of chunk c of dy[i, j]·x[i, j]·rstd[i] (chunks of rowsPerChunk rows).</summary>
    [IlgpuKernel]
    internal static void RmsNormDwPartialKernel(ArrayView<float> partials, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> rstd, int n, int dim, int rowsPerChunk)
    {
        long total = partials.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long e = Grid.GlobalIndex.X; e < total; e += stride)
        {
            int ei = (int)e, c = ei / dim, j = ei - c * dim;
            int r0 = c * rowsPerChunk, r1 = DeviceReduce.Min(n, r0 + rowsPerChunk);
            float s = 0f;
            for (int i = r0; i < r1; i++)
            {
                long o = (long)i * dim + j;
                s += dy[o] * x[o] * rstd[i];
            }
            partials[e] = s;
        }
    }

    /// <summary>dw[j] += Σ_c partials[c, j], chunks in order.</summary>
    [IlgpuKernel]
    internal static void RmsNormDwFinalKernel(ArrayView<float> dw, ArrayView<float> partials, int dim, int chunks)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int j = Grid.GlobalIndex.X; j < dim; j += stride)
        {
            float s = 0f;
            for (int c = 0; c < chunks; c++) s += partials[(long)c * dim + j];
            dw[j] += s;
        }
    }
}
