using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>Which bf16 GEMM <see cref="IlgpuBackend"/> runs.</summary>
public enum Bf16GemmVariant
{
    /// <summary>The general kernel (any form and shape): 128×128 tiles, warps of 64×32, 4-byte loads.</summary>
    Simple,

    /// <summary>
    /// The 128×256-tile kernel with 64×64 warp tiles and 16-byte loads where it applies (NT, NN and TN forms, full
    /// tiles, see <see cref="IlgpuBackend.AcceptsBf16Fast"/>); the simple kernel everywhere else.
    /// </summary>
    Fast,

    /// <summary>
    /// The wgmma kernel (<see cref="WgmmaGemmPtx"/>: sm_90a, so H100 and H200 only) where it applies (NT, NN and TN
    /// forms of nearly any size, see <see cref="IlgpuBackend.AcceptsPtxGemm"/>), each form checked
    /// against the simple kernel on its first use and left for good if it disagrees; the simple kernel everywhere else.
    /// See <see cref="IlgpuBackend.AcceptsPtxGemm"/>.
    /// </summary>
    Wgmma,

    /// <summary>
    /// The mma.sync kernel written as PTX (<see cref="MmaGemmPtx"/>: compute capability 8.0 or later) for the same
    /// products as <see cref="Wgmma"/>, each form checked on first use likewise; the simple kernel everywhere else.
    /// </summary>
    Mma,

    /// <summary>
    /// The wgmma kernel with TMA loads (<see cref="WgmmaGemmPtx.TmaModule"/>: sm_90a): one thread issues each k step's
    /// tiles as tensor-map copies, every thread waits on the stage's mbarrier; the same products, layouts, checks and
    /// fallback as <see cref="Wgmma"/>.
    /// </summary>
    WgmmaTma,

    /// <summary>
    /// The warp-specialized wgmma kernel (<see cref="WgmmaWsGemmPtx"/>: sm_90a): a producer warpgroup issues the TMA
    /// copies as far ahead as the stages allow, two consumer warpgroups multiply, full and empty mbarriers between them
    /// and no block barrier in the loop; the same products, checks and fallback as <see cref="Wgmma"/>.
    /// </summary>
    WgmmaWs,
}

/// <summary>
/// The fast bf16 GEMM, C (+)= A·Bᵀ with A [m, k] and B [n, k] both k-contiguous bfloat16 and C fp32 (also A·B and
/// Aᵀ·B, see below), for full tiles only: m a multiple of 128, n of 256, k of 32, both operands starting on 16 bytes,
/// C on 8. Each group of 256 threads
/// (8 warps) computes a 128×256 tile of C; warp w the 64×64 block at rows 64·(w mod 2), columns 64·(w div 2), as 4 × 8
/// <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c> per 16 k (128 fp32 accumulators per thread: two
/// <see cref="CBlock"/>s, the left and right 64×32 halves). k goes in steps of 32 through double-buffered shared memory
/// of 2 × (128 + 256) × 64 B = 48 KiB, unpadded. Every global load, shared store and fragment read is 16 bytes (A: 2,
/// B: 4 loads per thread and step, prefetched in registers while the current step is multiplied; one barrier per
/// step): per k step and warp 16 LDS.128 feed 64 HMMA (the simple kernel: 48 LDS.32 for 32 HMMA). C is written (or
/// added to) in 8-byte pairs. Split k as in the simple kernel: slices of a multiple of 32, partial tiles into scratch,
/// summed in slice order by the split reduce kernel.
/// </summary>
/// <remarks>
/// <para>
/// The k order inside a 32-wide step is permuted, identically for A and B (so the products summed are the same): of the
/// 16-byte chunk t of a row (bf16 pairs P0..P3 = pairs 4t .. 4t+3 of the step), lane (g, t) hands P0, P1 to the mma of
/// the first 16-k half as its k pairs t and t+4, and P2, P3 to the second half. B is stored as [row][chunk] (4 chunks
/// a row), so chunk t of row g is (b0, b1) of both halves. A is stored as ready fragments: a thread loads chunk c of the
/// rows g and g+8 of one m16 block and stores (g P0, g+8 P0, g P1, g+8 P1), i.e. (a0, a1, a2, a3) of the first half,
/// and (g P2, g+8 P2, g P3, g+8 P3) of the second, at slot ((2·block + half)·8 + g)·4 + c; one 16-byte read is then one
/// A operand of the mma in four consecutive registers (reading two rows' chunks would need four moves per mma). A
/// quarter warp (the unit of a 16-byte shared access) reads or writes 8 consecutive chunks: no bank conflicts.
/// </para>
/// <para>
/// The NN form (B [k, n] n-contiguous, dX = dY·W) and the TN form (A [k, m] m-contiguous too, dW += dYᵀ·X) are
/// separate kernels over the same body, shared layout and k step; only the loads and shared stores of the operand
/// that is not k-contiguous differ (16-byte loads along m or n, transposed into k pairs in registers, 4-byte stores
/// into A's fragments, 8-byte ones into B's rows: see IlgpuBackend.MatMulBf16FastLoad.cs).
/// </para>
/// <para>
/// On ILGPU's CPU accelerator the mma are emulated with the simple kernel's emulation (per 64×32 half, so the same
/// per-warp scratch in dynamic shared memory), which follows the PTX fragment layout: the CPU results check the
/// fragment indexing and the k permutation of the CUDA path.
/// </para>
/// </remarks>
public sealed partial class IlgpuBackend
{
    /// <summary>Tile of C per group (rows, columns), k step in bf16 elements, 16-byte chunks per shared row.</summary>
    private const int Bf16FastTileM = 128, Bf16FastTileN = 256, Bf16FastTileK = 32, Bf16FastChunks = Bf16FastTileK / 8;

