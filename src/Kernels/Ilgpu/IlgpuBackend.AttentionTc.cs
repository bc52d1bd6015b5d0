using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Attention on tensor cores for the bf16 precision (head dimension 64): the same causal grouped-query attention with
/// document starts as the fp32 kernels of IlgpuBackend.Attention.cs, but every product (QKᵀ, PV, and backward dOVᵀ,
/// PᵀdO, dSᵀQ, dSK) is a warp-level <c>mma.sync m16n8k16</c> with bf16 operands and fp32 accumulation, as
/// FlashAttention-2 does. The kernels read q, k, v, o and dO in bf16 (BF16 tensors as they are; F32 ones are rounded
/// into scratch first) and round the probabilities P and dS (nearest even) where they become mma operands; scores,
/// the online softmax, the log-sum-exp, D = rowsum(dO∘O) and the accumulators are fp32. The output is written in
/// fp32, or in bf16 when o is a BF16 tensor; the gradients likewise, and through AttentionBackwardRope with dq and dk
/// rotated back by RoPE as they are stored.
/// <para>
/// Layout: each group of 4 warps (128 threads, not the 256 of the other kernels: with 174 to 246 registers per
/// thread two groups then share an SM) owns 64 rows
/// (queries for the forward and dQ kernels, keys for the dK/dV kernel), 16 per warp, held as A fragments in registers
/// for the whole unit. The other side walks through shared memory in
/// tiles of 64 rows × 64 dimensions, stored as packed bf16 pairs in rows of 32 + 8 uints ("[n][k pair]": the B
/// operand of an mma reads pairs along k; the 8 pairs of each k16 step interleaved 0, 4, 1, 5, 2, 6, 3, 7, so that a
/// lane's two B registers are one 8-byte load, and the padding spreads a half-warp's loads over 32 banks). A tile is
/// stored either along the head dimension ([row][d pair], for products over d) or transposed ([d][row pair], for
/// products over rows), from the same registers: each thread loads the 16-byte chunks of one k16 step of two adjacent
/// rows, and the kernels load the next tile while they multiply the current one. Scores come out of the mma as C
/// fragments whose layout is the A layout of the next product, so P and dS never leave registers (the
/// FlashAttention-2 register reuse). Row statistics of a C fragment are shared by the four lanes of a quad and
/// reduced with two shuffles.
/// </para>
/// <para>
/// Kernels: forward (one unit per (sequence, head, 64 queries); K and Vᵀ tiles), dQ (one unit per (sequence, head,
/// 64 queries); K, Kᵀ and V tiles; dS = P∘(dP − D)), dK/dV (one unit per (sequence, kv head, 64 keys) over the
/// query tiles of every head of its group; Q, Qᵀ, dO, dOᵀ tiles; it owns its rows of dk and dv, so nothing races).
/// Units with the most tiles start first (the last query tiles; the first key tiles), so that the causal
/// imbalance does not leave a tail. D comes from a delta kernel of its own (one warp per row).
/// </para>
/// <para>
/// On accelerators other than CUDA each mma is emulated with the PTX fragment layout (as in the bf16 GEMM: the lanes
/// publish their registers to a per-warp scratch in dynamic shared memory, which the CUDA kernels do not request),
/// so ILGPU's CPU accelerator checks the fragment indexing of the CUDA path.
/// </para>
/// </summary>
public sealed partial class IlgpuBackend
{
    /// <summary>
    /// Head dimension of the tensor-core attention; warps and threads per group; rows per group (16 per warp); rows
    /// per shared tile.
    /// </summary>
    internal const int TcHeadDim = 64, TcWarps = 4, TcGroup = TcWarps * WarpSize, TcRows = 16 * TcWarps, TcTile = 64;

    /// <summary>
    /// Groups per multiprocessor that the forward and dQ kernels are compiled for (<c>.minnctapersm</c>): three, so
    /// that ptxas keeps them within 168 registers (it fits them there without spilling: 179 and 174 unbounded, which
    /// let only two groups, eight warps, share an SM; these kernels wait on latency, not on the tensor cores). The
    /// dK/dV kernel (246 registers) would spill at 168 and stays at two. HFT_OCCUPANCY=off compiles them unbounded.
    /// </summary>
    internal const int TcGroupsPerMultiprocessor = 3;

    /// <summary>Shared row stride in uints (32 bf16 pairs + 8 of padding) and uints per shared tile.</summary>
    private const int TcLd = TcHeadDim / 2 + 8, TcStage = TcTile * TcLd;

    /// <summary>Scratch uints per warp of the mma emulation: 4 A and 2 B registers of 32 lanes.</summary>
    private const int TcEmuWarp = 6 * WarpSize;

    private const float Log2E = 1.4426950408889634f, Ln2 = 0.6931471805599453f;

    /// <summary>Eight n8 C fragments: a warp's 16 × 64 block of fp32 accumulators (32 per lane).</summary>
    internal struct C8
    {
        public CFrag J0, J1, J2, J3, J4, J5, J6, J7;
    }

    /// <summary>Four k16 A fragments: a warp's 16 × 64 block of bf16 operands (16 uints per lane).</summary>
    internal struct A4
    {
        public AFrag K0, K1, K2, K3;
    }

