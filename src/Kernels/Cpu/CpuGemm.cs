using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace HftRuntime.Kernels.Cpu;

/// <summary>
/// Single-precision matrix product on the CPU: a BLIS-style packed GEMM. op(b) is packed into KC × NC panels of
/// NR-wide strips, op(a) into MC × KC blocks of MR-tall strips, and a register-blocked micro-kernel computes
/// MR × NR tiles of c (14 × 32 with 512-bit vectors, 6 × 16 with 256-bit, 8 × 12 with 128-bit, 4 × 4 scalar).
/// Work is split over rows and columns of c only, never over k, and the k blocking depends on k alone, so the
/// result does not depend on the number of threads. Each thread packs into its own buffers (about 2.3 MB, native,
/// allocated on the thread's first call and kept), so a call allocates nothing on the managed heap.
/// </summary>
public static unsafe partial class CpuGemm
{
    /// <summary>
    /// Products with fewer multiply-adds than this (about 80 µs of work on one core) run on the calling thread:
    /// waking the pool's workers costs tens of microseconds.
    /// </summary>
    private const long ParallelThreshold = 1L << 23;

    [ThreadStatic] private static int t_forcedVectorBits;

    /// <summary>
    /// For tests: the vector width (512, 256, 128, or 32 for the scalar path) that <see cref="Gemm"/> calls made
    /// from the current thread use; 0 (the default) picks the widest the hardware runs. A width the hardware does
    /// not accelerate falls back to the next narrower one.
    /// </summary>
    internal static int ForcedVectorBits
    {
        get => t_forcedVectorBits;
        set => t_forcedVectorBits = value;
    }

    /// <summary>The vector width (512, 256, 128 or 32) that a call from this thread uses.</summary>
    internal static int ActiveVectorBits
    {
        get
        {
            int want = t_forcedVectorBits == 0 ? 512 : t_forcedVectorBits;
            if (want >= 512 && Vector512.IsHardwareAccelerated) return 512;
            if (want >= 256 && Vector256.IsHardwareAccelerated && Fma.IsSupported) return 256;
            if (want >= 128 && Vector128.IsHardwareAccelerated && (Fma.IsSupported || AdvSimd.IsSupported)) return 128;
            return 32;
        }
    }