    /// <summary>16-byte chunks of one stage of the A and of the B tile.</summary>
    private const int Bf16FastStageA = Bf16FastTileM * Bf16FastChunks, Bf16FastStageB = Bf16FastTileN * Bf16FastChunks;

    private Action<KernelConfig, ArrayView<F2>, ArrayView<U4>, ArrayView<U4>, Bf16GemmArgs> _matmulBf16Fast = null!, _matmulBf16FastNN = null!, _matmulBf16FastTN = null!;
    private long _bf16FastLaunches;

    /// <summary>
    /// The bf16 GEMM kernel; the default comes from the environment variable HFT_BF16_GEMM for this back-end's device
    /// (<see cref="Bf16GemmVariantFor(string?, bool, int, int)"/>): when unset, the fastest kernel the device may run.
    /// </summary>
    public Bf16GemmVariant Bf16GemmVariant { get; set; }

    /// <summary>HFT_BF16_GEMM as a variant for no particular device (unset and "auto" give the simple kernel).</summary>
    public static Bf16GemmVariant DefaultBf16GemmVariant => Bf16GemmVariantFor(Environment.GetEnvironmentVariable("HFT_BF16_GEMM"), cuda: false, 0, 0);

    /// <summary>
    /// A setting of HFT_BF16_GEMM as a variant for a device: "simple" selects <see cref="Bf16GemmVariant.Simple"/>,
    /// "fast" <see cref="Bf16GemmVariant.Fast"/>, "wgmma" <see cref="Bf16GemmVariant.Wgmma"/>, "mma"
    /// <see cref="Bf16GemmVariant.Mma"/>, "wgmma-tma" <see cref="Bf16GemmVariant.WgmmaTma"/>, "wgmma-ws"
    /// <see cref="Bf16GemmVariant.WgmmaWs"/>; "auto", empty or unset the fastest kernel the device may run: on CUDA
    /// compute capability 9.0 the warp-specialized wgmma (on an H100, 2026-11-26: 870 TFLOP/s at 8192³ and the
    /// fastest on 10 of the 12 products of a training step of the 134M model, against 842 and 708 for the TMA and
    /// cp.async wgmma, 420 for mma and 293 for fast), mma on other CUDA devices of 8.0 or later, the simple kernel
    /// elsewhere. Any other setting is refused with an <see cref="ArgumentException"/> naming the choices.
    /// </summary>
    internal static Bf16GemmVariant Bf16GemmVariantFor(string? setting, bool cuda, int major, int minor) =>
        setting?.Trim().ToLowerInvariant() switch
        {
            "simple" => Bf16GemmVariant.Simple,
            "fast" => Bf16GemmVariant.Fast,
            "wgmma" => Bf16GemmVariant.Wgmma,
            "mma" => Bf16GemmVariant.Mma,
            "wgmma-tma" => Bf16GemmVariant.WgmmaTma,
            "wgmma-ws" => Bf16GemmVariant.WgmmaWs,
            null or "" or "auto" when cuda && major == 9 && minor == 0 => Bf16GemmVariant.WgmmaWs,
            null or "" or "auto" when cuda && major >= 8 => Bf16GemmVariant.Mma,
            null or "" or "auto" => Bf16GemmVariant.Simple,
            _ => throw new ArgumentException(
                $"HFT_BF16_GEMM='{setting}' names no bf16 GEMM kernel; expected auto (the default), simple, fast, wgmma, wgmma-tma, wgmma-ws or mma"),
        };

