using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// RMSNorm's forward and input-gradient kernels on quads (see IlgpuBackend.RmsNorm.cs): taken where the rows are whole
/// 16-byte quads, two per lane and step, so that each step has four to eight 16-byte loads in flight.
/// </summary>
public sealed partial class IlgpuBackend
{
    /// <summary>
    /// <see cref="RmsNormForwardKernel"/> on quads (dim a multiple of 4): two quads per lane and step, each step's
    /// loads issued before its stores; the bf16 output as 8-byte stores.
    /// </summary>
    [IlgpuKernel]
    internal static void RmsNormForwardQuadsKernel(ArrayView<F4> y, ArrayView<float> rstd, ArrayView<F4> x, ArrayView<F4> w,
        ArrayView<F4> residual, ArrayView<U2> y16, RmsNormArgs a)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        int lane = Warp.LaneIdx, warps = Grid.DimX * WarpsPerGroup, quads = a.Dim / 4;
        for (int row = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx; row < a.N; row += warps)
        {
            long o = (long)row * quads;
            float s0 = 0f, s1 = 0f;
            int j = lane;
            for (; j + WarpSize < quads; j += 2 * WarpSize)
            {
                long i = o + j, k = i + WarpSize;
                F4 va = x[i], vb = x[k];
                if (a.HasResidual != 0)
                {
                    F4 ra = residual[i], rb = residual[k];
                    va = Sum(va, ra);
                    vb = Sum(vb, rb);
                    x[i] = va;
                    x[k] = vb;
                }
                s0 += SquaresOf(va);
                s1 += SquaresOf(vb);
            }
            if (j < quads)
            {
                F4 v = x[o + j];
                if (a.HasResidual != 0)
                {
                    v = Sum(v, residual[o + j]);
                    x[o + j] = v;
                }
                s0 += SquaresOf(v);
            }
            float ss = DeviceReduce.WarpSum(s0 + s1, shared);
            float r = 1f / XMath.Sqrt(ss / a.Dim + a.Eps);
            if (lane == 0) rstd[row] = r;
            j = lane;
            for (; j + WarpSize < quads; j += 2 * WarpSize)
            {
                long i = o + j, k = i + WarpSize;
                F4 xa = x[i], wa = w[j], xb = x[k], wb = w[j + WarpSize];
                F4 ya = Normed(xa, wa, r), yb = Normed(xb, wb, r);
                StoreNormedQuad(y, y16, i, ya, a);
                StoreNormedQuad(y, y16, k, yb, a);
            }
            if (j < quads) StoreNormedQuad(y, y16, o + j, Normed(x[o + j], w[j], r), a);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float SquaresOf(F4 v) => (v.X * v.X + v.Y * v.Y) + (v.Z * v.Z + v.W * v.W);

    /// <summary>x·w·r on a quad (the scalar kernel's order).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static F4 Normed(F4 x, F4 w, float r)
    {
        x.X = x.X * w.X * r; x.Y = x.Y * w.Y * r; x.Z = x.Z * w.Z * r; x.W = x.W * w.W * r;
        return x;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void StoreNormedQuad(ArrayView<F4> y, ArrayView<U2> y16, long i, F4 v, RmsNormArgs a)
    {
        if (a.HasY != 0) y[i] = v;
        if (a.HasBf16 != 0) y16[i] = PackQuad(v);
    }

    /// <summary>
    /// <see cref="RmsNormBackwardDxKernel"/> on quads (dim a multiple of 4): two quads per lane and step, each step's
    /// loads issued before its arithmetic and stores (16-byte loads: six, then eight, 96 and 128 bytes per lane in
    /// flight); the bf16 copy as 8-byte stores.
    /// </summary>
    [IlgpuKernel]
    internal static void RmsNormBackwardDxQuadsKernel(ArrayView<F4> dx, ArrayView<F4> dy, ArrayView<F4> x, ArrayView<F4> w, ArrayView<float> rstd,
        ArrayView<U2> dx16, RmsNormArgs a)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        int lane = Warp.LaneIdx, warps = Grid.DimX * WarpsPerGroup, quads = a.Dim / 4;
        for (int row = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx; row < a.N; row += warps)
        {
            long o = (long)row * quads;
            float d0 = 0f, d1 = 0f;
            int j = lane;
            for (; j + WarpSize < quads; j += 2 * WarpSize)
            {
                F4 ya = dy[o + j], xa = x[o + j], wa = w[j], yb = dy[o + j + WarpSize], xb = x[o + j + WarpSize], wb = w[j + WarpSize];
                d0 += DotQuad(ya, wa, xa);
                d1 += DotQuad(yb, wb, xb);
            }
            if (j < quads) d0 += DotQuad(dy[o + j], w[j], x[o + j]);
            float dot = DeviceReduce.WarpSum(d0 + d1, shared);
            float r = rstd[row];
            float c = r * r * r * dot / a.Dim;
            j = lane;
            for (; j + WarpSize < quads; j += 2 * WarpSize)
            {
                long i = o + j, k = i + WarpSize;
                F4 ga = dx[i], ya = dy[i], xa = x[i], wa = w[j], gb = dx[k], yb = dy[k], xb = x[k], wb = w[j + WarpSize];
                F4 na = DxQuad(ga, ya, xa, wa, r, c), nb = DxQuad(gb, yb, xb, wb, r, c);
                StoreDxQuad(dx, dx16, i, na, a.HasBf16);
                StoreDxQuad(dx, dx16, k, nb, a.HasBf16);
            }
            if (j < quads) StoreDxQuad(dx, dx16, o + j, DxQuad(dx[o + j], dy[o + j], x[o + j], w[j], r, c), a.HasBf16);
        }
    }

    /// <summary>Σ dy·w·x over a quad.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float DotQuad(F4 dy, F4 w, F4 x) => (dy.X * w.X * x.X + dy.Y * w.Y * x.Y) + (dy.Z * w.Z * x.Z + dy.W * w.W * x.W);

    /// <summary>dx + r·dy·w − c·x on a quad (<see cref="DxTerm"/>'s arithmetic).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static F4 DxQuad(F4 g, F4 dy, F4 x, F4 w, float r, float c)
    {
        g.X += r * dy.X * w.X - c * x.X;
        g.Y += r * dy.Y * w.Y - c * x.Y;
        g.Z += r * dy.Z * w.Z - c * x.Z;
        g.W += r * dy.W * w.W - c * x.W;
        return g;
    }

    /// <summary>dx[i] = g, and with bf16 ≠ 0 dx16[i] = g rounded.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void StoreDxQuad(ArrayView<F4> dx, ArrayView<U2> dx16, long i, F4 g, int bf16)
    {
        dx[i] = g;
        if (bf16 != 0) dx16[i] = PackQuad(g);
    }
}
