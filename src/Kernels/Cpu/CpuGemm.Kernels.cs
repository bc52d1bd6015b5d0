using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace HftRuntime.Kernels.Cpu;

public static unsafe partial class CpuGemm
{
    /// <summary>
    /// One register-blocked micro-kernel with its blocking parameters. Implemented by structs so that the
    /// generic driver is specialised per kernel by the JIT (the constants fold, the kernel call inlines).
    /// </summary>
    private interface IMicroKernel
    {
        /// <summary>Rows of a micro-tile (height of a packed A strip).</summary>
        static abstract int MR { get; }

        /// <summary>Columns of a micro-tile (width of a packed B strip).</summary>
        static abstract int NR { get; }

        /// <summary>Rows of a packed A block (a multiple of MR).</summary>
        static abstract int MC { get; }

        /// <summary>Depth of one packed block.</summary>
        static abstract int KC { get; }

        /// <summary>Columns of a packed B panel (a multiple of NR).</summary>
        static abstract int NC { get; }

        /// <summary>Whether the packing routines may use the AVX 8×8 transpose.</summary>
        static abstract bool AvxPacking { get; }

        /// <summary>Whether <see cref="Run"/> computes and writes only the first mr rows (else always MR).</summary>
        static abstract bool RowExact { get; }

        /// <summary>
        /// c[MR, NR] (row stride ldc) = alpha · Σ_p a[p, :]ᵀ b[p, :] (mode 0) or fma(acc, alpha, c) (mode 1), where a is
        /// an MR-tall packed strip and b an NR-wide packed strip, both <paramref name="kc"/> deep. Kernels with
        /// <see cref="RowExact"/> handle only the first <paramref name="mr"/> rows.
        /// </summary>
        static abstract void Run(int kc, float* a, float* b, float* c, nint ldc, float alpha, int mode, int mr);
    }

    // ------------------------------------------------------------------ 512-bit: 14 × 32, 28 accumulators

    private struct Kernel512 : IMicroKernel
    {
        public static int MR => 14;
        public static int NR => 32;
        public static int MC => 14 * 12;
        public static int KC => 256;
        public static int NC => 2048;
        public static bool AvxPacking => true;
        public static bool RowExact => true;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Run(int kc, float* a, float* b, float* c, nint ldc, float alpha, int mode, int mr)
        {
            // Edge strips (the last rows of c) get a kernel with just the rows they need.
            switch (mr)
            {
                case 14: Rows<R14>(kc, a, b, c, ldc, alpha, mode); break;
                case 13: Rows<R13>(kc, a, b, c, ldc, alpha, mode); break;
                case 12: Rows<R12>(kc, a, b, c, ldc, alpha, mode); break;
                case 11: Rows<R11>(kc, a, b, c, ldc, alpha, mode); break;
                case 10: Rows<R10>(kc, a, b, c, ldc, alpha, mode); break;
                case 9: Rows<R9>(kc, a, b, c, ldc, alpha, mode); break;
                case 8: Rows<R8>(kc, a, b, c, ldc, alpha, mode); break;
                case 7: Rows<R7>(kc, a, b, c, ldc, alpha, mode); break;
                case 6: Rows<R6>(kc, a, b, c, ldc, alpha, mode); break;
                case 5: Rows<R5>(kc, a, b, c, ldc, alpha, mode); break;
                case 4: Rows<R4>(kc, a, b, c, ldc, alpha, mode); break;
                case 3: Rows<R3>(kc, a, b, c, ldc, alpha, mode); break;
                case 2: Rows<R2>(kc, a, b, c, ldc, alpha, mode); break;
                default: Rows<R1>(kc, a, b, c, ldc, alpha, mode); break;
            }
        }