    /// <summary>A variant's name, as HFT_BF16_GEMM spells it: simple, fast, wgmma, mma, wgmma-tma, wgmma-ws.</summary>
    public static string NameOf(Bf16GemmVariant variant) => variant switch
    {
        Bf16GemmVariant.WgmmaTma => "wgmma-tma",
        Bf16GemmVariant.WgmmaWs => "wgmma-ws",
        _ => variant.ToString().ToLowerInvariant(),
    };

    /// <summary>Launches of the fast bf16 kernel so far (the tests check the dispatch with it).</summary>
    internal long Bf16FastLaunches => Interlocked.Read(ref _bf16FastLaunches);

    /// <summary>Four uints: a 16-byte chunk of 8 bf16 (pairs X, Y, Z, W).</summary>
    internal struct U4
    {
        public uint X, Y, Z, W;
    }

    /// <summary>Two adjacent fp32 elements of C (an 8-byte store).</summary>
    internal struct F2
    {
        public float X, Y;
    }

    /// <summary>A warp's 64×64 block of accumulators: the left and right 64×32 halves.</summary>
    internal struct CBlock2
    {
        public CBlock L, R;
    }

    /// <summary>One thread's share of a k step: 2 chunks of the A tile, 4 of the B tile.</summary>
    internal struct FastRegs
    {
        public U4 A0, A1, B0, B1, B2, B3;
    }

    private void LoadMatMulBf16Fast()
    {
        _matmulBf16Fast = Load<ArrayView<F2>, ArrayView<U4>, ArrayView<U4>, Bf16GemmArgs>(MatMulBf16FastKernel);
        _matmulBf16FastNN = Load<ArrayView<F2>, ArrayView<U4>, ArrayView<U4>, Bf16GemmArgs>(MatMulBf16FastNNKernel);
        _matmulBf16FastTN = Load<ArrayView<F2>, ArrayView<U4>, ArrayView<U4>, Bf16GemmArgs>(MatMulBf16FastTNKernel);
    }

    /// <summary>
    /// Whether the fast kernel computes c[m, n] (+)= op(a)·op(b): the NT (a [m, k], b [n, k]), NN (a [m, k],
    /// b [k, n]) or TN (a [k, m], b [k, n]) form, m a multiple of 128, n of 256, k of 32, both operands starting on a
    /// 16-byte boundary and c on 8 bytes. The TT form and other shapes go to the simple kernel.
    /// </summary>
    internal static bool AcceptsBf16Fast(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB) =>
        !(transA && transB) && m > 0 && n > 0 && k > 0
        && m % Bf16FastTileM == 0 && n % Bf16FastTileN == 0 && k % Bf16FastTileK == 0
        && a.ByteOffset % 16 == 0 && b.ByteOffset % 16 == 0 && c.ByteOffset % 8 == 0
        && a.Count >= (long)m * k && b.Count >= (long)n * k && c.Count >= (long)m * n;

