using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Mixed-precision GEMM on tensor cores: C (+)= op(A)·op(B) with A and B bfloat16, C and the accumulation fp32, all
/// four transpose forms, any m, n, k. Each group of 256 threads (8 warps) computes a 128×128 tile of C; warp w
/// computes the 64×32 block at rows 64·(w mod 2), columns 32·(w div 2) as 4 × 4 warp-level
/// <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c> products per 16 k (64 fp32 accumulators per thread,
/// held in scalar locals: 16 fragments of 4). k goes in steps of 32 through double-buffered shared memory holding
/// both tiles k-contiguous as packed bf16 pairs (one uint = elements k, k+1; rows of 16 uints padded to 20 so that
/// the fragment reads of a warp hit 32 distinct banks): 2 × 2 × 128 × 20 uints = 40 KiB. The next step is loaded
/// into 8 + 8 registers per thread while the current one is multiplied, so one barrier per step suffices. Global
/// loads are 4 bytes (two bf16): along k where the operand is k-contiguous (A, or Bᵀ), and as 2 × 2 blocks
/// transposed in registers where it is m- or n-contiguous (Aᵀ, B); element-wise, zero-filled, at the edges and
/// wherever pairs would be misaligned (odd row length, or a tensor starting at an odd bf16 offset). Split k as in
/// the fp32 GEMM (slices in multiples of 32, partial tiles summed in slice order by its reduce kernel).
/// </summary>
/// <remarks>
/// The same kernel runs on ILGPU's CPU accelerator (the tests): there the accelerator type is not Cuda and the mma
/// instructions are emulated per warp with exactly the PTX fragment layout. For each 16-k step every lane stores the
/// registers it would hand to the 16 mma (a0..a3 of its four A fragments, b0, b1 of its four B fragments) into a
/// per-warp scratch in dynamic shared memory (24 registers × 32 lanes; requested only on that accelerator: on CUDA the
/// branch is folded away and the kernel has no dynamic shared memory), and each emulated mma reads the A row and B
/// columns that this lane's c0..c3 need from the lanes and registers the PTX ISA assigns them to. So the CPU results
/// check the fragment indexing of the CUDA path. The emulation sums the 16 exact bf16 products in fp32 and adds them
/// to the accumulator; the tensor core's internal summation order differs, within fp32 rounding.
/// </remarks>
public sealed partial class IlgpuBackend
{
    /// <summary>Tile of C per group (rows and columns), k step in bf16 elements, shared row stride in uints.</summary>
    private const int Bf16Tile = 128, Bf16TileK = 32, Bf16Ld = Bf16TileK / 2 + 4, Bf16Stage = Bf16Tile * Bf16Ld;

    /// <summary>Scratch uints per warp of the CPU twin's mma emulation: 24 registers (4 A fragments of 4, 4 B fragments of 2) of 32 lanes.</summary>
    private const int Bf16EmuWarp = 24 * WarpSize;

    private Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<uint>, ArrayView<ushort>, ArrayView<uint>, Bf16GemmArgs> _matmulBf16 = null!;

    /// <summary>Shape of a bf16 GEMM launch; PairsA/PairsB: the operand may be read as aligned uint pairs.</summary>
    internal struct Bf16GemmArgs
    {
        public int M, N, K, TransA, TransB, Accumulate, TilesM, TilesN, Splits, KPerSplit, PairsA, PairsB;
    }

    /// <summary>Four fp32 accumulators of an m16n8 fragment: c0, c1 at (g, 2t), (g, 2t+1); c2, c3 at row g+8.</summary>
    internal struct CFrag
    {
        public float X0, X1, X2, X3;
    }

    /// <summary>The four n8 fragments of one m16 row of a warp's 64×32 block.</summary>
    internal struct CRow
    {
        public CFrag J0, J1, J2, J3;
    }

    /// <summary>A warp's 64×32 block of accumulators (64 per lane): its four m16 rows.</summary>
    internal struct CBlock
    {
        public CRow R0, R1, R2, R3;
    }

    /// <summary>A fragment of m16n8k16 (bf16 pairs): a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..).</summary>
    internal struct AFrag
    {
        public uint A0, A1, A2, A3;
    }