    /// <summary>
    /// c[m, n] = alpha · op(a) · op(b) (+ c when <paramref name="accumulate"/>), row-major with leading dimensions
    /// lda, ldb, ldc (elements between consecutive rows of the stored matrices). op(a) is a[m, k] or, with
    /// transA, the transpose of a stored [k, m]; op(b) is b[k, n] or, with transB, the transpose of b stored [n, k].
    /// Without <paramref name="accumulate"/> the old contents of c are never read. Runs on <paramref name="pool"/>
    /// when given, else on the calling thread; the result is bitwise the same for any number of threads.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Gemm(WorkerPool? pool, int m, int n, int k, float alpha,
        float* a, int lda, bool transA, float* b, int ldb, bool transB, float* c, int ldc, bool accumulate)
    {
        if (m <= 0 || n <= 0) return;
        if (k <= 0)
        {
            if (!accumulate)
                for (int i = 0; i < m; i++) new Span<float>(c + (nint)i * ldc, n).Clear();
            return;
        }
        var args = new GemmArgs
        {
            A = a, B = b, C = c, Lda = lda, Ldb = ldb, Ldc = ldc, M = m, N = n, K = k, Alpha = alpha,
            TransA = transA, TransB = transB, Accumulate = accumulate,
        };
        switch (ActiveVectorBits)
        {
            case 512: Run<Kernel512>(pool, &args); break;
            case 256: Run<Kernel256>(pool, &args); break;
            case 128: Run<Kernel128>(pool, &args); break;
            default: Run<KernelScalar>(pool, &args); break;
        }
    }

    private struct GemmArgs
    {
        public float* A, B, C;
        public nint Lda, Ldb, Ldc;
        public int M, N, K;
        public float Alpha;
        public bool TransA, TransB, Accumulate;
        public int RowChunk, ColChunk, ColTasks;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TK>(WorkerPool? pool, GemmArgs* g) where TK : struct, IMicroKernel
    {
        int threads = pool?.Threads ?? 1;
        if (threads <= 1 || (long)g->M * g->N * g->K < ParallelThreshold)
        {
            g->RowChunk = g->M; g->ColChunk = g->N; g->ColTasks = 1;
            TaskBody<TK>(g, 0, 1);
            return;
        }
        int tasks = Partition<TK>(g, threads);
        pool!.For(tasks, 1, &TaskBody<TK>, g);
    }

    /// <summary>
    /// Splits c into a grid of row × column chunks (multiples of MR and NR) for <paramref name="threads"/>
    /// threads. Tasks are handed out dynamically, so a few more tasks than threads absorb a thread that starts
    /// late or is preempted; against that, every column chunk packs its rows of op(a) again and every row chunk
    /// its columns of op(b). Returns the number of tasks.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Partition<TK>(GemmArgs* g, int threads) where TK : struct, IMicroKernel
    {
        int m = g->M, n = g->N;
        int rowStrips = (m + TK.MR - 1) / TK.MR, colStrips = (n + TK.NR - 1) / TK.NR;
        int maxParts = 2 * threads;
        double best = double.MaxValue;
        int bestRows = rowStrips, bestCols = colStrips;
        for (int tm = 1; tm <= Math.Min(maxParts, rowStrips); tm++)
        {
            int rowChunkStrips = (rowStrips + tm - 1) / tm;
            int tmReal = (rowStrips + rowChunkStrips - 1) / rowChunkStrips;
            for (int tn = 1; tn * tmReal <= maxParts && tn <= colStrips; tn++)
            {
                int colChunkStrips = (colStrips + tn - 1) / tn;
                int tnReal = (colStrips + colChunkStrips - 1) / colChunkStrips;
                int tasks = tmReal * tnReal;
                double rows = (double)rowChunkStrips * TK.MR, cols = (double)colChunkStrips * TK.NR;
                // One task, per unit of k: rows·cols multiply-adds and rows·ceil(cols/NC) + cols packed floats
                // (a packed float costs about as much as 16 multiply-adds).
                double task = rows * cols + 16 * (rows * Math.Ceiling(cols / TK.NC) + cols);
                // Whole rounds of tasks, plus half a task for the thread that finishes last.
                double cost = ((tasks + threads - 1) / threads + 0.5) * task;
                if (cost < best * (1 - 1e-9))
                {
                    best = cost;
                    bestRows = rowChunkStrips;
                    bestCols = colChunkStrips;
                }
            }
        }
        g->RowChunk = bestRows * TK.MR;
        g->ColChunk = bestCols * TK.NR;
        g->ColTasks = (colStrips + bestCols - 1) / bestCols;
        return ((rowStrips + bestRows - 1) / bestRows) * g->ColTasks;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TaskBody<TK>(void* p, int start, int end) where TK : struct, IMicroKernel
    {
        var g = (GemmArgs*)p;
        for (int t = start; t < end; t++)
        {
            int ti = t / g->ColTasks, tj = t - ti * g->ColTasks;
            int i0 = ti * g->RowChunk, j0 = tj * g->ColChunk;
            int i1 = Math.Min(g->M, i0 + g->RowChunk), j1 = Math.Min(g->N, j0 + g->ColChunk);
            if (i0 < i1 && j0 < j1) Compute<TK>(g, i0, i1, j0, j1);
        }
    }

    /// <summary>Splits <paramref name="total"/> into equal blocks of at most <paramref name="max"/>, rounded up to a multiple of <paramref name="unit"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BlockSize(int total, int max, int unit)
    {
        int blocks = (total + max - 1) / max;
        int size = (total + blocks - 1) / blocks;
        return (size + unit - 1) / unit * unit;
    }

    /// <summary>The BLIS loop nest over rows [i0, i1) and columns [j0, j1) of c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Compute<TK>(GemmArgs* g, int i0, int i1, int j0, int j1) where TK : struct, IMicroKernel
    {
        int MR = TK.MR, NR = TK.NR;
        float* packA = Buffers(out float* packB, out float* edge);
        int k = g->K;
        // The depth blocking depends on k alone (never on the split), so every element of c sees the same sums.
        int kcStep = BlockSize(k, TK.KC, 1);
        int ncStep = BlockSize(j1 - j0, TK.NC, NR);
        int mcStep = BlockSize(i1 - i0, TK.MC, MR);
        float alpha = g->Alpha;
        nint ldc = g->Ldc;
        bool packBTransposed = g->TransB, packATransposed = !g->TransA;
        for (int jc = j0; jc < j1; jc += ncStep)
        {
            int nc = Math.Min(ncStep, j1 - jc);
            for (int pc = 0; pc < k; pc += kcStep)
            {
                int kc = Math.Min(kcStep, k - pc);
                int mode = pc == 0 && !g->Accumulate ? 0 : 1;
                PackBlock<TK, StripNR<TK>>(packB, g->B, g->Ldb, packBTransposed, jc, nc, pc, kc);
                for (int ic = i0; ic < i1; ic += mcStep)
                {
                    int mc = Math.Min(mcStep, i1 - ic);
                    PackBlock<TK, StripMR<TK>>(packA, g->A, g->Lda, packATransposed, ic, mc, pc, kc);
                    for (int jr = 0; jr < nc; jr += NR)
                    {
                        int nr = Math.Min(NR, nc - jr);
                        float* bs = packB + (nint)jr * kc;
                        float* cRow = g->C + (nint)ic * ldc + jc + jr;
                        for (int ir = 0; ir < mc; ir += MR)
                        {
                            int mr = Math.Min(MR, mc - ir);
                            float* As = packA + (nint)ir * kc;
                            float* ct = cRow + (nint)ir * ldc;
                            if (nr == NR && (mr == MR || TK.RowExact))
                            {
                                TK.Run(kc, As, bs, ct, ldc, alpha, mode, mr);
                            }
                            else
                            {
                                // Edge tile: the raw sums go to a scratch tile, then the same write-back rule.
                                TK.Run(kc, As, bs, edge, NR, 1f, 0, mr);
                                for (int r = 0; r < mr; r++)
                                {
                                    float* e = edge + r * NR;
                                    float* cr = ct + r * ldc;
                                    for (int j = 0; j < nr; j++) Merge(cr + j, e[j], alpha, mode);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ per-thread packing buffers

    private const int MaxKC = 256;
    private const int MaxMC = 14 * 12;
    private const int MaxNC = 2048;
    private const int MaxMR = 14;
    private const int MaxNR = 32;
    private const int Slack = 64;
    private const nint PackAFloats = (MaxMC + MaxMR) * MaxKC + Slack;
    private const nint PackBFloats = (MaxNC + MaxNR) * MaxKC + Slack;
    private const nint EdgeFloats = MaxMR * MaxNR + Slack;

    [ThreadStatic] private static float* t_buffers;

    /// <summary>This thread's packing buffers (allocated on first use, 64-byte aligned, kept for the thread's life).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Buffers(out float* packB, out float* edge)
    {
        float* p = t_buffers;
        if (p == null) p = AllocateBuffers();
        packB = p + PackAFloats;
        edge = packB + PackBFloats;
        return p;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float* AllocateBuffers()
    {
        static void Check<TK>() where TK : struct, IMicroKernel
        {
            if (TK.KC > MaxKC || TK.MC + TK.MR > MaxMC + MaxMR || TK.NC + TK.NR > MaxNC + MaxNR || TK.MR * TK.NR > MaxMR * MaxNR)
                throw new InvalidOperationException("GEMM blocking exceeds the packing buffers");
        }
        Check<Kernel512>(); Check<Kernel256>(); Check<Kernel128>(); Check<KernelScalar>();
        nint bytes = (PackAFloats + PackBFloats + EdgeFloats) * sizeof(float);
        var p = (float*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        t_buffers = p;
        return p;
    }
}