    /// <summary>
    /// Runs the fast kernel when <see cref="Bf16GemmVariant"/> is <see cref="Bf16GemmVariant.Fast"/> and
    /// <see cref="AcceptsBf16Fast"/> holds, split in k as <see cref="SplitPlan"/> chooses (slices of a multiple of 32,
    /// partials summed in slice order by the split reduce kernel); returns whether it did (otherwise the caller runs
    /// the simple one).
    /// </summary>
    private bool TryMatMulBf16Fast(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        if (Bf16GemmVariant != Bf16GemmVariant.Fast || !AcceptsBf16Fast(c, a, b, m, n, k, transA, transB)) return false;
        int tilesM = m / Bf16FastTileM, tilesN = n / Bf16FastTileN;
        long tiles = (long)tilesM * tilesN;
        var (splits, kPer) = SplitPlan(tiles, (long)m * n, k, Bf16FastTileK);
        var p = new Bf16GemmArgs
        {
            M = m, N = n, K = k, TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, Accumulate = accumulate ? 1 : 0,
            TilesM = tilesM, TilesN = tilesN, Splits = splits, KPerSplit = kPer,
        };
        var kernel = !transA && transB ? _matmulBf16Fast : transA ? _matmulBf16FastTN : _matmulBf16FastNN;
        var cv = F(c).SubView(0, (long)m * n);
        var av = ChunkView(a, (long)m * k);
        var bv = ChunkView(b, (long)n * k);
        if (splits == 1) kernel(Bf16Config(TileGroups(tiles)), cv.Cast<F2>(), av, bv, p);
        else
        {
            var partials = Scratch((long)splits * m * n);
            p.Accumulate = 0;
            kernel(Bf16Config(TileGroups(tiles * splits)), partials.Cast<F2>(), av, bv, p);
            _matmulSplitReduce(Config(StreamGroups((long)m * n)), cv, partials, splits, accumulate ? 1 : 0);
        }
        Interlocked.Increment(ref _bf16FastLaunches);
        return true;
    }

    /// <summary>The first <paramref name="count"/> bf16 elements of a tensor (16-byte aligned, count a multiple of 8) as 16-byte chunks.</summary>
    private static ArrayView<U4> ChunkView(Tensor t, long count) => Arena(t).Bytes(t).SubView(0, count * 2).Cast<U4>();

    /// <summary>
    /// c[m, n] (+)= a·bᵀ over 128×256 tiles and k slices (grid-stride), a [m, k] and b [n, k] as 16-byte chunks (k / 8
    /// per row). With Splits &gt; 1, slice z writes its partial product to c[z·m·n ..] instead (c is then the scratch).
    /// </summary>
    [IlgpuKernel]
    internal static void MatMulBf16FastKernel(ArrayView<F2> c, ArrayView<U4> a, ArrayView<U4> b, Bf16GemmArgs p) =>
        FastTiles(c, a, b, p, FastNT, SharedMemory.Allocate<U4>(2 * Bf16FastStageA), SharedMemory.Allocate<U4>(2 * Bf16FastStageB));

    /// <summary>c[m, n] (+)= a·b, a [m, k] k-contiguous, b [k, n] n-contiguous (n / 8 chunks per row); as above otherwise.</summary>
    [IlgpuKernel]
    internal static void MatMulBf16FastNNKernel(ArrayView<F2> c, ArrayView<U4> a, ArrayView<U4> b, Bf16GemmArgs p) =>
        FastTiles(c, a, b, p, FastNN, SharedMemory.Allocate<U4>(2 * Bf16FastStageA), SharedMemory.Allocate<U4>(2 * Bf16FastStageB));

    /// <summary>c[m, n] (+)= aᵀ·b, a [k, m] m-contiguous, b [k, n] n-contiguous; as above otherwise.</summary>
    [IlgpuKernel]
    internal static void MatMulBf16FastTNKernel(ArrayView<F2> c, ArrayView<U4> a, ArrayView<U4> b, Bf16GemmArgs p) =>
        FastTiles(c, a, b, p, FastTN, SharedMemory.Allocate<U4>(2 * Bf16FastStageA), SharedMemory.Allocate<U4>(2 * Bf16FastStageB));