    private Action<KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<int>, AttentionArgs> _attentionTcForward = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<U4>, ArrayView<U4>, AttentionArgs> _attentionTcDelta = null!;
    private Action<KernelConfig, ArrayView<uint>, ArrayView<U4>, ArrayView<float>, ArrayView<float>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionArgs> _attentionTcDq = null!;
    private Action<KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<U4>, ArrayView<float>, ArrayView<float>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionArgs> _attentionTcDkDv = null!;

    private void LoadAttentionTc()
    {
        _attentionTcForward = Load<ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<int>, AttentionArgs>(AttentionTcForwardKernel);
        _attentionTcDelta = Load<ArrayView<float>, ArrayView<U4>, ArrayView<U4>, AttentionArgs>(AttentionTcDeltaKernel);
        _attentionTcDq = Load<ArrayView<uint>, ArrayView<U4>, ArrayView<float>, ArrayView<float>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionArgs>(AttentionTcDqKernel);
        _attentionTcDkDv = Load<ArrayView<uint>, ArrayView<uint>, ArrayView<U4>, ArrayView<float>, ArrayView<float>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionArgs>(AttentionTcDkDvKernel);
    }

    /// <summary>
    /// Whether bf16 attention at head dimension 64 runs on the tensor-core kernels (the default) or, false, on the
    /// fp32 kernels like every other head dimension. Initialised from HFT_BF16_ATTENTION ("fp32" turns it off: a
    /// workaround should the tensor-core kernels misbehave on a card). Set it before creating models: a model
    /// decides at creation whether it keeps its attention operands in bf16 (see <see cref="TakesBf16AttentionInputs"/>).
    /// </summary>
    public bool TensorCoreAttention { get; set; } = DefaultTensorCoreAttention;

    /// <summary>HFT_BF16_ATTENTION as a setting: anything but "fp32" keeps the tensor-core attention on.</summary>
    public static bool DefaultTensorCoreAttention =>
        !string.Equals(Environment.GetEnvironmentVariable("HFT_BF16_ATTENTION")?.Trim(), "fp32", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether a bf16 attention of this head dimension runs on the tensor-core kernels.</summary>
    internal bool UsesTensorCoreAttention(bool bf16, int headDim) => TensorCoreAttention && bf16 && headDim == TcHeadDim;

    /// <inheritdoc/>
    /// <remarks>Head dimension 64, unless <see cref="TensorCoreAttention"/> is off: the tensor-core kernels read bf16 operands directly.</remarks>
    public override bool TakesBf16AttentionInputs(int headDim) => TensorCoreAttention && headDim == TcHeadDim;

    /// <summary>Launch configuration of the tensor-core attention (groups of TcGroup threads): elsewhere than on CUDA with the emulation's scratch.</summary>
    private KernelConfig TcConfig(long units)
    {
        int groups = TileGroups(units);
        _acc.Bind();
        if (_acc.AcceleratorType == AcceleratorType.Cuda) return new KernelConfig(groups, TcGroup);
        return new KernelConfig(new Index1D(groups), new Index1D(TcGroup), SharedMemoryConfig.RequestDynamic<uint>(TcWarps * TcEmuWarp));
    }

    /// <summary>
    /// The bf16 operands of the tensor-core kernels as 16-byte chunks: a BF16 tensor that starts on 16 bytes as it is,
    /// another BF16 one copied, and an F32 one rounded, into the scratch buffer after its first
    /// <paramref name="reserved"/> floats (which the caller uses; returned as <paramref name="head"/>). Every
    /// operand's region starts on 16 bytes.
    /// </summary>
    private ArrayView<U4>[] TcOperands(long reserved, out ArrayView<float> head, params Tensor[] operands)
    {
        static long Chunked(long floats) => (floats + 3) / 4 * 4;
        long floats = Chunked(reserved);
        foreach (var t in operands)
            if (t.Type == DType.F32 || t.ByteOffset % 16 != 0) floats += Chunked((t.Count + 1) / 2);
        var scratch = Scratch(floats);
        head = scratch.SubView(0, Math.Max(reserved, 1));
        var views = new ArrayView<U4>[operands.Length];
        long offset = Chunked(reserved);
        for (int i = 0; i < operands.Length; i++)
        {
            var t = operands[i];
            if (t.Type == DType.BF16 && t.ByteOffset % 16 == 0)
            {
                views[i] = Arena(t).Bytes(t).SubView(0, t.Bytes / 16 * 16).Cast<U4>();
                continue;
            }
            long chunked = Chunked((t.Count + 1) / 2);
            var region = scratch.SubView(offset, chunked);
            if (t.Type == DType.BF16) Arena(t).Bytes(t).CopyTo(_acc.DefaultStream, region.Cast<byte>().SubView(0, t.Bytes));
            else _toBf16(Config(StreamGroups(t.Count)), region.Cast<ushort>().SubView(0, t.Count), F(t));
            views[i] = region.Cast<U4>();
            offset += chunked;
        }
        return views;
    }

    private void AttentionTcForward(Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, float scale)
    {
        var ops = TcOperands(0, out _, q, k, v);
        var a = Args(batch, seq, heads, kvHeads, TcHeadDim, scale, !docStart.IsEmpty, (TcRows, TcTile));
        bool outBf16 = o.Type == DType.BF16;
        a.OutBf16 = outBf16 ? 1 : 0;
        var o16 = _dummy.View.BaseView.Cast<uint>();
        if (outBf16)
        {
            o16 = PairView(o, out bool aligned);
            if (!aligned) throw new ArgumentException($"BF16 attention output '{o.Name}' must start on a 4-byte boundary", nameof(o));
        }
        long units = (long)batch * heads * ((seq + TcRows - 1) / TcRows);
        _attentionTcForward(TcConfig(units), outBf16 ? _dummy.View.BaseView.Cast<float>() : F(o), o16, F(lse), ops[0], ops[1], ops[2], IOrDummy(docStart), a);
    }

    /// <inheritdoc/>
    /// <remarks>On the tensor-core kernels (head dimension 64, <see cref="TensorCoreAttention"/> on): dQ and dK/dV rotate their rows back and round them as they store them.</remarks>
    public override bool FusesAttentionBackwardRope(int headDim) => TensorCoreAttention && headDim == TcHeadDim;

    /// <inheritdoc/>
    protected override void AttentionBackwardRopeCore(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim, float scale, Tensor positions, Tensor cos, Tensor sin, int maxPositions) =>
        AttentionTcBackward(dq, dk, dv, dO, o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, scale, positions, cos, sin, maxPositions);

    /// <summary>
    /// The tensor-core backward pass. dq, dk, dv are F32, or BF16 (each starting on 4 bytes); with maxPositions &gt; 0
    /// the dQ and dK/dV kernels rotate dq and dk back by the positions' angles (as RopeCore with inverse: true) as they
    /// store them.
    /// </summary>
    private void AttentionTcBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, float scale, Tensor positions = default, Tensor cos = default, Tensor sin = default, int maxPositions = 0)
    {
        long rows = (long)batch * seq * heads;
        var ops = TcOperands(rows, out var delta, dO, o, q, k, v);
        var da = Args(batch, seq, heads, kvHeads, TcHeadDim, scale, !docStart.IsEmpty, (1, 1));
        _attentionTcDelta(Config(TileGroups((rows + WarpsPerGroup - 1) / WarpsPerGroup)), delta, ops[0], ops[1], da);
        var aq = Args(batch, seq, heads, kvHeads, TcHeadDim, scale, !docStart.IsEmpty, (TcRows, TcTile));
        aq.OutBf16 = dq.Type == DType.BF16 ? 1 : 0;
        aq.RopeMax = maxPositions;
        var (pos, c, s) = maxPositions > 0 ? (I(positions), F(cos), F(sin)) : (IOrDummy(default), FOrDummy(default), FOrDummy(default));
        long unitsQ = (long)batch * heads * ((seq + TcRows - 1) / TcRows);
        _attentionTcDq(TcConfig(unitsQ), GradientWords(dq), ops[0], F(lse), delta, ops[2], ops[3], ops[4], IOrDummy(docStart), pos, c, s, aq);
        var ak = Args(batch, seq, heads, kvHeads, TcHeadDim, scale, !docStart.IsEmpty, (TcTile, TcRows));
        ak.OutBf16 = aq.OutBf16;
        ak.RopeMax = maxPositions;
        long unitsK = (long)batch * kvHeads * ((seq + TcRows - 1) / TcRows);
        _attentionTcDkDv(TcConfig(unitsK), GradientWords(dk), GradientWords(dv), ops[0], F(lse), delta, ops[2], ops[3], ops[4], IOrDummy(docStart), pos, c, s, ak);
    }

