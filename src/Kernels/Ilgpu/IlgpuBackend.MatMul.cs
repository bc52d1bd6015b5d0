using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// fp32 GEMM, C (+)= op(A)·op(B), all four transpose forms, any m, n, k. Each group of 256 threads computes a
/// 128×128 tile of C; each thread an 8×8 block of it (rows ty·4+i and 64+ty·4+i, columns tx·4+j and 64+tx·4+j) held
/// in registers. The k dimension goes in steps of 8 through double-buffered shared memory (A and B stored k-major,
/// rows padded by 4 floats so the transposing stores do not conflict); the next step's 4 + 4 elements per thread are
/// loaded from global memory while the current step is multiplied, so one barrier per step suffices. Loads are
/// coalesced for every transpose form (the element each thread loads follows the contiguous dimension). Plain FMA,
/// never TF32. When the output has too few tiles to fill the GPU and k is long (the weight gradient dW = dYᵀ·X), k is
/// split: slices write partial tiles to scratch and a second kernel adds them in slice order (deterministic).
/// </summary>
public sealed partial class IlgpuBackend
{
    private const int TileM = 128, TileN = 128, TileK = 8, SharedLd = TileM + 4;
    private const long MaxSplitScratch = 64L << 20;

    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs> _matmul = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _matmulSplitReduce = null!;

    /// <summary>Shape of a GEMM launch.</summary>
    internal struct GemmArgs
    {
        public int M, N, K, TransA, TransB, Accumulate, TilesM, TilesN, Splits, KPerSplit;
    }

    /// <summary>
    /// Number of k slices for every GEMM when positive (tests use it to exercise the split-k path on small shapes);
    /// 0 chooses automatically. The default comes from HFT_SPLIT_K (1 to 64; for tuning on a GPU machine, which has no
    /// SDK to rebuild with), 0 when unset.
    /// </summary>
    public int ForceSplitK { get; set; } = EnvInt("HFT_SPLIT_K", 1, 64, 0);

    /// <summary>Whether the switch <paramref name="name"/> is set to "off" (HFT_GEMM_SUM=off and the like; case and spaces ignored).</summary>
    internal static bool EnvOff(string name) => EnvIs(name, "off");

    /// <summary>Whether the switch <paramref name="name"/> is set to "on" (HFT_GEMM_SWIGLU=on; case and spaces ignored).</summary>
    internal static bool EnvOn(string name) => EnvIs(name, "on");

    private static bool EnvIs(string name, string value) =>
        string.Equals(Environment.GetEnvironmentVariable(name)?.Trim(), value, StringComparison.OrdinalIgnoreCase);