    /// <summary>
    /// The kernels' body for one form (a constant: everything form-dependent folds): the loop over tiles and k slices,
    /// the k steps through the double-buffered shared tiles, and C.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FastTiles(ArrayView<F2> c, ArrayView<U4> a, ArrayView<U4> b, Bf16GemmArgs p, int form, ArrayView<U4> sa, ArrayView<U4> sb)
    {
        int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31;
        int g = lane >> 2, t = lane & 3;
        bool aKc = form != FastTN, bKc = form == FastNT;
        FastOperand pa = FastPlanA(p, form, tid), pb = FastPlanB(p, form, tid);
        // Fragment reads: A fragments of m16 block 4·(w mod 2) + i, half h at slot ((2·block + h)·8 + g)·4 + t; chunk t
        // of B rows 64·(w div 2) + g (+8, +16 ..).
        int aFrag = ((warp & 1) * 64 + g) * Bf16FastChunks + t, bFrag = ((warp >> 1) * 64 + g) * Bf16FastChunks + t;

        int tiles = p.TilesM * p.TilesN * p.Splits;
        for (int tile = Grid.IdxX; tile < tiles; tile += Grid.DimX)
        {
            int tn = tile % p.TilesN, rest = tile / p.TilesN, tm = rest % p.TilesM, z = rest / p.TilesM;
            int m0 = tm * Bf16FastTileM, n0 = tn * Bf16FastTileN;
            int kBegin = z * p.KPerSplit, kEnd = DeviceReduce.Min(p.K, kBegin + p.KPerSplit);
            int aIdx = FastFirst(pa, aKc, m0, kBegin), bIdx = FastFirst(pb, bKc, n0, kBegin);

            FastRegs r = LoadFast(a, b, aIdx, bIdx, pa.Gap, pb.Gap);
            StoreFast(sa, sb, 0, pa.St, pb.St, r, form);
            Group.Barrier();

            CBlock2 acc = default;
            int buffer = 0;
            // kc: the step's first k in chunks (8 k) from the slice's start; Step: chunks from one 8 k to the next.
            int sliceChunks = (kEnd - kBegin) >> 3;
            for (int kc = 0; kc < sliceChunks; kc += Bf16FastChunks)
            {
                int next = kc + Bf16FastChunks;
                bool more = next < sliceChunks;
                if (more) r = LoadFast(a, b, aIdx + next * pa.Step, bIdx + next * pb.Step, pa.Gap, pb.Gap);
                acc = FastKStep(acc, sa, sb, buffer * Bf16FastStageA + aFrag, buffer * Bf16FastStageB + bFrag, warp, lane);
                if (more) StoreFast(sa, sb, buffer ^ 1, pa.St, pb.St, r, form);
                Group.Barrier();
                buffer ^= 1;
            }

            // C in pairs of columns (col even, n even): this lane's (r, col..col+1) of each fragment at pair index
            // (r·n + col) / 2 of a view that starts at its row g, first column (of slice z's partial when split).
            int r0 = m0 + (warp & 1) * 64 + g, col = n0 + (warp >> 1) * 64 + 2 * t;
            var cw = c.SubView(((long)z * p.M * p.N + (long)r0 * p.N + col) >> 1);
            int rows16 = 8 * p.N; // 16 rows in pairs
            StoreRowFast(cw, p, 0, acc.L.R0);
            StoreRowFast(cw, p, rows16, acc.L.R1);
            StoreRowFast(cw, p, 2 * rows16, acc.L.R2);
            StoreRowFast(cw, p, 3 * rows16, acc.L.R3);
            StoreRowFast(cw, p, 16, acc.R.R0);
            StoreRowFast(cw, p, rows16 + 16, acc.R.R1);
            StoreRowFast(cw, p, 2 * rows16 + 16, acc.R.R2);
            StoreRowFast(cw, p, 3 * rows16 + 16, acc.R.R3);
        }
    }