    /// <summary>B fragment of m16n8k16 (bf16 pairs): b0 (k 2t.., n g), b1 (k 2t+8.., n g).</summary>
    internal struct BFrag
    {
        public uint B0, B1;
    }

    /// <summary>Eight packed bf16 pairs: one thread's share of a 128×32 tile.</summary>
    internal struct U8
    {
        public uint X0, X1, X2, X3, X4, X5, X6, X7;
    }

    private void LoadMatMulBf16() =>
        _matmulBf16 = Load<ArrayView<float>, ArrayView<ushort>, ArrayView<uint>, ArrayView<ushort>, ArrayView<uint>, Bf16GemmArgs>(MatMulBf16Kernel);

    /// <summary>c[m, n] (+)= op(a)·op(b) for BF16 a and b (see the class remarks); called by MatMulCore.</summary>
    private void MatMulBf16(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        if (TryMatMulPtx(c, a, b, m, n, k, transA, transB, accumulate)) return;
        if (TryMatMulBf16Fast(c, a, b, m, n, k, transA, transB, accumulate)) return;
        MatMulBf16Simple(c, a, b, m, n, k, transA, transB, accumulate);
    }

    /// <summary>Products the simple bf16 kernel computed so far (where another variant is selected: those it refused).</summary>
    public long Bf16SimpleLaunches => Interlocked.Read(ref _bf16SimpleLaunches);

    private long _bf16SimpleLaunches;

    /// <summary>c[m, n] (+)= op(a)·op(b) by the simple kernel, whatever the variant.</summary>
    private void MatMulBf16Simple(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        Interlocked.Increment(ref _bf16SimpleLaunches);
        var (tilesM, tilesN, tiles, splits, kPer) = TilePlan(m, n, k, Bf16Tile, Bf16TileK);
        var a2 = PairView(a, out bool alignedA);
        var b2 = PairView(b, out bool alignedB);
        var p = new Bf16GemmArgs
        {
            M = m, N = n, K = k, TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, Accumulate = accumulate ? 1 : 0,
            TilesM = tilesM, TilesN = tilesN, Splits = splits, KPerSplit = kPer,
            // Pairs (k, k+1) of a k-contiguous row, or (r, r+1) of an m/n-contiguous one, are aligned uints when the
            // tensor starts on 4 bytes and its rows have an even length.
            PairsA = alignedA && (transA ? m : k) % 2 == 0 ? 1 : 0,
            PairsB = alignedB && (transB ? k : n) % 2 == 0 ? 1 : 0,
        };
        var cv = F(c).SubView(0, (long)m * n);
        if (splits == 1)
        {
            _matmulBf16(Bf16Config(TileGroups(tiles)), cv, Bf16View(a), a2, Bf16View(b), b2, p);
            return;
        }
        var partials = Scratch((long)splits * m * n);
        p.Accumulate = 0;
        _matmulBf16(Bf16Config(TileGroups(tiles * splits)), partials, Bf16View(a), a2, Bf16View(b), b2, p);
        _matmulSplitReduce(Config(StreamGroups((long)m * n)), cv, partials, splits, accumulate ? 1 : 0);
    }

    /// <summary>
    /// Launch configuration of the bf16 GEMM: on accelerators other than CUDA with the dynamic shared memory of the
    /// mma emulation (the CUDA kernel has none: its emulation branch is compiled out).
    /// </summary>
    private KernelConfig Bf16Config(int groups)
    {
        if (_acc.AcceleratorType == AcceleratorType.Cuda) return Config(groups);
        _acc.Bind();
        return new KernelConfig(new Index1D(groups), new Index1D(GroupSize), SharedMemoryConfig.RequestDynamic<uint>(WarpsPerGroup * Bf16EmuWarp));
    }

    /// <summary>
    /// The elements of a BF16 tensor as uint pairs (element 2i in the low half of uint i) when it starts on a 4-byte
    /// boundary; otherwise (never read then) a small dummy.
    /// </summary>
    private ArrayView<uint> PairView(Tensor t, out bool aligned)
    {
        aligned = t.ByteOffset % 4 == 0 && t.Bytes >= 4;
        return aligned ? Arena(t).Bytes(t).SubView(0, t.Bytes & ~3L).Cast<uint>() : _dummy.View.BaseView.Cast<uint>();
    }