    /// <summary>A gradient output of the backward kernels as 4-byte words: one per float (F32), one per bf16 pair (BF16, starting on 4 bytes).</summary>
    private ArrayView<uint> GradientWords(Tensor t)
    {
        if (t.Type == DType.F32) return F(t).Cast<uint>();
        var pairs = PairView(t, out bool aligned);
        if (!aligned) throw new ArgumentException($"BF16 attention gradient '{t.Name}' must start on a 4-byte boundary", t.Name);
        return pairs;
    }

    // ------------------------------------------------------------------ fragments and tiles

    /// <summary>
    /// bf16(lo) in the low half, bf16(hi) in the high half (nearest even): one <c>cvt.rn.bf16x2.f32</c> on CUDA, the
    /// bit rounding of <see cref="RoundToBf16"/> elsewhere (the same result for every non-NaN value).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint PackBf16(float lo, float hi)
    {
        switch (Accelerator.CurrentType)
        {
            case AcceleratorType.Cuda:
                Ref<uint> d = 0u;
                Input<float> a = hi, b = lo;
                CudaAsm.EmitRef("cvt.rn.bf16x2.f32 %0, %1, %2;", ref d, ref a, ref b);
                return d.Value;
            case AcceleratorType.CPU:
            case AcceleratorType.OpenCL:
            default:
                return RoundToBf16(lo) | (uint)RoundToBf16(hi) << 16;
        }
    }

    /// <summary>
    /// Elements (row, d) and (row, d + 1), d even, of a row-major bf16 matrix seen as uint pairs (element (row, d) at
    /// pair (baseIdx + row·ld + d) / 2; baseIdx and ld even); zero for row ≥ rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint RowPair(ArrayView<uint> x, long baseIdx, int ld, int row, int d, int rows) =>
        row < rows ? x[(baseIdx + (long)row * ld + d) >> 1] : 0u;

