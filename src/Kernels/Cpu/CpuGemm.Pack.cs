using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace HftRuntime.Kernels.Cpu;

public static unsafe partial class CpuGemm
{
    // Packed layout. A block: ceil(mc / MR) strips, strip s holding rows s·MR .. s·MR+MR-1 as kc groups of MR
    // consecutive values (dst[p·MR + r]). B panel: ceil(nc / NR) strips, strip s holding columns s·NR .. as kc
    // groups of NR values (dst[p·NR + j]). Rows or columns past the matrix edge are packed as zeros.
    //
    // Both operands come in one of two source layouts relative to the strip:
    //   "direct"     : the R values of one p are contiguous in the source (op(a) with transA, op(b) without transB);
    //   "transposed" : the kc values of one strip row are contiguous in the source (op(a) without transA, op(b)
    //                  with transB), so packing is a transpose.

    /// <summary>Packs rows [r0, r0 + rows) × depth [p0, p0 + kc) of op(x) into strips of height R.</summary>
    /// <param name="dst">Packed strips, each kc·R floats.</param>
    /// <param name="x">The stored matrix.</param>
    /// <param name="ld">Its leading dimension.</param>
    /// <param name="transposed">True when element (r, p) of op(x) is x[r·ld + p] (rows contiguous along p).</param>
    /// <param name="r0">First row (of op(x) as seen by the strips: m for A, n for B).</param>
    /// <param name="rows">Rows to pack.</param>
    /// <param name="p0">First depth index.</param>
    /// <param name="kc">Depth.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PackBlock<TK, TR>(float* dst, float* x, nint ld, bool transposed, int r0, int rows, int p0, int kc)
        where TK : struct, IMicroKernel where TR : struct, IStrip
    {
        int R = TR.Height;
        for (int s = 0; s < rows; s += R)
        {
            int valid = Math.Min(R, rows - s);
            if (transposed)
            {
                if (TK.AvxPacking && Avx.IsSupported) PackTransposedAvx<TR>(dst, x + (nint)(r0 + s) * ld + p0, ld, valid, kc);
                else PackTransposedScalar<TR>(dst, x + (nint)(r0 + s) * ld + p0, ld, valid, kc);
            }
            else
            {
                PackDirect<TR>(dst, x + (nint)p0 * ld + r0 + s, ld, valid, kc);
            }
            dst += (nint)kc * R;
        }
    }

    /// <summary>Strip height as a JIT-time constant.</summary>
    private interface IStrip
    {
        /// <summary>Values per depth step in a packed strip.</summary>
        static abstract int Height { get; }
    }

    private struct StripMR<TK> : IStrip where TK : struct, IMicroKernel
    {
        public static int Height => TK.MR;
    }

    private struct StripNR<TK> : IStrip where TK : struct, IMicroKernel
    {
        public static int Height => TK.NR;
    }

    /// <summary>dst[p·R + j] = src[p·ld + j] for j &lt; valid, 0 for valid ≤ j &lt; R.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackDirect<TR>(float* dst, float* src, nint ld, int valid, int kc) where TR : struct, IStrip
    {
        int R = TR.Height;
        if (valid == R)
        {
            for (int p = 0; p < kc; p++)
            {
                CopyRow<TR>(dst, src);
                dst += R;
                src += ld;
            }
            return;
        }
        for (int p = 0; p < kc; p++)
        {
            int j = 0;
            for (; j < valid; j++) dst[j] = src[j];
            for (; j < R; j++) dst[j] = 0f;
            dst += R;
            src += ld;
        }
    }

    /// <summary>Copies R floats (R a JIT constant), with overlapping vector moves where R is not a multiple.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyRow<TR>(float* d, float* s) where TR : struct, IStrip
    {
        int R = TR.Height;
        if (Vector512.IsHardwareAccelerated && R % 16 == 0)
        {
            for (int o = 0; o < R; o += 16) Vector512.Store(Vector512.Load(s + o), d + o);
        }
        else if (Vector256.IsHardwareAccelerated && R >= 8)
        {
            int o = 0;
            for (; o + 8 <= R; o += 8) Vector256.Store(Vector256.Load(s + o), d + o);
            if (o < R)
            {
                if (R - o > 4) Vector256.Store(Vector256.Load(s + R - 8), d + R - 8);
                else Vector128.Store(Vector128.Load(s + R - 4), d + R - 4);
            }
        }
        else if (Vector128.IsHardwareAccelerated && R >= 4)
        {
            int o = 0;
            for (; o + 4 <= R; o += 4) Vector128.Store(Vector128.Load(s + o), d + o);
            if (o < R) Vector128.Store(Vector128.Load(s + R - 4), d + R - 4);
        }
        else
        {
            for (int o = 0; o < R; o++) d[o] = s[o];
        }
    }