    /// <summary>
    /// c[m, n] (+)= op(a)·op(b) over 128×128 tiles (grid-stride over tiles and k slices); a and a2 are the same
    /// bf16 elements seen as ushort and as uint pairs (likewise b, b2). With Splits &gt; 1, slice z writes its partial
    /// product to c[z·m·n ..] instead (c is then the scratch buffer).
    /// </summary>
    [IlgpuKernel]
    internal static void MatMulBf16Kernel(ArrayView<float> c, ArrayView<ushort> a, ArrayView<uint> a2, ArrayView<ushort> b, ArrayView<uint> b2, Bf16GemmArgs p)
    {
        var sa = SharedMemory.Allocate<uint>(2 * Bf16Stage);
        var sb = SharedMemory.Allocate<uint>(2 * Bf16Stage);
        int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31;

        // Operand layouts: A is k-contiguous (rows of length K) unless transposed (rows of length M along k);
        // B is k-contiguous when transposed (b[n, k]), n-contiguous otherwise (b[k, n]).
        int aKc = 1 - p.TransA, bKc = p.TransB;
        int aLen = p.TransA != 0 ? p.M : p.K, bLen = p.TransB != 0 ? p.K : p.N;

        // This warp's 64×32 block and this lane's fragment offsets (group g = lane / 4, thread t = lane % 4).
        int g = lane >> 2, t = lane & 3;
        int aFrag = ((warp & 1) * 64 + g) * Bf16Ld + t, bFrag = ((warp >> 1) * 32 + g) * Bf16Ld + t;

        int tiles = p.TilesM * p.TilesN * p.Splits;
        for (int tile = Grid.IdxX; tile < tiles; tile += Grid.DimX)
        {
            int tn = tile % p.TilesN, rest = tile / p.TilesN, tm = rest % p.TilesM, z = rest / p.TilesM;
            int m0 = tm * Bf16Tile, n0 = tn * Bf16Tile;
            int kBegin = z * p.KPerSplit, kEnd = DeviceReduce.Min(p.K, kBegin + p.KPerSplit);

            // Prefetch the first k step into registers and store it.
            U8 ra = LoadTile(a, a2, aKc, p.PairsA, p.M, aLen, m0, kBegin, kEnd, tid);
            U8 rb = LoadTile(b, b2, bKc, p.PairsB, p.N, bLen, n0, kBegin, kEnd, tid);
            StoreTile(sa, 0, aKc, tid, ra);
            StoreTile(sb, 0, bKc, tid, rb);
            Group.Barrier();

            CBlock acc = default;
            int buffer = 0;
            for (int k0 = kBegin; k0 < kEnd; k0 += Bf16TileK)
            {
                int next = k0 + Bf16TileK;
                bool more = next < kEnd;
                if (more)
                {
                    ra = LoadTile(a, a2, aKc, p.PairsA, p.M, aLen, m0, next, kEnd, tid);
                    rb = LoadTile(b, b2, bKc, p.PairsB, p.N, bLen, n0, next, kEnd, tid);
                }
                // The two 16-wide halves of the 32-wide step (pair columns 0..7 and 8..15), unrolled by hand.
                int sBase = buffer * Bf16Stage;
                acc = KStep(acc, sa, sb, sBase + aFrag, sBase + bFrag, warp, lane);
                acc = KStep(acc, sa, sb, sBase + aFrag + 8, sBase + bFrag + 8, warp, lane);
                if (more)
                {
                    int nBase = (buffer ^ 1) * Bf16Stage;
                    StoreTile(sa, nBase, aKc, tid, ra);
                    StoreTile(sb, nBase, bKc, tid, rb);
                }
                Group.Barrier();
                buffer ^= 1;
            }

            long zOffset = (long)z * p.M * p.N;
            int r0 = m0 + (warp & 1) * 64 + g, col = n0 + (warp >> 1) * 32 + 2 * t;
            StoreRowBf16(c, p, zOffset, r0, col, acc.R0);
            StoreRowBf16(c, p, zOffset, r0 + 16, col, acc.R1);
            StoreRowBf16(c, p, zOffset, r0 + 32, col, acc.R2);
            StoreRowBf16(c, p, zOffset, r0 + 48, col, acc.R3);
        }
    }