        /// <summary>The first TR.Value rows of the 14 × 32 tile (a strip stride stays 14).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Rows<TR>(int kc, float* a, float* b, float* c, nint ldc, float alpha, int mode) where TR : struct, IRows
        {
            int R = TR.Value;
            Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default;
            Vector512<float> c20 = default, c21 = default, c30 = default, c31 = default;
            Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default;
            Vector512<float> c60 = default, c61 = default, c70 = default, c71 = default;
            Vector512<float> c80 = default, c81 = default, c90 = default, c91 = default;
            Vector512<float> ca0 = default, ca1 = default, cb0 = default, cb1 = default;
            Vector512<float> cc0 = default, cc1 = default, cd0 = default, cd1 = default;
            for (int p = 0; p < kc; p++)
            {
                var b0 = Vector512.Load(b);
                var b1 = Vector512.Load(b + 16);
                Vector512<float> x;
                x = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
                if (R > 1) { x = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11); }
                if (R > 2) { x = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21); }
                if (R > 3) { x = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31); }
                if (R > 4) { x = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41); }
                if (R > 5) { x = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51); }
                if (R > 6) { x = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(x, b0, c60); c61 = Vector512.FusedMultiplyAdd(x, b1, c61); }
                if (R > 7) { x = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(x, b0, c70); c71 = Vector512.FusedMultiplyAdd(x, b1, c71); }
                if (R > 8) { x = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(x, b0, c80); c81 = Vector512.FusedMultiplyAdd(x, b1, c81); }
                if (R > 9) { x = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(x, b0, c90); c91 = Vector512.FusedMultiplyAdd(x, b1, c91); }
                if (R > 10) { x = Vector512.Create(a[10]); ca0 = Vector512.FusedMultiplyAdd(x, b0, ca0); ca1 = Vector512.FusedMultiplyAdd(x, b1, ca1); }
                if (R > 11) { x = Vector512.Create(a[11]); cb0 = Vector512.FusedMultiplyAdd(x, b0, cb0); cb1 = Vector512.FusedMultiplyAdd(x, b1, cb1); }
                if (R > 12) { x = Vector512.Create(a[12]); cc0 = Vector512.FusedMultiplyAdd(x, b0, cc0); cc1 = Vector512.FusedMultiplyAdd(x, b1, cc1); }
                if (R > 13) { x = Vector512.Create(a[13]); cd0 = Vector512.FusedMultiplyAdd(x, b0, cd0); cd1 = Vector512.FusedMultiplyAdd(x, b1, cd1); }
                a += 14;
                b += 32;
            }
            var al = Vector512.Create(alpha);
            Put(c + 0 * ldc, c00, c01, al, mode);
            if (R > 1) Put(c + 1 * ldc, c10, c11, al, mode);
            if (R > 2) Put(c + 2 * ldc, c20, c21, al, mode);
            if (R > 3) Put(c + 3 * ldc, c30, c31, al, mode);
            if (R > 4) Put(c + 4 * ldc, c40, c41, al, mode);
            if (R > 5) Put(c + 5 * ldc, c50, c51, al, mode);
            if (R > 6) Put(c + 6 * ldc, c60, c61, al, mode);
            if (R > 7) Put(c + 7 * ldc, c70, c71, al, mode);
            if (R > 8) Put(c + 8 * ldc, c80, c81, al, mode);
            if (R > 9) Put(c + 9 * ldc, c90, c91, al, mode);
            if (R > 10) Put(c + 10 * ldc, ca0, ca1, al, mode);
            if (R > 11) Put(c + 11 * ldc, cb0, cb1, al, mode);
            if (R > 12) Put(c + 12 * ldc, cc0, cc1, al, mode);
            if (R > 13) Put(c + 13 * ldc, cd0, cd1, al, mode);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Put(float* c, Vector512<float> v0, Vector512<float> v1, Vector512<float> alpha, int mode)
        {
            if (mode == 0)
            {
                Vector512.Store(v0 * alpha, c);
                Vector512.Store(v1 * alpha, c + 16);
            }
            else
            {
                Vector512.Store(Vector512.FusedMultiplyAdd(v0, alpha, Vector512.Load(c)), c);
                Vector512.Store(Vector512.FusedMultiplyAdd(v1, alpha, Vector512.Load(c + 16)), c + 16);
            }
        }
    }

    // ------------------------------------------------------------------ 256-bit: 6 × 16, 12 accumulators

    private struct Kernel256 : IMicroKernel
    {
        public static int MR => 6;
        public static int NR => 16;
        public static int MC => 6 * 24;
        public static int KC => 256;
        public static int NC => 2048;
        public static bool AvxPacking => true;
        public static bool RowExact => false;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Run(int kc, float* a, float* b, float* c, nint ldc, float alpha, int mode, int mr)
        {
            Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default;
            Vector256<float> c20 = default, c21 = default, c30 = default, c31 = default;
            Vector256<float> c40 = default, c41 = default, c50 = default, c51 = default;
            for (int p = 0; p < kc; p++)
            {
                var b0 = Vector256.Load(b);
                var b1 = Vector256.Load(b + 8);
                Vector256<float> x;
                x = Vector256.Create(a[0]); c00 = Vector256.FusedMultiplyAdd(x, b0, c00); c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
                x = Vector256.Create(a[1]); c10 = Vector256.FusedMultiplyAdd(x, b0, c10); c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
                x = Vector256.Create(a[2]); c20 = Vector256.FusedMultiplyAdd(x, b0, c20); c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
                x = Vector256.Create(a[3]); c30 = Vector256.FusedMultiplyAdd(x, b0, c30); c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
                x = Vector256.Create(a[4]); c40 = Vector256.FusedMultiplyAdd(x, b0, c40); c41 = Vector256.FusedMultiplyAdd(x, b1, c41);
                x = Vector256.Create(a[5]); c50 = Vector256.FusedMultiplyAdd(x, b0, c50); c51 = Vector256.FusedMultiplyAdd(x, b1, c51);
                a += 6;
                b += 16;
            }
            var al = Vector256.Create(alpha);
            Put(c, c00, c01, al, mode); c += ldc;
            Put(c, c10, c11, al, mode); c += ldc;
            Put(c, c20, c21, al, mode); c += ldc;
            Put(c, c30, c31, al, mode); c += ldc;
            Put(c, c40, c41, al, mode); c += ldc;
            Put(c, c50, c51, al, mode);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Put(float* c, Vector256<float> v0, Vector256<float> v1, Vector256<float> alpha, int mode)
        {
            if (mode == 0)
            {
                Vector256.Store(v0 * alpha, c);
                Vector256.Store(v1 * alpha, c + 8);
            }
            else
            {
                Vector256.Store(Vector256.FusedMultiplyAdd(v0, alpha, Vector256.Load(c)), c);
                Vector256.Store(Vector256.FusedMultiplyAdd(v1, alpha, Vector256.Load(c + 8)), c + 8);
            }
        }
    }

    // ------------------------------------------------------------------ 128-bit: 8 × 12, 24 accumulators

    private struct Kernel128 : IMicroKernel
    {
        public static int MR => 8;
        public static int NR => 12;
        public static int MC => 8 * 16;
        public static int KC => 256;
        public static int NC => 12 * 170;
        public static bool AvxPacking => false;
        public static bool RowExact => false;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Run(int kc, float* a, float* b, float* c, nint ldc, float alpha, int mode, int mr)
        {
            Vector128<float> c00 = default, c01 = default, c02 = default, c10 = default, c11 = default, c12 = default;
            Vector128<float> c20 = default, c21 = default, c22 = default, c30 = default, c31 = default, c32 = default;
            Vector128<float> c40 = default, c41 = default, c42 = default, c50 = default, c51 = default, c52 = default;
            Vector128<float> c60 = default, c61 = default, c62 = default, c70 = default, c71 = default, c72 = default;
            for (int p = 0; p < kc; p++)
            {
                var b0 = Vector128.Load(b);
                var b1 = Vector128.Load(b + 4);
                var b2 = Vector128.Load(b + 8);
                Vector128<float> x;
                x = Vector128.Create(a[0]); c00 = Vector128.FusedMultiplyAdd(x, b0, c00); c01 = Vector128.FusedMultiplyAdd(x, b1, c01); c02 = Vector128.FusedMultiplyAdd(x, b2, c02);
                x = Vector128.Create(a[1]); c10 = Vector128.FusedMultiplyAdd(x, b0, c10); c11 = Vector128.FusedMultiplyAdd(x, b1, c11); c12 = Vector128.FusedMultiplyAdd(x, b2, c12);
                x = Vector128.Create(a[2]); c20 = Vector128.FusedMultiplyAdd(x, b0, c20); c21 = Vector128.FusedMultiplyAdd(x, b1, c21); c22 = Vector128.FusedMultiplyAdd(x, b2, c22);
                x = Vector128.Create(a[3]); c30 = Vector128.FusedMultiplyAdd(x, b0, c30); c31 = Vector128.FusedMultiplyAdd(x, b1, c31); c32 = Vector128.FusedMultiplyAdd(x, b2, c32);
                x = Vector128.Create(a[4]); c40 = Vector128.FusedMultiplyAdd(x, b0, c40); c41 = Vector128.FusedMultiplyAdd(x, b1, c41); c42 = Vector128.FusedMultiplyAdd(x, b2, c42);
                x = Vector128.Create(a[5]); c50 = Vector128.FusedMultiplyAdd(x, b0, c50); c51 = Vector128.FusedMultiplyAdd(x, b1, c51); c52 = Vector128.FusedMultiplyAdd(x, b2, c52);
                x = Vector128.Create(a[6]); c60 = Vector128.FusedMultiplyAdd(x, b0, c60); c61 = Vector128.FusedMultiplyAdd(x, b1, c61); c62 = Vector128.FusedMultiplyAdd(x, b2, c62);
                x = Vector128.Create(a[7]); c70 = Vector128.FusedMultiplyAdd(x, b0, c70); c71 = Vector128.FusedMultiplyAdd(x, b1, c71); c72 = Vector128.FusedMultiplyAdd(x, b2, c72);
                a += 8;
                b += 12;
            }
            var al = Vector128.Create(alpha);
            Put(c, c00, c01, c02, al, mode); c += ldc;
            Put(c, c10, c11, c12, al, mode); c += ldc;
            Put(c, c20, c21, c22, al, mode); c += ldc;
            Put(c, c30, c31, c32, al, mode); c += ldc;
            Put(c, c40, c41, c42, al, mode); c += ldc;
            Put(c, c50, c51, c52, al, mode); c += ldc;
            Put(c, c60, c61, c62, al, mode); c += ldc;
            Put(c, c70, c71, c72, al, mode);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Put(float* c, Vector128<float> v0, Vector128<float> v1, Vector128<float> v2, Vector128<float> alpha, int mode)
        {
            if (mode == 0)
            {
                Vector128.Store(v0 * alpha, c);
                Vector128.Store(v1 * alpha, c + 4);
                Vector128.Store(v2 * alpha, c + 8);
            }
            else
            {
                Vector128.Store(Vector128.FusedMultiplyAdd(v0, alpha, Vector128.Load(c)), c);
                Vector128.Store(Vector128.FusedMultiplyAdd(v1, alpha, Vector128.Load(c + 4)), c + 4);
                Vector128.Store(Vector128.FusedMultiplyAdd(v2, alpha, Vector128.Load(c + 8)), c + 8);
            }
        }
    }

    // ------------------------------------------------------------------ scalar: 4 × 4, 16 accumulators

    private struct KernelScalar : IMicroKernel
    {
        public static int MR => 4;
        public static int NR => 4;
        public static int MC => 64;
        public static int KC => 256;
        public static int NC => 1024;
        public static bool AvxPacking => false;
        public static bool RowExact => false;

        public static void Run(int kc, float* a, float* b, float* c, nint ldc, float alpha, int mode, int mr)
        {
            float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
            for (int p = 0; p < kc; p++)
            {
                float b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
                float x = a[0]; c00 += x * b0; c01 += x * b1; c02 += x * b2; c03 += x * b3;
                x = a[1]; c10 += x * b0; c11 += x * b1; c12 += x * b2; c13 += x * b3;
                x = a[2]; c20 += x * b0; c21 += x * b1; c22 += x * b2; c23 += x * b3;
                x = a[3]; c30 += x * b0; c31 += x * b1; c32 += x * b2; c33 += x * b3;
                a += 4;
                b += 4;
            }
            Put(c, c00, c01, c02, c03, alpha, mode); c += ldc;
            Put(c, c10, c11, c12, c13, alpha, mode); c += ldc;
            Put(c, c20, c21, c22, c23, alpha, mode); c += ldc;
            Put(c, c30, c31, c32, c33, alpha, mode);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Put(float* c, float v0, float v1, float v2, float v3, float alpha, int mode)
        {
            Merge(c, v0, alpha, mode);
            Merge(c + 1, v1, alpha, mode);
            Merge(c + 2, v2, alpha, mode);
            Merge(c + 3, v3, alpha, mode);
        }
    }

    /// <summary>A row count as a JIT-time constant.</summary>
    private interface IRows
    {
        /// <summary>The rows.</summary>
        static abstract int Value { get; }
    }

    private struct R1 : IRows { public static int Value => 1; }
    private struct R2 : IRows { public static int Value => 2; }
    private struct R3 : IRows { public static int Value => 3; }
    private struct R4 : IRows { public static int Value => 4; }
    private struct R5 : IRows { public static int Value => 5; }
    private struct R6 : IRows { public static int Value => 6; }
    private struct R7 : IRows { public static int Value => 7; }
    private struct R8 : IRows { public static int Value => 8; }
    private struct R9 : IRows { public static int Value => 9; }
    private struct R10 : IRows { public static int Value => 10; }
    private struct R11 : IRows { public static int Value => 11; }
    private struct R12 : IRows { public static int Value => 12; }
    private struct R13 : IRows { public static int Value => 13; }
    private struct R14 : IRows { public static int Value => 14; }

    /// <summary>The write-back rule every path shares: *c = alpha·acc (mode 0, c not read) or fma(acc, alpha, *c) (mode 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Merge(float* c, float acc, float alpha, int mode) =>
        *c = mode == 0 ? acc * alpha : MathF.FusedMultiplyAdd(acc, alpha, *c);
}