    /// <summary>An integer environment variable within [min, max]; <paramref name="fallback"/> when unset or not one (with a warning).</summary>
    internal static int EnvInt(string name, int min, int max, int fallback)
    {
        string? v = Environment.GetEnvironmentVariable(name)?.Trim();
        if (string.IsNullOrEmpty(v)) return fallback;
        if (int.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int n) && n >= min && n <= max) return n;
        Console.Error.WriteLine($"warning: {name}={v} is not an integer from {min} to {max}; using {fallback}");
        return fallback;
    }

    private void LoadMatMul()
    {
        _matmul = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(MatMulKernel);
        _matmulSplitReduce = Load<ArrayView<float>, ArrayView<float>, int, int>(MatMulSplitReduceKernel);
        LoadMatMulBf16Out();
    }

    /// <inheritdoc/>
    protected override void MatMulCore(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        if (c.Type == DType.BF16) { MatMulToBf16(c, a, b, m, n, k, transA, transB); return; }
        if (a.Type == DType.BF16) { MatMulBf16(c, a, b, m, n, k, transA, transB, accumulate); return; }
        var (tilesM, tilesN, tiles, splits, kPer) = TilePlan(m, n, k, TileM, TileK);
        var p = new GemmArgs
        {
            M = m, N = n, K = k, TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, Accumulate = accumulate ? 1 : 0,
            TilesM = tilesM, TilesN = tilesN, Splits = splits, KPerSplit = kPer,
        };
        var cv = F(c).SubView(0, (long)m * n);
        if (splits == 1)
        {
            _matmul(Config(TileGroups(tiles)), cv, F(a), F(b), p);
            return;
        }
        var partials = Scratch((long)splits * m * n);
        p.Accumulate = 0;
        _matmul(Config(TileGroups(tiles * splits)), partials, F(a), F(b), p);
        _matmulSplitReduce(Config(StreamGroups((long)m * n)), cv, partials, splits, accumulate ? 1 : 0);
    }

    /// <summary>
    /// The tiles of C (square tiles of <paramref name="tile"/>) and the split of k: slices of a multiple of
    /// <paramref name="tileK"/>, as many as <see cref="SplitK"/> chooses.
    /// </summary>
    private (int TilesM, int TilesN, long Tiles, int Splits, int KPerSplit) TilePlan(int m, int n, int k, int tile, int tileK)
    {
        int tilesM = (m + tile - 1) / tile, tilesN = (n + tile - 1) / tile;
        long tiles = (long)tilesM * tilesN;
        var (splits, kPer) = SplitPlan(tiles, (long)m * n, k, tileK);
        return (tilesM, tilesN, tiles, splits, kPer);
    }

    /// <summary>
    /// The split of k for <paramref name="tiles"/> output tiles: slices of a multiple of <paramref name="tileK"/>, as
    /// many as <see cref="SplitK"/> chooses (fewer where the rounded slices cover k sooner; none empty).
    /// </summary>
    private (int Splits, int KPerSplit) SplitPlan(long tiles, long mn, int k, int tileK)
        => RoundSplit(k, SplitK(tiles, mn, k), tileK);

    private int SplitK(long tiles, long mn, int k) => SplitKFor(tiles, mn, k, ForceSplitK, _isCpu, _acc.NumMultiprocessors);

    /// <summary>
    /// <see cref="SplitK"/> for a given forced count, accelerator kind and multiprocessor count: the forced count when
    /// positive; otherwise 1 on the CPU, for k under 1024, or with at least two tiles per multiprocessor, and else
    /// enough slices for that (at most k / 256 and 16); never more than the scratch allows.
    /// </summary>
    internal static int SplitKFor(long tiles, long mn, int k, int forced, bool cpu, int multiprocessors)
    {
        int splits = forced;
        if (splits <= 0)
        {
            int target = 2 * multiprocessors;
            splits = cpu || tiles >= target || k < 1024 ? 1 : (int)Math.Min((target + tiles - 1) / tiles, Math.Min(k / 256, 16));
        }
        splits = Math.Clamp(splits, 1, Math.Max(1, (k + TileK - 1) / TileK));
        while (splits > 1 && splits * mn > MaxSplitScratch) splits--;
        return splits;
    }

    /// <summary><see cref="SplitPlan"/> for a given forced count, accelerator kind and multiprocessor count (the tests check the plan with it).</summary>
    internal static (int Splits, int KPerSplit) SplitPlanFor(long tiles, long mn, int k, int tileK, int forced, bool cpu, int multiprocessors) =>
        RoundSplit(k, SplitKFor(tiles, mn, k, forced, cpu, multiprocessors), tileK);

    /// <summary>Slices of k for a chosen count: a multiple of tileK each, as many as then cover k (none empty).</summary>
    private static (int Splits, int KPerSplit) RoundSplit(int k, int splits, int tileK)
    {
        int kPer = (k + splits - 1) / splits;
        kPer = (kPer + tileK - 1) / tileK * tileK;
        return ((k + kPer - 1) / kPer, kPer);
    }

    /// <summary>Eight accumulators (one row of a thread's 8×8 block), kept in registers.</summary>
    internal struct Vec8
    {
        public float X0, X1, X2, X3, X4, X5, X6, X7;
    }

    /// <summary>c + a·b element-wise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vec8 Fma(Vec8 c, float a, Vec8 b)
    {
        c.X0 += a * b.X0; c.X1 += a * b.X1; c.X2 += a * b.X2; c.X3 += a * b.X3;
        c.X4 += a * b.X4; c.X5 += a * b.X5; c.X6 += a * b.X6; c.X7 += a * b.X7;
        return c;
    }

    /// <summary>Reads elements base+0..3 and base+64..67 of a shared row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vec8 Read8(ArrayView<float> s, int i)
    {
        var r = s.SubView(i, 68);
        Vec8 v;
        v.X0 = r[0]; v.X1 = r[1]; v.X2 = r[2]; v.X3 = r[3];
        v.X4 = r[64]; v.X5 = r[65]; v.X6 = r[66]; v.X7 = r[67];
        return v;
    }

    /// <summary>Writes one row of a thread's block: columns c0..c0+3 and c0+64..c0+67 of row r, where inside the matrix.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow(ArrayView<float> c, GemmArgs p, long zOffset, int r, int c0, Vec8 v)
    {
        if (r >= p.M) return;
        long o = zOffset + (long)r * p.N;
        Store(c, p, o, c0, v.X0); Store(c, p, o, c0 + 1, v.X1); Store(c, p, o, c0 + 2, v.X2); Store(c, p, o, c0 + 3, v.X3);
        Store(c, p, o, c0 + 64, v.X4); Store(c, p, o, c0 + 65, v.X5); Store(c, p, o, c0 + 66, v.X6); Store(c, p, o, c0 + 67, v.X7);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ArrayView<float> c, GemmArgs p, long rowOffset, int col, float v)
    {
        if (col >= p.N) return;
        long i = rowOffset + col;
        c[i] = p.Accumulate != 0 ? c[i] + v : v;
    }

    /// <summary>
    /// c[m, n] (+)= op(a)·op(b) over 128×128 tiles (grid-stride over tiles and k slices); with Splits &gt; 1, slice z
    /// writes its partial product to c[z·m·n ..] instead (c is then the scratch buffer).
    /// </summary>
    [IlgpuKernel]
    internal static void MatMulKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, GemmArgs p)
    {
        var sa = SharedMemory.Allocate<float>(2 * TileK * SharedLd);
        var sb = SharedMemory.Allocate<float>(2 * TileK * SharedLd);
        int tid = Group.IdxX, tx = tid & 15, ty = tid >> 4;

        // Element q (0..3) this thread loads from the A tile: row aRow + q·aRowStep, k index aK + q·aKStep
        // (A k-contiguous: 8 threads along k, 32 rows per pass; A m-contiguous: 128 threads along m, 2 k per pass).
        int aRow, aRowStep, aK, aKStep, aRowStride, aKStride;
        if (p.TransA == 0) { aRow = tid >> 3; aRowStep = 32; aK = tid & 7; aKStep = 0; aRowStride = p.K; aKStride = 1; }
        else { aRow = tid & 127; aRowStep = 0; aK = tid >> 7; aKStep = 2; aRowStride = 1; aKStride = p.M; }
        int bCol, bColStep, bK, bKStep, bColStride, bKStride;
        if (p.TransB == 0) { bCol = tid & 127; bColStep = 0; bK = tid >> 7; bKStep = 2; bColStride = 1; bKStride = p.N; }
        else { bCol = tid >> 3; bColStep = 32; bK = tid & 7; bKStep = 0; bColStride = p.K; bKStride = 1; }

        int tiles = p.TilesM * p.TilesN * p.Splits;
        for (int tile = Grid.IdxX; tile < tiles; tile += Grid.DimX)
        {
            int tn = tile % p.TilesN, rest = tile / p.TilesN, tm = rest % p.TilesM, z = rest / p.TilesM;
            int m0 = tm * TileM, n0 = tn * TileN;
            int kBegin = z * p.KPerSplit, kEnd = DeviceReduce.Min(p.K, kBegin + p.KPerSplit);

            // Prefetch the first k step into registers.
            float a0 = LoadA(a, p, m0, kBegin, kEnd, aRow, aK, aRowStride, aKStride);
            float a1 = LoadA(a, p, m0, kBegin, kEnd, aRow + aRowStep, aK + aKStep, aRowStride, aKStride);
            float a2 = LoadA(a, p, m0, kBegin, kEnd, aRow + 2 * aRowStep, aK + 2 * aKStep, aRowStride, aKStride);
            float a3 = LoadA(a, p, m0, kBegin, kEnd, aRow + 3 * aRowStep, aK + 3 * aKStep, aRowStride, aKStride);
            float b0 = LoadB(b, p, n0, kBegin, kEnd, bCol, bK, bColStride, bKStride);
            float b1 = LoadB(b, p, n0, kBegin, kEnd, bCol + bColStep, bK + bKStep, bColStride, bKStride);
            float b2 = LoadB(b, p, n0, kBegin, kEnd, bCol + 2 * bColStep, bK + 2 * bKStep, bColStride, bKStride);
            float b3 = LoadB(b, p, n0, kBegin, kEnd, bCol + 3 * bColStep, bK + 3 * bKStep, bColStride, bKStride);
            sa[aK * SharedLd + aRow] = a0;
            sa[(aK + aKStep) * SharedLd + aRow + aRowStep] = a1;
            sa[(aK + 2 * aKStep) * SharedLd + aRow + 2 * aRowStep] = a2;
            sa[(aK + 3 * aKStep) * SharedLd + aRow + 3 * aRowStep] = a3;
            sb[bK * SharedLd + bCol] = b0;
            sb[(bK + bKStep) * SharedLd + bCol + bColStep] = b1;
            sb[(bK + 2 * bKStep) * SharedLd + bCol + 2 * bColStep] = b2;
            sb[(bK + 3 * bKStep) * SharedLd + bCol + 3 * bColStep] = b3;
            Group.Barrier();

            Vec8 c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
            int buffer = 0;
            for (int k0 = kBegin; k0 < kEnd; k0 += TileK)
            {
                int next = k0 + TileK;
                bool more = next < kEnd;
                if (more)
                {
                    a0 = LoadA(a, p, m0, next, kEnd, aRow, aK, aRowStride, aKStride);
                    a1 = LoadA(a, p, m0, next, kEnd, aRow + aRowStep, aK + aKStep, aRowStride, aKStride);
                    a2 = LoadA(a, p, m0, next, kEnd, aRow + 2 * aRowStep, aK + 2 * aKStep, aRowStride, aKStride);
                    a3 = LoadA(a, p, m0, next, kEnd, aRow + 3 * aRowStep, aK + 3 * aKStep, aRowStride, aKStride);
                    b0 = LoadB(b, p, n0, next, kEnd, bCol, bK, bColStride, bKStride);
                    b1 = LoadB(b, p, n0, next, kEnd, bCol + bColStep, bK + bKStep, bColStride, bKStride);
                    b2 = LoadB(b, p, n0, next, kEnd, bCol + 2 * bColStep, bK + 2 * bKStep, bColStride, bKStride);
                    b3 = LoadB(b, p, n0, next, kEnd, bCol + 3 * bColStep, bK + 3 * bKStep, bColStride, bKStride);
                }
                int sBase = buffer * TileK * SharedLd;
                for (int kk = 0; kk < TileK; kk++)
                {
                    int row = sBase + kk * SharedLd;
                    Vec8 av = Read8(sa, row + ty * 4);
                    Vec8 bv = Read8(sb, row + tx * 4);
                    c0 = Fma(c0, av.X0, bv); c1 = Fma(c1, av.X1, bv); c2 = Fma(c2, av.X2, bv); c3 = Fma(c3, av.X3, bv);
                    c4 = Fma(c4, av.X4, bv); c5 = Fma(c5, av.X5, bv); c6 = Fma(c6, av.X6, bv); c7 = Fma(c7, av.X7, bv);
                }
                if (more)
                {
                    int nBase = (buffer ^ 1) * TileK * SharedLd;
                    sa[nBase + aK * SharedLd + aRow] = a0;
                    sa[nBase + (aK + aKStep) * SharedLd + aRow + aRowStep] = a1;
                    sa[nBase + (aK + 2 * aKStep) * SharedLd + aRow + 2 * aRowStep] = a2;
                    sa[nBase + (aK + 3 * aKStep) * SharedLd + aRow + 3 * aRowStep] = a3;
                    sb[nBase + bK * SharedLd + bCol] = b0;
                    sb[nBase + (bK + bKStep) * SharedLd + bCol + bColStep] = b1;
                    sb[nBase + (bK + 2 * bKStep) * SharedLd + bCol + 2 * bColStep] = b2;
                    sb[nBase + (bK + 3 * bKStep) * SharedLd + bCol + 3 * bColStep] = b3;
                }
                Group.Barrier();
                buffer ^= 1;
            }

            long zOffset = (long)z * p.M * p.N;
            int r0 = m0 + ty * 4, col = n0 + tx * 4;
            StoreRow(c, p, zOffset, r0, col, c0);
            StoreRow(c, p, zOffset, r0 + 1, col, c1);
            StoreRow(c, p, zOffset, r0 + 2, col, c2);
            StoreRow(c, p, zOffset, r0 + 3, col, c3);
            StoreRow(c, p, zOffset, r0 + 64, col, c4);
            StoreRow(c, p, zOffset, r0 + 65, col, c5);
            StoreRow(c, p, zOffset, r0 + 66, col, c6);
            StoreRow(c, p, zOffset, r0 + 67, col, c7);
        }
    }

    /// <summary>Element (row, kk) of the A tile at (m0, k0), or 0 outside the matrix or the k slice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float LoadA(ArrayView<float> a, GemmArgs p, int m0, int k0, int kEnd, int row, int kk, int rowStride, int kStride)
    {
        int r = m0 + row, k = k0 + kk;
        return r < p.M && k < kEnd ? a[r * rowStride + k * kStride] : 0f;
    }

    /// <summary>Element (kk, col) of the B tile at (k0, n0), or 0 outside the matrix or the k slice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float LoadB(ArrayView<float> b, GemmArgs p, int n0, int k0, int kEnd, int col, int kk, int colStride, int kStride)
    {
        int c = n0 + col, k = k0 + kk;
        return c < p.N && k < kEnd ? b[c * colStride + k * kStride] : 0f;
    }

    /// <summary>c[i] = (accumulate ? c[i] : 0) + Σ_z partials[z·mn + i], slices in order.</summary>
    [IlgpuKernel]
    internal static void MatMulSplitReduceKernel(ArrayView<float> c, ArrayView<float> partials, int splits, int accumulate)
    {
        long mn = c.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < mn; i += stride)
        {
            float s = accumulate != 0 ? c[i] : 0f;
            for (int z = 0; z < splits; z++) s += partials[z * mn + i];
            c[i] = s;
        }
    }
}