    /// <summary>
    /// One thread's 8 pairs of the 128×32 tile at (r0, k0) of an operand with `rows` rows (m or n) whose memory rows
    /// have length rowLen: k-contiguous (kc = 1: element (r, k) at r·rowLen + k, pairs along k at rows
    /// r0 + tid/16 + 16q, pair column tid mod 16) or r-contiguous (kc = 0: element (r, k) at k·rowLen + r, 2 × 2
    /// blocks at rows r0 + 2·(tid/4), k pairs (tid mod 4) + 4q, transposed into X(2q) for row r and X(2q+1) for r+1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U8 LoadTile(ArrayView<ushort> x, ArrayView<uint> x2, int kc, int pairs, int rows, int rowLen, int r0, int k0, int kEnd, int tid)
    {
        U8 v;
        if (kc != 0)
        {
            int r = r0 + (tid >> 4), k = k0 + 2 * (tid & 15);
            v.X0 = PairKc(x, x2, pairs, r, k, rows, rowLen, kEnd);
            v.X1 = PairKc(x, x2, pairs, r + 16, k, rows, rowLen, kEnd);
            v.X2 = PairKc(x, x2, pairs, r + 32, k, rows, rowLen, kEnd);
            v.X3 = PairKc(x, x2, pairs, r + 48, k, rows, rowLen, kEnd);
            v.X4 = PairKc(x, x2, pairs, r + 64, k, rows, rowLen, kEnd);
            v.X5 = PairKc(x, x2, pairs, r + 80, k, rows, rowLen, kEnd);
            v.X6 = PairKc(x, x2, pairs, r + 96, k, rows, rowLen, kEnd);
            v.X7 = PairKc(x, x2, pairs, r + 112, k, rows, rowLen, kEnd);
        }
        else
        {
            int r = r0 + 2 * (tid >> 2), k = k0 + 2 * (tid & 3);
            ulong q0 = QuadRc(x, x2, pairs, r, k, rows, kEnd);
            ulong q1 = QuadRc(x, x2, pairs, r, k + 8, rows, kEnd);
            ulong q2 = QuadRc(x, x2, pairs, r, k + 16, rows, kEnd);
            ulong q3 = QuadRc(x, x2, pairs, r, k + 24, rows, kEnd);
            v.X0 = (uint)q0; v.X1 = (uint)(q0 >> 32);
            v.X2 = (uint)q1; v.X3 = (uint)(q1 >> 32);
            v.X4 = (uint)q2; v.X5 = (uint)(q2 >> 32);
            v.X6 = (uint)q3; v.X7 = (uint)(q3 >> 32);
        }
        return v;
    }

    /// <summary>Stores what <see cref="LoadTile"/> loaded into the shared tile at stage offset baseIdx ([row][k pair], stride Bf16Ld).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTile(ArrayView<uint> s, int baseIdx, int kc, int tid, U8 v)
    {
        if (kc != 0)
        {
            int o = baseIdx + (tid >> 4) * Bf16Ld + (tid & 15);
            s[o] = v.X0; s[o + 16 * Bf16Ld] = v.X1; s[o + 32 * Bf16Ld] = v.X2; s[o + 48 * Bf16Ld] = v.X3;
            s[o + 64 * Bf16Ld] = v.X4; s[o + 80 * Bf16Ld] = v.X5; s[o + 96 * Bf16Ld] = v.X6; s[o + 112 * Bf16Ld] = v.X7;
        }
        else
        {
            int o = baseIdx + 2 * (tid >> 2) * Bf16Ld + (tid & 3);
            s[o] = v.X0; s[o + Bf16Ld] = v.X1;
            s[o + 4] = v.X2; s[o + Bf16Ld + 4] = v.X3;
            s[o + 8] = v.X4; s[o + Bf16Ld + 8] = v.X5;
            s[o + 12] = v.X6; s[o + Bf16Ld + 12] = v.X7;
        }
    }