    /// <summary>
    /// The A fragments of rows r, r + 8 (r = the warp's first row + lane/4) of a bf16 matrix with rows of head
    /// dimension 64 (see <see cref="RowPair"/>); zero for rows ≥ rows. t = lane mod 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static A4 LoadRowsA(ArrayView<uint> x, long baseIdx, int ld, int r, int rows, int t)
    {
        A4 f;
        f.K0 = RowsA(x, baseIdx, ld, r, rows, 2 * t);
        f.K1 = RowsA(x, baseIdx, ld, r, rows, 2 * t + 16);
        f.K2 = RowsA(x, baseIdx, ld, r, rows, 2 * t + 32);
        f.K3 = RowsA(x, baseIdx, ld, r, rows, 2 * t + 48);
        return f;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static AFrag RowsA(ArrayView<uint> x, long baseIdx, int ld, int r, int rows, int d)
    {
        AFrag f;
        f.A0 = RowPair(x, baseIdx, ld, r, d, rows);
        f.A1 = RowPair(x, baseIdx, ld, r + 8, d, rows);
        f.A2 = RowPair(x, baseIdx, ld, r, d + 8, rows);
        f.A3 = RowPair(x, baseIdx, ld, r + 8, d + 8, rows);
        return f;
    }

    /// <summary>
    /// A thread's share of a 64-row tile of a row-major bf16 matrix with rows of head dimension 64, as loaded by
    /// <see cref="LoadTcTile"/>: the 16-byte chunks 2w and 2w + 1 (dimensions 16w .. 16w + 15, one k16 step; w = warp)
    /// of the adjacent rows 2p and 2p + 1 (p = lane), so that the same registers fill both the tile ([row][d pair],
    /// <see cref="StoreTileRows"/>) and its transpose ([d][row pair], <see cref="StoreTileCols"/>).
    /// </summary>
    internal struct TileRegs
    {
        /// <summary>Chunk 2w of rows 2p (E0) and 2p + 1 (O0); chunk 2w + 1 of the same rows (E1, O1).</summary>
        public U4 E0, O0, E1, O1;

        /// <summary>Whether row 2p (EvenIn) and row 2p + 1 (OddIn) lie inside the matrix (1) or past its end (0: stored as zeros).</summary>
        public int EvenIn, OddIn;
    }

    /// <summary>
    /// This thread's chunks of rows r0 .. r0 + 63 of x (bf16, 16-byte chunks; element (row, d) at baseIdx + row·ld + d,
    /// baseIdx and ld multiples of 8); rows ≥ rows are stored as zeros. The four loads are issued together, with no
    /// branch between them (a row past the end reads the last row), so that their latencies overlap, and nothing
    /// writes their registers until they are stored (<see cref="InRows"/>): zeroing them here, after the loads, made
    /// the warp wait for the loads on the spot (a write to a register a load has yet to fill waits for the load),
    /// and the prefetch of the next tile hid nothing.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TileRegs LoadTcTile(ArrayView<U4> x, long baseIdx, int ld, int r0, int rows, int tid)
    {
        int c = 2 * (tid >> 5), r = r0 + 2 * (tid & 31), last = rows - 1;
        long even = (baseIdx + (long)DeviceReduce.Min(r, last) * ld) >> 3, odd = (baseIdx + (long)DeviceReduce.Min(r + 1, last) * ld) >> 3;
        TileRegs t;
        t.E0 = x[even + c];
        t.O0 = x[odd + c];
        t.E1 = x[even + c + 1];
        t.O1 = x[odd + c + 1];
        t.EvenIn = r <= last ? 1 : 0;
        t.OddIn = r + 1 <= last ? 1 : 0;
        return t;
    }

    /// <summary>The tile's chunks with those of rows past the end zeroed: where it is stored, once its loads have arrived.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TileRegs InRows(TileRegs t)
    {
        if (t.EvenIn == 0) { t.E0 = default; t.E1 = default; }
        if (t.OddIn == 0) { t.O0 = default; t.O1 = default; }
        return t;
    }

    /// <summary>
    /// Stores a tile's registers into the shared tile s as [row][d pair] (rows of <see cref="TcLd"/> uints), the 8
    /// pairs of each k16 step interleaved as 0, 4, 1, 5, 2, 6, 3, 7 (<see cref="Interleaved"/>), so that a lane's two
    /// B registers (pairs t and t + 4) are one 8-byte load: four 16-byte stores.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTileRows(ArrayView<U4> s, TileRegs t, int tid)
    {
        const int row = TcLd / 4;
        t = InRows(t);
        int even = 2 * (tid & 31) * row + 2 * (tid >> 5);
        s[even] = ChunkOf(t.E0.X, t.E1.X, t.E0.Y, t.E1.Y);
        s[even + 1] = ChunkOf(t.E0.Z, t.E1.Z, t.E0.W, t.E1.W);
        s[even + row] = ChunkOf(t.O0.X, t.O1.X, t.O0.Y, t.O1.Y);
        s[even + row + 1] = ChunkOf(t.O0.Z, t.O1.Z, t.O0.W, t.O1.W);
    }

    /// <summary>A 16-byte chunk of the four pairs x, y, z, w, in that order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U4 ChunkOf(uint x, uint y, uint z, uint w)
    {
        U4 u;
        u.X = x; u.Y = y; u.Z = z; u.W = w;
        return u;
    }

    /// <summary>Where pair j of a k16 step's 8 sits in the shared layout: 0, 4, 1, 5, 2, 6, 3, 7 → 0 .. 7 (j within a group of 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Interleaved(int j) => (j & ~7) | ((j & 3) << 1) | ((j >> 2) & 1);

    /// <summary>
    /// Stores a tile's registers transposed into the shared tile s as [d][row pair] (rows 2p, 2p + 1 at one d, the
    /// even row in the low half; the row pairs of each k16 step interleaved as in <see cref="StoreTileRows"/>):
    /// sixteen 4-byte stores. A warp writes one dimension for its 32 row pairs at a time: 32 uints, one per bank.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTileCols(ArrayView<U4> s4, TileRegs t, int tid)
    {
        var s = s4.Cast<uint>();
        int p = Interleaved(tid & 31), d0 = 16 * (tid >> 5);
        t = InRows(t);
        StoreChunkCols(s, t.E0, t.O0, d0 * TcLd + p);
        StoreChunkCols(s, t.E1, t.O1, (d0 + 8) * TcLd + p);
    }

    /// <summary>The 8 dimensions of one chunk of rows 2p (even) and 2p + 1 (odd) as row pairs, TcLd uints apart from o.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreChunkCols(ArrayView<uint> s, U4 even, U4 odd, int o)
    {
        s[o] = PairLo(even.X, odd.X);
        s[o + TcLd] = PairHi(even.X, odd.X);
        s[o + 2 * TcLd] = PairLo(even.Y, odd.Y);
        s[o + 3 * TcLd] = PairHi(even.Y, odd.Y);
        s[o + 4 * TcLd] = PairLo(even.Z, odd.Z);
        s[o + 5 * TcLd] = PairHi(even.Z, odd.Z);
        s[o + 6 * TcLd] = PairLo(even.W, odd.W);
        s[o + 7 * TcLd] = PairHi(even.W, odd.W);
    }

    /// <summary>
    /// c + A·B for the warp's 16 × 64 A block (registers) and the 64 × 64 shared tile s seen as B[k][n] = s[n][k]:
    /// 8 n8 column fragments × 4 k16 steps. frag = (lane/4)·TcLd + 2·(lane mod 4) (plus the tile's offset).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static C8 Product(C8 c, A4 a, ArrayView<uint> s, int frag, int warp, int lane)
    {
        // One view at the lane's fragment and constant offsets from it: ptxas then folds them into the shared loads'
        // immediates (with an index register per load it kept 64 of them live and an address instruction per load).
        var f = s.Cast<U2>().SubView(frag >> 1);
        c.J0 = Dot4(c.J0, a, f, 0, warp, lane);
        c.J1 = Dot4(c.J1, a, f, 4 * TcLd, warp, lane);
        c.J2 = Dot4(c.J2, a, f, 8 * TcLd, warp, lane);
        c.J3 = Dot4(c.J3, a, f, 12 * TcLd, warp, lane);
        c.J4 = Dot4(c.J4, a, f, 16 * TcLd, warp, lane);
        c.J5 = Dot4(c.J5, a, f, 20 * TcLd, warp, lane);
        c.J6 = Dot4(c.J6, a, f, 24 * TcLd, warp, lane);
        c.J7 = Dot4(c.J7, a, f, 28 * TcLd, warp, lane);
        return c;
    }

    /// <summary>
    /// One n8 column fragment over k = 64: four mma, each lane's B registers (pairs t and t + 4 of the k16 step,
    /// interleaved side by side) one 8-byte load at o + 4·kk (in uint pairs).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CFrag Dot4(CFrag c, A4 a, ArrayView<U2> s, int o, int warp, int lane)
    {
        c = MmaTc(c, a.K0, ReadB2(s, o), warp, lane);
        c = MmaTc(c, a.K1, ReadB2(s, o + 4), warp, lane);
        c = MmaTc(c, a.K2, ReadB2(s, o + 8), warp, lane);
        return MmaTc(c, a.K3, ReadB2(s, o + 12), warp, lane);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static BFrag ReadB2(ArrayView<U2> s, int o)
    {
        U2 v = s[o];
        BFrag f;
        f.B0 = v.X;
        f.B1 = v.Y;
        return f;
    }

    /// <summary>One mma: the tensor-core instruction on CUDA, its emulation elsewhere (warp-collective there).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CFrag MmaTc(CFrag c, AFrag a, BFrag b, int warp, int lane)
    {
        // A switch on the type, not `if (CudaAsm.IsSupported)`: see KStep in IlgpuBackend.MatMulBf16.cs.
        switch (Accelerator.CurrentType)
        {
            case AcceleratorType.Cuda:
                return Mma(c, a, b);
            case AcceleratorType.CPU:
            case AcceleratorType.OpenCL:
            default:
                var x = SharedMemory.GetDynamic<uint>().SubView(warp * TcEmuWarp, TcEmuWarp);
                x[lane] = a.A0; x[lane + WarpSize] = a.A1; x[lane + 2 * WarpSize] = a.A2; x[lane + 3 * WarpSize] = a.A3;
                x[lane + 4 * WarpSize] = b.B0; x[lane + 5 * WarpSize] = b.B1;
                Warp.Barrier();
                c = MmaEmulated(c, x, 0, 4 * WarpSize, lane);
                Warp.Barrier();
                return c;
        }
    }

    /// <summary>The C fragments of a 16 × 64 block as the A fragments of the next product (bf16): n8 pairs (2kk, 2kk+1) → k16 step kk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static A4 ToA(C8 c)
    {
        A4 a;
        a.K0 = ToA(c.J0, c.J1);
        a.K1 = ToA(c.J2, c.J3);
        a.K2 = ToA(c.J4, c.J5);
        a.K3 = ToA(c.J6, c.J7);
        return a;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static AFrag ToA(CFrag lo, CFrag hi)
    {
        AFrag a;
        a.A0 = PackBf16(lo.X0, lo.X1);
        a.A1 = PackBf16(lo.X2, lo.X3);
        a.A2 = PackBf16(hi.X0, hi.X1);
        a.A3 = PackBf16(hi.X2, hi.X3);
        return a;
    }

    /// <summary>
    /// 2^x: one <c>ex2.approx.ftz.f32</c> on CUDA (ILGPU's <c>ex2.approx.f32</c> without ftz made ptxas add a fix-up
    /// for subnormals, three more instructions per call; probabilities under 2^−126 become 0), XMath.Exp2 elsewhere.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float TcExp2(float x)
    {
        switch (Accelerator.CurrentType)
        {
            case AcceleratorType.Cuda:
                Ref<float> d = 0f;
                Input<float> a = x;
                CudaAsm.EmitRef("ex2.approx.ftz.f32 %0, %1;", ref d, ref a);
                return d.Value;
            case AcceleratorType.CPU:
            case AcceleratorType.OpenCL:
            default:
                return XMath.Exp2(x);
        }
    }

    /// <summary>
    /// max(a, b), a NaN in either propagating: one <c>max.NaN.f32</c> on CUDA (DeviceReduce.Max's compares and
    /// select took three instructions), DeviceReduce.Max elsewhere.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float TcMax(float a, float b)
    {
        switch (Accelerator.CurrentType)
        {
            case AcceleratorType.Cuda:
                Ref<float> d = 0f;
                Input<float> x = a, y = b;
                CudaAsm.EmitRef("max.NaN.f32 %0, %1, %2;", ref d, ref x, ref y);
                return d.Value;
            case AcceleratorType.CPU:
            case AcceleratorType.OpenCL:
            default:
                return DeviceReduce.Max(a, b);
        }
    }

    /// <summary>Maximum over the quad (the four lanes holding one row of a C fragment).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float QuadMax(float v)
    {
        v = TcMax(v, Warp.ShuffleXor(v, 1));
        return TcMax(v, Warp.ShuffleXor(v, 2));
    }

    /// <summary>Sum over the quad.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float QuadSum(float v)
    {
        v += Warp.ShuffleXor(v, 1);
        return v + Warp.ShuffleXor(v, 2);
    }

    /// <summary>Maximum of a lane's values of the upper row (X0, X1) or the lower row (X2, X3) of the block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowMax(C8 c, bool lower) => TcMax(
        TcMax(TcMax(FragMax(c.J0, lower), FragMax(c.J1, lower)), TcMax(FragMax(c.J2, lower), FragMax(c.J3, lower))),
        TcMax(TcMax(FragMax(c.J4, lower), FragMax(c.J5, lower)), TcMax(FragMax(c.J6, lower), FragMax(c.J7, lower))));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FragMax(CFrag f, bool lower) => lower ? TcMax(f.X2, f.X3) : TcMax(f.X0, f.X1);

    /// <summary>Sum of a lane's values of the upper or lower row of the block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowSum(C8 c, bool lower) =>
        FragSum(c.J0, lower) + FragSum(c.J1, lower) + FragSum(c.J2, lower) + FragSum(c.J3, lower)
        + FragSum(c.J4, lower) + FragSum(c.J5, lower) + FragSum(c.J6, lower) + FragSum(c.J7, lower);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FragSum(CFrag f, bool lower) => lower ? f.X2 + f.X3 : f.X0 + f.X1;

    /// <summary>An element-wise operation on C fragments: x, y the fragments of n8 column col (0, 8, .. 56) of two blocks.</summary>
    internal interface IFragMap
    {
        CFrag Apply(CFrag x, CFrag y, int col);
    }

    /// <summary>op applied to the eight column fragments of x (and y, for binary operations).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static C8 Map<T>(C8 x, C8 y, T op) where T : struct, IFragMap
    {
        x.J0 = op.Apply(x.J0, y.J0, 0); x.J1 = op.Apply(x.J1, y.J1, 8); x.J2 = op.Apply(x.J2, y.J2, 16); x.J3 = op.Apply(x.J3, y.J3, 24);
        x.J4 = op.Apply(x.J4, y.J4, 32); x.J5 = op.Apply(x.J5, y.J5, 40); x.J6 = op.Apply(x.J6, y.J6, 48); x.J7 = op.Apply(x.J7, y.J7, 56);
        return x;
    }

    /// <summary>Upper row (X0, X1) times Su, lower row (X2, X3) times Sl.</summary>
    internal struct RowScale : IFragMap
    {
        public float Su, Sl;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            x.X0 *= Su; x.X1 *= Su; x.X2 *= Sl; x.X3 *= Sl;
            return x;
        }
    }

    /// <summary>2^(x − Uu) in the upper row, 2^(x − Ul) in the lower one.</summary>
    internal struct RowExp2 : IFragMap
    {
        public float Uu, Ul;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            x.X0 = TcExp2(x.X0 - Uu); x.X1 = TcExp2(x.X1 - Uu);
            x.X2 = TcExp2(x.X2 - Ul); x.X3 = TcExp2(x.X3 - Ul);
            return x;
        }
    }