    /// <summary>
    /// Writes (or adds) a lane's fragments of one m16 row of a 64×32 half at pair index o of cw: the n8 fragments at
    /// o, o + 4, o + 8, o + 12 (8 columns each), rows g (c0, c1) and g + 8 (c2, c3, 4·n pairs further). Full tiles: no bounds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRowFast(ArrayView<F2> cw, Bf16GemmArgs p, int o, CRow v)
    {
        int down8 = 4 * p.N;
        StoreFragFast(cw, p.Accumulate, o, down8, v.J0);
        StoreFragFast(cw, p.Accumulate, o + 4, down8, v.J1);
        StoreFragFast(cw, p.Accumulate, o + 8, down8, v.J2);
        StoreFragFast(cw, p.Accumulate, o + 12, down8, v.J3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFragFast(ArrayView<F2> cw, int accumulate, int o, int down8, CFrag v)
    {
        F2 top, bottom;
        top.X = v.X0; top.Y = v.X1;
        bottom.X = v.X2; bottom.Y = v.X3;
        if (accumulate != 0)
        {
            F2 t0 = cw[o], b0 = cw[o + down8];
            top.X += t0.X; top.Y += t0.Y;
            bottom.X += b0.X; bottom.Y += b0.Y;
        }
        cw[o] = top;
        cw[o + down8] = bottom;
    }

    /// <summary>An A fragment as stored (a0..a3 in X..W).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static AFrag AOf(U4 v)
    {
        AFrag f;
        f.A0 = v.X; f.A1 = v.Y; f.A2 = v.Z; f.A3 = v.W;
        return f;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static BFrag BLo(U4 v)
    {
        BFrag f;
        f.B0 = v.X; f.B1 = v.Y;
        return f;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static BFrag BHi(U4 v)
    {
        BFrag f;
        f.B0 = v.Z; f.B1 = v.W;
        return f;
    }

    /// <summary>
    /// The warp's 64×64 block over one 32-wide k step: 8 chunks of A (rows g, g+8 of each m16 row) from shared index
    /// ao, 8 of B (row g of each n8 column) from bo, then 2 × 32 mma. Warp-collective.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CBlock2 FastKStep(CBlock2 c, ArrayView<U4> sa, ArrayView<U4> sb, int ao, int bo, int warp, int lane)
    {
        const int rows8 = 8 * Bf16FastChunks;
        // Views at the lane's first chunk, so that every read below is at a constant offset from one address (one
        // register and an immediate in the SASS, rather than an index to sign-extend and scale per read).
        sa = sa.SubView(ao);
        sb = sb.SubView(bo);
        ao = 0;
        bo = 0;
        // A: m16 block i, half h at ao + (2i + h) · 8 rows' worth of chunks.
        U4 a0 = sa[ao], a0h = sa[ao + rows8], a1 = sa[ao + 2 * rows8], a1h = sa[ao + 3 * rows8];
        U4 a2 = sa[ao + 4 * rows8], a2h = sa[ao + 5 * rows8], a3 = sa[ao + 6 * rows8], a3h = sa[ao + 7 * rows8];
        U4 b0 = sb[bo], b1 = sb[bo + rows8], b2 = sb[bo + 2 * rows8], b3 = sb[bo + 3 * rows8];
        U4 b4 = sb[bo + 4 * rows8], b5 = sb[bo + 5 * rows8], b6 = sb[bo + 6 * rows8], b7 = sb[bo + 7 * rows8];
        c = FastHalf(c, AOf(a0), AOf(a1), AOf(a2), AOf(a3),
            BLo(b0), BLo(b1), BLo(b2), BLo(b3), BLo(b4), BLo(b5), BLo(b6), BLo(b7), warp, lane);
        c = FastHalf(c, AOf(a0h), AOf(a1h), AOf(a2h), AOf(a3h),
            BHi(b0), BHi(b1), BHi(b2), BHi(b3), BHi(b4), BHi(b5), BHi(b6), BHi(b7), warp, lane);
        return c;
    }

    /// <summary>4 × 8 mma of one 16-k half: the tensor-core instruction on CUDA, the simple kernel's emulation elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CBlock2 FastHalf(CBlock2 c, AFrag f0, AFrag f1, AFrag f2, AFrag f3,
        BFrag h0, BFrag h1, BFrag h2, BFrag h3, BFrag h4, BFrag h5, BFrag h6, BFrag h7, int warp, int lane)
    {
        // A switch on the accelerator type, which ILGPU folds (see KStep in the simple kernel).
        switch (Accelerator.CurrentType)
        {
            case AcceleratorType.Cuda:
                c.L.R0 = MmaRow(c.L.R0, f0, h0, h1, h2, h3);
                c.R.R0 = MmaRow(c.R.R0, f0, h4, h5, h6, h7);
                c.L.R1 = MmaRow(c.L.R1, f1, h0, h1, h2, h3);
                c.R.R1 = MmaRow(c.R.R1, f1, h4, h5, h6, h7);
                c.L.R2 = MmaRow(c.L.R2, f2, h0, h1, h2, h3);
                c.R.R2 = MmaRow(c.R.R2, f2, h4, h5, h6, h7);
                c.L.R3 = MmaRow(c.L.R3, f3, h0, h1, h2, h3);
                c.R.R3 = MmaRow(c.R.R3, f3, h4, h5, h6, h7);
                return c;
            case AcceleratorType.CPU:
            case AcceleratorType.OpenCL:
            default:
                c.L = KStepEmulated(c.L, f0, f1, f2, f3, h0, h1, h2, h3, warp, lane);
                c.R = KStepEmulated(c.R, f0, f1, f2, f3, h4, h5, h6, h7, warp, lane);
                return c;
        }
    }
}