    /// <summary>Elements (r, k) and (r, k+1) of a k-contiguous operand (k even) as a pair, zero outside the matrix or the k slice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint PairKc(ArrayView<ushort> x, ArrayView<uint> x2, int pairs, int r, int k, int rows, int rowLen, int kEnd)
    {
        if (r >= rows || k >= kEnd) return 0u;
        int i = r * rowLen + k;
        // With pairs, rowLen and kEnd are even (slices are multiples of 32), so k < kEnd implies k + 1 < kEnd.
        if (pairs != 0) return x2[i >> 1];
        uint lo = x[i];
        uint hi = k + 1 < kEnd ? (uint)x[i + 1] : 0u;
        return lo | hi << 16;
    }

    /// <summary>
    /// The 2 × 2 block (r..r+1, k..k+1) of an r-contiguous operand (element (r, k) at k·rows + r, r and k even),
    /// transposed: the pair (r, k), (r, k+1) in the low uint, the pair (r+1, k), (r+1, k+1) in the high one; zero
    /// outside the matrix or the k slice.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong QuadRc(ArrayView<ushort> x, ArrayView<uint> x2, int pairs, int r, int k, int rows, int kEnd)
    {
        uint x0 = 0u, x1 = 0u; // x0: rows r, r+1 at k; x1: at k + 1
        if (r < rows && k < kEnd)
        {
            int i = k * rows + r;
            bool k1 = k + 1 < kEnd;
            if (pairs != 0)
            {
                // rows is even, so r < rows implies r + 1 < rows.
                x0 = x2[i >> 1];
                if (k1) x1 = x2[(i + rows) >> 1];
            }
            else
            {
                bool r1 = r + 1 < rows;
                x0 = x[i];
                if (r1) x0 |= (uint)x[i + 1] << 16;
                if (k1)
                {
                    x1 = x[i + rows];
                    if (r1) x1 |= (uint)x[i + rows + 1] << 16;
                }
            }
        }
        uint lo = (x0 & 0xFFFFu) | (x1 << 16);
        uint hi = (x0 >> 16) | (x1 & 0xFFFF0000u);
        return lo | (ulong)hi << 32;
    }

    /// <summary>The A fragment whose (g, t) element pair sits at shared index o: a0 at o, a1 8 rows down, a2 8 k further, a3 both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static AFrag ReadA(ArrayView<uint> s, int o)
    {
        AFrag f;
        f.A0 = s[o];
        f.A1 = s[o + 8 * Bf16Ld];
        f.A2 = s[o + 4];
        f.A3 = s[o + 8 * Bf16Ld + 4];
        return f;
    }

    /// <summary>The B fragment whose (n g, k pair t) element pair sits at shared index o: b0 at o, b1 8 k further.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static BFrag ReadB(ArrayView<uint> s, int o)
    {
        BFrag f;
        f.B0 = s[o];
        f.B1 = s[o + 4];
        return f;
    }

    /// <summary>
    /// The warp's 64×32 block over 16 k: A fragments of its four m16 rows from shared index ao (+16 rows each), B
    /// fragments of its four n8 columns from bo (+8 rows of the [n][k] tile each), 4 × 4 mma: the tensor-core
    /// instruction on CUDA, its emulation elsewhere. Warp-collective.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CBlock KStep(CBlock c, ArrayView<uint> sa, ArrayView<uint> sb, int ao, int bo, int warp, int lane)
    {
        AFrag f0 = ReadA(sa, ao), f1 = ReadA(sa, ao + 16 * Bf16Ld), f2 = ReadA(sa, ao + 32 * Bf16Ld), f3 = ReadA(sa, ao + 48 * Bf16Ld);
        BFrag h0 = ReadB(sb, bo), h1 = ReadB(sb, bo + 8 * Bf16Ld), h2 = ReadB(sb, bo + 16 * Bf16Ld), h3 = ReadB(sb, bo + 24 * Bf16Ld);
        // A switch rather than `if (CudaAsm.IsSupported)`: ILGPU turns the accelerator type into a constant only after
        // its branch folding has passed over the comparison, so an `if` left both paths in the PTX (behind a constant
        // predicate, with the emulation's barriers); a switch on the type itself is folded, and the PTX holds the mma
        // path alone.
        switch (Accelerator.CurrentType)
        {
            case AcceleratorType.Cuda:
                c.R0 = MmaRow(c.R0, f0, h0, h1, h2, h3);
                c.R1 = MmaRow(c.R1, f1, h0, h1, h2, h3);
                c.R2 = MmaRow(c.R2, f2, h0, h1, h2, h3);
                c.R3 = MmaRow(c.R3, f3, h0, h1, h2, h3);
                return c;
            case AcceleratorType.CPU:
            case AcceleratorType.OpenCL:
            default:
                return KStepEmulated(c, f0, f1, f2, f3, h0, h1, h2, h3, warp, lane);
        }
    }