    /// <summary>dst[p·R + r] = src[r·ld + p] for r &lt; valid, 0 for valid ≤ r &lt; R (portable).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackTransposedScalar<TR>(float* dst, float* src, nint ld, int valid, int kc) where TR : struct, IStrip
    {
        int R = TR.Height;
        for (int r = 0; r < valid; r++)
        {
            float* s = src + r * ld;
            float* d = dst + r;
            int p = 0;
            for (; p + 4 <= kc; p += 4)
            {
                d[0] = s[p]; d[R] = s[p + 1]; d[2 * R] = s[p + 2]; d[3 * R] = s[p + 3];
                d += 4 * R;
            }
            for (; p < kc; p++) { *d = s[p]; d += R; }
        }
        if (valid < R)
        {
            for (int p = 0; p < kc; p++)
                for (int r = valid; r < R; r++) dst[p * R + r] = 0f;
        }
    }

    /// <summary>
    /// As <see cref="PackTransposedScalar{TR}"/> with 8×8 AVX transposes. Row groups of 8 are stored as whole
    /// vectors; a group that sticks out past R spills into the next depth step's first slots, which the groups
    /// stored after it (lower groups, then the next step) overwrite. The last spill lands past the strip, in the
    /// next strip (packed later) or in the buffer's slack.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackTransposedAvx<TR>(float* dst, float* src, nint ld, int valid, int kc) where TR : struct, IStrip
    {
        int R = TR.Height;
        int kc8 = kc & ~7;
        for (int p = 0; p < kc8; p += 8)
        {
            for (int g = (R - 1) & ~7; g >= 0; g -= 8)
            {
                int n = Math.Min(8, valid - g);
                float* s = src + g * ld + p;
                float* d = dst + p * R + g;
                if (n <= 0)
                {
                    var z = Vector256<float>.Zero;
                    for (int q = 0; q < 8; q++) Vector256.Store(z, d + q * R);
                    continue;
                }
                var r0 = Avx.LoadVector256(s);
                var r1 = n > 1 ? Avx.LoadVector256(s + ld) : Vector256<float>.Zero;
                var r2 = n > 2 ? Avx.LoadVector256(s + 2 * ld) : Vector256<float>.Zero;
                var r3 = n > 3 ? Avx.LoadVector256(s + 3 * ld) : Vector256<float>.Zero;
                var r4 = n > 4 ? Avx.LoadVector256(s + 4 * ld) : Vector256<float>.Zero;
                var r5 = n > 5 ? Avx.LoadVector256(s + 5 * ld) : Vector256<float>.Zero;
                var r6 = n > 6 ? Avx.LoadVector256(s + 6 * ld) : Vector256<float>.Zero;
                var r7 = n > 7 ? Avx.LoadVector256(s + 7 * ld) : Vector256<float>.Zero;

                var t0 = Avx.UnpackLow(r0, r1);
                var t1 = Avx.UnpackHigh(r0, r1);
                var t2 = Avx.UnpackLow(r2, r3);
                var t3 = Avx.UnpackHigh(r2, r3);
                var t4 = Avx.UnpackLow(r4, r5);
                var t5 = Avx.UnpackHigh(r4, r5);
                var t6 = Avx.UnpackLow(r6, r7);
                var t7 = Avx.UnpackHigh(r6, r7);

                var u0 = Avx.Shuffle(t0, t2, 0x44);
                var u1 = Avx.Shuffle(t0, t2, 0xEE);
                var u2 = Avx.Shuffle(t1, t3, 0x44);
                var u3 = Avx.Shuffle(t1, t3, 0xEE);
                var u4 = Avx.Shuffle(t4, t6, 0x44);
                var u5 = Avx.Shuffle(t4, t6, 0xEE);
                var u6 = Avx.Shuffle(t5, t7, 0x44);
                var u7 = Avx.Shuffle(t5, t7, 0xEE);

                Avx.Store(d, Avx.Permute2x128(u0, u4, 0x20));
                Avx.Store(d + R, Avx.Permute2x128(u1, u5, 0x20));
                Avx.Store(d + 2 * R, Avx.Permute2x128(u2, u6, 0x20));
                Avx.Store(d + 3 * R, Avx.Permute2x128(u3, u7, 0x20));
                Avx.Store(d + 4 * R, Avx.Permute2x128(u0, u4, 0x31));
                Avx.Store(d + 5 * R, Avx.Permute2x128(u1, u5, 0x31));
                Avx.Store(d + 6 * R, Avx.Permute2x128(u2, u6, 0x31));
                Avx.Store(d + 7 * R, Avx.Permute2x128(u3, u7, 0x31));
            }
        }
        for (int p = kc8; p < kc; p++)
        {
            float* d = dst + p * R;
            int r = 0;
            for (; r < valid; r++) d[r] = src[r * ld + p];
            for (; r < R; r++) d[r] = 0f;
        }
    }
}