    /// <summary>2^(x·S − Uu) in the upper row, 2^(x·S − Ul) in the lower one (RowExp2 of scores that need no masking).</summary>
    internal struct RowScaledExp2 : IFragMap
    {
        public float S, Uu, Ul;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            x.X0 = TcExp2(x.X0 * S - Uu); x.X1 = TcExp2(x.X1 * S - Uu);
            x.X2 = TcExp2(x.X2 * S - Ul); x.X3 = TcExp2(x.X3 * S - Ul);
            return x;
        }
    }

    /// <summary>
    /// Scores with queries as rows (Ru, Rl = Ru + 8 with first keys Fu, Fl) and keys as columns (Key + col, + 1):
    /// x·Sl2 where the query sees the key, −∞ elsewhere.
    /// </summary>
    internal struct RowScores : IFragMap
    {
        public float Sl2;
        public int Key, Ru, Fu, Rl, Fl, Seq;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            int j = Key + col;
            x.X0 = Sees(Ru, j, Fu, Seq) ? x.X0 * Sl2 : float.NegativeInfinity;
            x.X1 = Sees(Ru, j + 1, Fu, Seq) ? x.X1 * Sl2 : float.NegativeInfinity;
            x.X2 = Sees(Rl, j, Fl, Seq) ? x.X2 * Sl2 : float.NegativeInfinity;
            x.X3 = Sees(Rl, j + 1, Fl, Seq) ? x.X3 * Sl2 : float.NegativeInfinity;
            return x;
        }
    }

    /// <summary>dS = P∘(dP − D) with queries as rows: x = P, y = dP, D = Du (upper row), Dl (lower row).</summary>
    internal struct RowDs : IFragMap
    {
        public float Du, Dl;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            x.X0 *= y.X0 - Du; x.X1 *= y.X1 - Du; x.X2 *= y.X2 - Dl; x.X3 *= y.X3 - Dl;
            return x;
        }
    }

    /// <summary>
    /// Probabilities with keys as rows (Ku, Kl = Ku + 8) and queries as columns (Q0 + C0 + col, + 1, whose
    /// log2-sum-exp and first key (int bits) are at Stats[C0 + col ..] and Stats[2·TcTile + C0 + col ..]): 2^(x·Sl2 − lse2) where the query
    /// sees the key, 0 elsewhere.
    /// </summary>
    internal struct ColProb : IFragMap
    {
        public float Sl2;
        public int Ku, Kl, Q0, C0, Seq;
        public ArrayView<float> Stats;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            int c = C0 + col, t = Q0 + c, f0 = (int)Interop.FloatAsInt(Stats[2 * TcTile + c]), f1 = (int)Interop.FloatAsInt(Stats[2 * TcTile + c + 1]);
            float l0 = Stats[c], l1 = Stats[c + 1];
            x.X0 = Sees(t, Ku, f0, Seq) ? TcExp2(x.X0 * Sl2 - l0) : 0f;
            x.X1 = Sees(t + 1, Ku, f1, Seq) ? TcExp2(x.X1 * Sl2 - l1) : 0f;
            x.X2 = Sees(t, Kl, f0, Seq) ? TcExp2(x.X2 * Sl2 - l0) : 0f;
            x.X3 = Sees(t + 1, Kl, f1, Seq) ? TcExp2(x.X3 * Sl2 - l1) : 0f;
            return x;
        }
    }

    /// <summary>
    /// <see cref="ColProb"/> where every query of the tile sees every key of the warp: 2^(x·Sl2 − lse2), lse2 of the
    /// column's query at Stats[C0 + col ..].
    /// </summary>
    internal struct ColProbAll : IFragMap
    {
        public float Sl2;
        public int C0;
        public ArrayView<float> Stats;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            int c = C0 + col;
            float l0 = Stats[c], l1 = Stats[c + 1];
            x.X0 = TcExp2(x.X0 * Sl2 - l0);
            x.X1 = TcExp2(x.X1 * Sl2 - l1);
            x.X2 = TcExp2(x.X2 * Sl2 - l0);
            x.X3 = TcExp2(x.X3 * Sl2 - l1);
            return x;
        }
    }

    /// <summary>dSᵀ = Pᵀ∘(dPᵀ − D) with keys as rows: x = Pᵀ, y = dPᵀ, D of the column's query at Stats[TcTile + C0 + col ..].</summary>
    internal struct ColDs : IFragMap
    {
        public int C0;
        public ArrayView<float> Stats;

        public readonly CFrag Apply(CFrag x, CFrag y, int col)
        {
            int c = TcTile + C0 + col;
            float d0 = Stats[c], d1 = Stats[c + 1];
            x.X0 *= y.X0 - d0; x.X1 *= y.X1 - d1; x.X2 *= y.X2 - d0; x.X3 *= y.X3 - d1;
            return x;
        }
    }

    /// <summary>
    /// Writes a lane's share of a warp's 16 × 64 block, the upper row times su and the lower one times sl: rows r, r + 8
    /// (where below rows), columns 8j + 2t, 8j + 2t + 1 of x[baseIdx + row·ld ..] in fp32, or, with bf16 != 0, of
    /// the bf16 matrix x16 (as uint pairs; see <see cref="RowPair"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRows(ArrayView<float> x, ArrayView<uint> x16, int bf16, long baseIdx, int ld, int r, int rows, int t, C8 c, float su, float sl)
    {
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t, c.J0, su, sl);
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t + 8, c.J1, su, sl);
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t + 16, c.J2, su, sl);
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t + 24, c.J3, su, sl);
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t + 32, c.J4, su, sl);
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t + 40, c.J5, su, sl);
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t + 48, c.J6, su, sl);
        StoreFragRows(x, x16, bf16, baseIdx, ld, r, rows, 2 * t + 56, c.J7, su, sl);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFragRows(ArrayView<float> x, ArrayView<uint> x16, int bf16, long baseIdx, int ld, int r, int rows, int d, CFrag f, float su, float sl)
    {
        if (r < rows) StorePair(x, x16, bf16, baseIdx + (long)r * ld + d, f.X0 * su, f.X1 * su);
        if (r + 8 < rows) StorePair(x, x16, bf16, baseIdx + (long)(r + 8) * ld + d, f.X2 * sl, f.X3 * sl);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StorePair(ArrayView<float> x, ArrayView<uint> x16, int bf16, long i, float lo, float hi)
    {
        if (bf16 != 0)
        {
            x16[i >> 1] = PackBf16(lo, hi);
        }
        else
        {
            x[i] = lo;
            x[i + 1] = hi;
        }
    }

    /// <summary>
    /// One unit of the forward and dQ kernels, 64 queries of one (sequence B, head H): its rows T0 .. TEnd − 1, the
    /// warp's first row W0, this lane's rows Ru and Rl = Ru + 8, where the unit's queries (QBase) and keys (KBase)
    /// start, its statistics' offset (Stat, in lse and D), the first key tile any of its queries sees (KFirst), and
    /// the score masking of this lane's rows.
    /// </summary>
    internal struct QueryUnit
    {
        public int B, H, T0, TEnd, W0, Ru, Rl, KFirst;
        public long QBase, KBase, Stat;
        public RowScores Scores;

        /// <summary>Whether some query of the warp sees a key of the tile at j0 (warp-uniform).</summary>
        public readonly bool WarpSees(int j0, int seq) => W0 < seq && j0 <= W0 + 15;

        /// <summary>
        /// Whether every query of the warp sees every key of the tile at j0: no document starts, the tile's last key
        /// at or before the warp's first query, the warp's last query inside the sequence (warp-uniform).
        /// </summary>
        public readonly bool WarpSeesAll(int j0, int seq, int hasDoc) => hasDoc == 0 && j0 + TcTile - 1 <= W0 && W0 + 15 < seq;
    }

    /// <summary>Unit u of <paramref name="qTiles"/> query tiles per (sequence, head); the last tiles (the most keys) of every sequence and head first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static QueryUnit QueryUnitOf(int u, int qTiles, int warp, int lane, ArrayView<int> doc, AttentionArgs a)
    {
        int bhs = a.Batch * a.Heads, qt = qTiles - 1 - u / bhs, bh = u % bhs, seq = a.Seq;
        QueryUnit q;
        q.B = bh / a.Heads;
        q.H = bh - q.B * a.Heads;
        q.T0 = qt * TcRows;
        q.TEnd = DeviceReduce.Min(seq, q.T0 + TcRows);
        q.W0 = q.T0 + 16 * warp;
        q.Ru = q.W0 + (lane >> 2);
        q.Rl = q.Ru + 8;
        q.KFirst = a.HasDoc != 0 ? MinFirstKey(doc, a, q.B, q.T0, q.TEnd) / TcTile * TcTile : 0;
        q.QBase = (long)q.B * seq * a.Heads * TcHeadDim + q.H * TcHeadDim;
        q.KBase = (long)q.B * seq * a.KvHeads * TcHeadDim + q.H / (a.Heads / a.KvHeads) * TcHeadDim;
        q.Stat = ((long)q.B * a.Heads + q.H) * seq;
        q.Scores = new RowScores
        {
            Sl2 = a.Scale * Log2E, Ru = q.Ru, Fu = FirstKeyOrNone(doc, a, q.B, q.Ru), Rl = q.Rl, Fl = FirstKeyOrNone(doc, a, q.B, q.Rl), Seq = seq,
        };
        return q;
    }

    /// <summary>Whether query `query` (first visible key `first`) sees key `key`, in a sequence of `seq` tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Sees(int query, int key, int first, int seq) => query < seq && key <= query && key >= first;

    /// <summary>The first key of query t, or int.MaxValue (nothing visible) past the sequence.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FirstKeyOrNone(ArrayView<int> doc, AttentionArgs a, int b, int t) =>
        t < a.Seq ? FirstKey(doc, a, b, t) : int.MaxValue;
}