    /// <summary>One m16 row of the warp's block times the four n8 column fragments.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CRow MmaRow(CRow c, AFrag a, BFrag b0, BFrag b1, BFrag b2, BFrag b3)
    {
        c.J0 = Mma(c.J0, a, b0);
        c.J1 = Mma(c.J1, a, b1);
        c.J2 = Mma(c.J2, a, b2);
        c.J3 = Mma(c.J3, a, b3);
        return c;
    }

    /// <summary>d = a·b + c for this lane's m16n8k16 bf16 fragments, on the tensor cores (CUDA only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CFrag Mma(CFrag c, AFrag a, BFrag b)
    {
        Ref<float> d0 = c.X0, d1 = c.X1, d2 = c.X2, d3 = c.X3;
        Input<uint> a0 = a.A0, a1 = a.A1, a2 = a.A2, a3 = a.A3, b0 = b.B0, b1 = b.B1;
        CudaAsm.EmitRef(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
            ref d0, ref d1, ref d2, ref d3, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1);
        c.X0 = d0.Value; c.X1 = d1.Value; c.X2 = d2.Value; c.X3 = d3.Value;
        return c;
    }

    /// <summary>
    /// The 16 mma of <see cref="KStep"/> emulated: every lane publishes the registers it holds (A fragment i's
    /// register r at x[(4i + r)·32 + lane], B fragment j's register r at x[(16 + 2j + r)·32 + lane], x this warp's
    /// slice of the dynamic shared memory); after a warp barrier each mma reads the elements it needs from the other
    /// lanes' registers; a second barrier keeps the scratch until every lane has read it.
    /// </summary>
    private static CBlock KStepEmulated(CBlock c, AFrag f0, AFrag f1, AFrag f2, AFrag f3, BFrag h0, BFrag h1, BFrag h2, BFrag h3, int warp, int lane)
    {
        var x = SharedMemory.GetDynamic<uint>().SubView(warp * Bf16EmuWarp, Bf16EmuWarp);
        PublishA(x, 0, f0, lane); PublishA(x, 1, f1, lane); PublishA(x, 2, f2, lane); PublishA(x, 3, f3, lane);
        PublishB(x, 0, h0, lane); PublishB(x, 1, h1, lane); PublishB(x, 2, h2, lane); PublishB(x, 3, h3, lane);
        Warp.Barrier();
        c.R0 = MmaRowEmulated(c.R0, x, 0, lane);
        c.R1 = MmaRowEmulated(c.R1, x, 1, lane);
        c.R2 = MmaRowEmulated(c.R2, x, 2, lane);
        c.R3 = MmaRowEmulated(c.R3, x, 3, lane);
        Warp.Barrier();
        return c;
    }

    private static void PublishA(ArrayView<uint> x, int i, AFrag f, int lane)
    {
        int o = 4 * i * WarpSize + lane;
        x[o] = f.A0; x[o + WarpSize] = f.A1; x[o + 2 * WarpSize] = f.A2; x[o + 3 * WarpSize] = f.A3;
    }

    private static void PublishB(ArrayView<uint> x, int j, BFrag f, int lane)
    {
        int o = (16 + 2 * j) * WarpSize + lane;
        x[o] = f.B0; x[o + WarpSize] = f.B1;
    }

    /// <summary>Row i of the block: A fragment i times B fragments 0..3, emulated.</summary>
    private static CRow MmaRowEmulated(CRow c, ArrayView<uint> x, int i, int lane)
    {
        int a = 4 * i * WarpSize;
        c.J0 = MmaEmulated(c.J0, x, a, 16 * WarpSize, lane);
        c.J1 = MmaEmulated(c.J1, x, a, 18 * WarpSize, lane);
        c.J2 = MmaEmulated(c.J2, x, a, 20 * WarpSize, lane);
        c.J3 = MmaEmulated(c.J3, x, a, 22 * WarpSize, lane);
        return c;
    }

    /// <summary>
    /// One mma emulated for this lane (g = lane/4, t = lane mod 4): c0..c3 at (g, 2t), (g, 2t+1), (g+8, 2t),
    /// (g+8, 2t+1) plus Σ_k A(row, k)·B(k, col), the A fragment's registers at x[aBase ..], the B fragment's at x[bBase ..].
    /// </summary>
    private static CFrag MmaEmulated(CFrag c, ArrayView<uint> x, int aBase, int bBase, int lane)
    {
        int g = lane >> 2, t = lane & 3;
        float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
        for (int kk = 0; kk < 16; kk++)
        {
            float lo = Bf16Half(x[aBase + FragASlot(g, kk)], kk & 1), hi = Bf16Half(x[aBase + FragASlot(g + 8, kk)], kk & 1);
            float n0 = Bf16Half(x[bBase + FragBSlot(kk, 2 * t)], kk & 1), n1 = Bf16Half(x[bBase + FragBSlot(kk, 2 * t + 1)], kk & 1);
            s0 += lo * n0; s1 += lo * n1; s2 += hi * n0; s3 += hi * n1;
        }
        c.X0 += s0; c.X1 += s1; c.X2 += s2; c.X3 += s3;
        return c;
    }

    /// <summary>
    /// Where element (row, col) of the 16×16 A operand is, per the PTX ISA (m16n8k16, .bf16): register
    /// a(row/8 + 2·(col/8)) of lane 4·(row mod 8) + (col mod 8)/2, as register · 32 + lane; the low half for an even
    /// col. (The tests check it against the ISA's table.)
    /// </summary>
    internal static int FragASlot(int row, int col) => ((row >> 3) + 2 * (col >> 3)) * WarpSize + 4 * (row & 7) + ((col & 7) >> 1);

    /// <summary>
    /// Where element (row = k, col = n) of the 16×8 B operand is, per the PTX ISA: register b(row/8) of lane
    /// 4·col + (row mod 8)/2, as register · 32 + lane; the low half for an even row.
    /// </summary>
    internal static int FragBSlot(int row, int col) => (row >> 3) * WarpSize + 4 * col + ((row & 7) >> 1);

    /// <summary>The low (half = 0) or high bf16 of a pair, as a float (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Bf16Half(uint pair, int half) => Interop.IntAsFloat(half != 0 ? pair & 0xFFFF0000u : pair << 16);

    /// <summary>
    /// Writes a lane's fragments of one m16 row: (r, col..col+1) and (r+8, col..col+1) of each n8 fragment
    /// (columns col, col+8, col+16, col+24), where inside the matrix.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRowBf16(ArrayView<float> c, Bf16GemmArgs p, long zOffset, int r, int col, CRow v)
    {
        StoreFrag(c, p, zOffset, r, col, v.J0);
        StoreFrag(c, p, zOffset, r, col + 8, v.J1);
        StoreFrag(c, p, zOffset, r, col + 16, v.J2);
        StoreFrag(c, p, zOffset, r, col + 24, v.J3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFrag(ArrayView<float> c, Bf16GemmArgs p, long zOffset, int r, int col, CFrag v)
    {
        StoreBf16(c, p, zOffset, r, col, v.X0);
        StoreBf16(c, p, zOffset, r, col + 1, v.X1);
        StoreBf16(c, p, zOffset, r + 8, col, v.X2);
        StoreBf16(c, p, zOffset, r + 8, col + 1, v.X3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBf16(ArrayView<float> c, Bf16GemmArgs p, long zOffset, int r, int col, float v)
    {
        if (r >= p.M || col >= p.N) return;
        long i = zOffset + (long)r * p.N + col;
        c[i] = p.Accumulate != 0 ? c[i] + v : v;
    }
}
