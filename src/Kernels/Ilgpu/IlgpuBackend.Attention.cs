using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Causal grouped-query attention with optional document starts, flash-attention style: nothing of size seq × seq
/// reaches global memory. Tiles of BQ queries and BK keys live in shared memory (rows padded by one float so
/// column-wise reads do not conflict); tile sizes are the largest that fit <see cref="SharedMemoryBudget"/> for the
/// head dimension. Forward: one group per (sequence, head, query tile) walks the visible key tiles with an online
/// softmax and stores the output and each query's log-sum-exp. Backward: D = rowsum(dO∘O) into scratch, then two
/// race-free kernels that recompute the probabilities from the log-sum-exp: dQ with one group per query tile
/// (walking key tiles), dK and dV with one group per (sequence, kv head, key tile) walking the query tiles of every
/// head of its group. Document starts outside [0, t] are clamped (the CPU back-end rejects them).
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionArgs> _attentionForward = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionArgs> _attentionDelta = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionArgs> _attentionDq = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionArgs> _attentionDkDv = null!;

    /// <summary>
    /// Shape and tiling of an attention launch; for the tensor-core kernels also whether their outputs are bf16
    /// (OutBf16) and the RoPE table's rows by which dq and dk are rotated back (RopeMax; 0: no rotation).
    /// </summary>
    internal struct AttentionArgs
    {
        public int Batch, Seq, Heads, KvHeads, HeadDim, BQ, BK, HasDoc, OutBf16, RopeMax;
        public float Scale;
    }

    private static readonly (int Q, int K)[] AttentionTileCandidates = [(64, 64), (64, 32), (32, 32), (32, 16), (16, 16), (16, 8), (8, 8)];

    private void LoadAttention()
    {
        _attentionForward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionArgs>(AttentionForwardKernel);
        _attentionDelta = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionArgs>(AttentionDeltaKernel);
        _attentionDq = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionArgs>(AttentionDqKernel);
        _attentionDkDv = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionArgs>(AttentionDkDvKernel);
    }

    /// <summary>Shared floats of the forward kernel.</summary>
    internal static int ForwardShared(int bq, int bk, int hd) => bq * (hd + 1) + bk * (hd + 1) + bk * hd + bq * (bk + 1) + bq * hd + 3 * bq;

    /// <summary>Shared floats of the dQ kernel.</summary>
    internal static int DqShared(int bq, int bk, int hd) => 2 * bq * (hd + 1) + 2 * bk * (hd + 1) + bq * (bk + 1) + bq * hd + 2 * bq;

    /// <summary>Shared floats of the dK/dV kernel.</summary>
    internal static int DkDvShared(int bq, int bk, int hd) => 2 * bk * (hd + 1) + 2 * bq * (hd + 1) + bq * (bk + 1) + 2 * bk * hd + 2 * bq;

    /// <summary>The largest tiles whose shared memory fits the budget for head dimension <paramref name="hd"/>.</summary>
    internal static (int Q, int K) AttentionTiles(int hd, Func<int, int, int, int> sharedFloats)
    {
        foreach (var (q, k) in AttentionTileCandidates)
            if (sharedFloats(q, k, hd) * sizeof(float) <= SharedMemoryBudget) return (q, k);
        throw new ArgumentException($"headDim {hd} is too large for the attention kernels (their tiles must fit {SharedMemoryBudget} bytes of shared memory)", "headDim");
    }

    private static AttentionArgs Args(int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool hasDoc, (int Q, int K) tiles) => new()
    {
        Batch = batch, Seq = seq, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, BQ = tiles.Q, BK = tiles.K,
        HasDoc = hasDoc ? 1 : 0, Scale = scale,
    };

    /// <inheritdoc/>
    protected override void AttentionForwardCore(Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16)
    {
        if (UsesTensorCoreAttention(bf16 || AnyBf16(o, q, k, v), headDim))
        {
            AttentionTcForward(o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, scale);
            return;
        }
        var tiles = AttentionTiles(headDim, ForwardShared);
        var a = Args(batch, seq, heads, kvHeads, headDim, scale, !docStart.IsEmpty, tiles);
        long units = (long)batch * heads * ((seq + tiles.Q - 1) / tiles.Q);
        _attentionForward(Config(TileGroups(units), ForwardShared(tiles.Q, tiles.K, headDim)),
            F(o), F(lse), F(q), F(k), F(v), IOrDummy(docStart), a);
    }

    /// <inheritdoc/>
    protected override void AttentionBackwardCore(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse,
        Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16)
    {
        if (UsesTensorCoreAttention(bf16 || AnyBf16(dO, o, q, k, v), headDim))
        {
            AttentionTcBackward(dq, dk, dv, dO, o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, scale);
            return;
        }
        long rows = (long)batch * seq * heads;
        var delta = Scratch(rows);
        var da = Args(batch, seq, heads, kvHeads, headDim, scale, !docStart.IsEmpty, (1, 1));
        _attentionDelta(Config(TileGroups((rows + WarpsPerGroup - 1) / WarpsPerGroup)), delta, F(dO), F(o), da);

        var tq = AttentionTiles(headDim, DqShared);
        var aq = Args(batch, seq, heads, kvHeads, headDim, scale, !docStart.IsEmpty, tq);
        long unitsQ = (long)batch * heads * ((seq + tq.Q - 1) / tq.Q);
        _attentionDq(Config(TileGroups(unitsQ), DqShared(tq.Q, tq.K, headDim)),
            F(dq), F(dO), F(lse), delta, F(q), F(k), F(v), IOrDummy(docStart), aq);

        var tk = AttentionTiles(headDim, DkDvShared);
        var ak = Args(batch, seq, heads, kvHeads, headDim, scale, !docStart.IsEmpty, tk);
        long unitsK = (long)batch * kvHeads * ((seq + tk.K - 1) / tk.K);
        _attentionDkDv(Config(TileGroups(unitsK), DkDvShared(tk.Q, tk.K, headDim)),
            F(dk), F(dv), F(dO), F(lse), delta, F(q), F(k), F(v), IOrDummy(docStart), ak);
    }

    private static bool AnyBf16(Tensor a, Tensor b, Tensor c, Tensor d, Tensor e = default) =>
        a.Type == DType.BF16 || b.Type == DType.BF16 || c.Type == DType.BF16 || d.Type == DType.BF16 || (!e.IsEmpty && e.Type == DType.BF16);

    /// <summary>
    /// Where the statistics (lse, D) of row w of a [batch·seq, heads] query layout live: (b·heads + h)·seq + t for
    /// w = (b·seq + t)·heads + h.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long StatIndex(long w, AttentionArgs a)
    {
        long bt = w / a.Heads;
        int h = (int)(w - bt * a.Heads);
        long b = bt / a.Seq;
        int t = (int)(bt - b * a.Seq);
        return (b * a.Heads + h) * a.Seq + t;
    }

    /// <summary>First key visible to query t of sequence b: docStart clamped to [0, t], or 0 without documents.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FirstKey(ArrayView<int> doc, AttentionArgs a, int b, int t)
    {
        if (a.HasDoc == 0) return 0;
        int d = doc[(long)b * a.Seq + t];
        return d < 0 ? 0 : d > t ? t : d;
    }

    /// <summary>The smallest first key over queries t0 .. tEnd − 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int MinFirstKey(ArrayView<int> doc, AttentionArgs a, int b, int t0, int tEnd)
    {
        int first = tEnd - 1;
        for (int t = t0; t < tEnd; t++) first = DeviceReduce.Min(first, FirstKey(doc, a, b, t));
        return first;
    }

    /// <summary>
    /// One key tile of the online softmax, after the scores of the tile are in sh[ssOff + r·sk + c] (−∞ where masked):
    /// per query row r &lt; bq, the running maximum (msOff) and sum (lsOff) absorb the tile, the scores become
    /// probabilities, alOff receives the factor that rescales the earlier output; then the output rows (osOff, bq × hd)
    /// are rescaled and add the probabilities times the tile's values (vsOff, bk × hd). Ends with a barrier.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void OnlineSoftmaxStep(ArrayView<float> sh, int tid, int bq, int bk, int hd, int sk, int ssOff, int msOff, int lsOff, int alOff, int osOff, int vsOff)
    {
        if (tid < bq)
        {
            int row = ssOff + tid * sk;
            float mOld = sh[msOff + tid], mx = mOld;
            for (int c = 0; c < bk; c++) mx = DeviceReduce.Max(mx, sh[row + c]);
            float alpha = 1f, sum = 0f;
            if (mx == float.NegativeInfinity)
            {
                for (int c = 0; c < bk; c++) sh[row + c] = 0f;
            }
            else
            {
                alpha = XMath.Exp(mOld - mx);
                for (int c = 0; c < bk; c++)
                {
                    float pv = XMath.Exp(sh[row + c] - mx);
                    sh[row + c] = pv;
                    sum += pv;
                }
            }
            sh[lsOff + tid] = sh[lsOff + tid] * alpha + sum;
            sh[msOff + tid] = mx;
            sh[alOff + tid] = alpha;
        }
        Group.Barrier();
        for (int e = tid; e < bq * hd; e += GroupSize)
        {
            int r = e / hd, d = e - r * hd, row = ssOff + r * sk;
            float acc = sh[osOff + e] * sh[alOff + r];
            for (int c = 0; c < bk; c++) acc += sh[row + c] * sh[vsOff + c * hd + d];
            sh[osOff + e] = acc;
        }
        Group.Barrier();
    }

    /// <summary>
    /// dst[c, d] += Σ_r s[r, c]·x[r, d] over a key tile (dst bk × hd at dstOff, s bq × bk with row stride sk at sOff,
    /// x bq rows of stride hdp at xOff), all in shared memory. Ends with a barrier.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTransposedProduct(ArrayView<float> sh, int tid, int bq, int bk, int hd, int hdp, int sk, int sOff, int xOff, int dstOff)
    {
        for (int e = tid; e < bk * hd; e += GroupSize)
        {
            int c = e / hd, d = e - c * hd;
            float acc = sh[dstOff + e];
            for (int r = 0; r < bq; r++) acc += sh[sOff + r * sk + c] * sh[xOff + r * hdp + d];
            sh[dstOff + e] = acc;
        }
        Group.Barrier();
    }

    /// <summary>Σ_d x[i + d]·y[j + d] over the head dimension (two shared rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowDot(ArrayView<float> x, int i, ArrayView<float> y, int j, int hd)
    {
        float s = 0f;
        for (int d = 0; d < hd; d++) s += x[i + d] * y[j + d];
        return s;
    }

    /// <summary>
    /// o and lse for one (sequence, head, query tile) per unit: online softmax over the visible key tiles.
    /// Shared: Q [BQ, hd+1], K [BK, hd+1], V [BK, hd], S [BQ, BK+1], O [BQ, hd], rescale, sum, max [BQ].
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionForwardKernel(ArrayView<float> o, ArrayView<float> lse, ArrayView<float> q, ArrayView<float> k,
        ArrayView<float> v, ArrayView<int> doc, AttentionArgs a)
    {
        var sh = SharedMemory.GetDynamic<float>();
        int hd = a.HeadDim, hdp = hd + 1, bq = a.BQ, bk = a.BK, sk = bk + 1, seq = a.Seq;
        int qsOff = 0, ksOff = qsOff + bq * hdp, vsOff = ksOff + bk * hdp, ssOff = vsOff + bk * hd, osOff = ssOff + bq * sk;
        int alOff = osOff + bq * hd, lsOff = alOff + bq, msOff = lsOff + bq;
        int tid = Group.IdxX, group = a.Heads / a.KvHeads, ldq = a.Heads * hd, ldk = a.KvHeads * hd;
        int qTiles = (seq + bq - 1) / bq, units = a.Batch * a.Heads * qTiles;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int qt = u % qTiles, bh = u / qTiles, b = bh / a.Heads, h = bh - b * a.Heads, g = h / group;
            int t0 = qt * bq, tEnd = DeviceReduce.Min(seq, t0 + bq);
            long qBase = (long)b * seq * ldq + h * hd, kBase = (long)b * seq * ldk + g * hd;
            for (int e = tid; e < bq * hd; e += GroupSize)
            {
                int r = e / hd, d = e - r * hd, t = t0 + r;
                sh[qsOff + r * hdp + d] = t < seq ? q[qBase + (long)t * ldq + d] : 0f;
                sh[osOff + e] = 0f;
            }
            if (tid < bq)
            {
                sh[msOff + tid] = float.NegativeInfinity;
                sh[lsOff + tid] = 0f;
            }
            int kFirst = MinFirstKey(doc, a, b, t0, tEnd);
            Group.Barrier();
            for (int j0 = kFirst / bk * bk; j0 < tEnd; j0 += bk)
            {
                for (int e = tid; e < bk * hd; e += GroupSize)
                {
                    int c = e / hd, d = e - c * hd, j = j0 + c;
                    bool ok = j < seq;
                    sh[ksOff + c * hdp + d] = ok ? k[kBase + (long)j * ldk + d] : 0f;
                    sh[vsOff + e] = ok ? v[kBase + (long)j * ldk + d] : 0f;
                }
                Group.Barrier();
                for (int e = tid; e < bq * bk; e += GroupSize)
                {
                    int r = e / bk, c = e - r * bk, t = t0 + r, j = j0 + c;
                    float s = float.NegativeInfinity;
                    if (t < seq && j <= t && j >= FirstKey(doc, a, b, t))
                        s = RowDot(sh, qsOff + r * hdp, sh, ksOff + c * hdp, hd) * a.Scale;
                    sh[ssOff + r * sk + c] = s;
                }
                Group.Barrier();
                OnlineSoftmaxStep(sh, tid, bq, bk, hd, sk, ssOff, msOff, lsOff, alOff, osOff, vsOff);
            }
            for (int e = tid; e < bq * hd; e += GroupSize)
            {
                int r = e / hd, d = e - r * hd, t = t0 + r;
                if (t < seq) o[qBase + (long)t * ldq + d] = sh[osOff + e] / sh[lsOff + r];
            }
            if (tid < bq && t0 + tid < seq)
                lse[((long)b * a.Heads + h) * seq + t0 + tid] = sh[msOff + tid] + XMath.Log(sh[lsOff + tid]);
            Group.Barrier();
        }
    }

    /// <summary>delta[(b·heads + h)·seq + t] = Σ_d dO·O for each query row and head; one warp per (row, head).</summary>
    [IlgpuKernel]
    internal static void AttentionDeltaKernel(ArrayView<float> delta, ArrayView<float> dO, ArrayView<float> o, AttentionArgs a)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        int lane = Warp.LaneIdx, hd = a.HeadDim;
        long rows = (long)a.Batch * a.Seq * a.Heads, warps = (long)Grid.DimX * WarpsPerGroup;
        for (long w = (long)Grid.IdxX * WarpsPerGroup + Warp.WarpIdx; w < rows; w += warps)
        {
            long off = w * hd;
            float s = 0f;
            for (int d = lane; d < hd; d += WarpSize) s += dO[off + d] * o[off + d];
            s = DeviceReduce.WarpSum(s, shared);
            if (lane == 0) delta[StatIndex(w, a)] = s;
        }
    }

    /// <summary>
    /// dq for one (sequence, head, query tile) per unit: P = exp(scale·QKᵀ − lse) (masked), dS = P∘(dO·Vᵀ − D),
    /// dQ = scale·dS·K over the visible key tiles.
    /// Shared: Q, dO [BQ, hd+1], K, V [BK, hd+1], dS [BQ, BK+1], dQ [BQ, hd], lse, D [BQ].
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionDqKernel(ArrayView<float> dq, ArrayView<float> dO, ArrayView<float> lse, ArrayView<float> delta,
        ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<int> doc, AttentionArgs a)
    {
        var sh = SharedMemory.GetDynamic<float>();
        int hd = a.HeadDim, hdp = hd + 1, bq = a.BQ, bk = a.BK, sk = bk + 1, seq = a.Seq;
        int qsOff = 0, dosOff = qsOff + bq * hdp, ksOff = dosOff + bq * hdp, vsOff = ksOff + bk * hdp, ssOff = vsOff + bk * hdp;
        int dqOff = ssOff + bq * sk, lseOff = dqOff + bq * hd, dOff = lseOff + bq;
        int tid = Group.IdxX, group = a.Heads / a.KvHeads, ldq = a.Heads * hd, ldk = a.KvHeads * hd;
        int qTiles = (seq + bq - 1) / bq, units = a.Batch * a.Heads * qTiles;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int qt = u % qTiles, bh = u / qTiles, b = bh / a.Heads, h = bh - b * a.Heads, g = h / group;
            int t0 = qt * bq, tEnd = DeviceReduce.Min(seq, t0 + bq);
            long qBase = (long)b * seq * ldq + h * hd, kBase = (long)b * seq * ldk + g * hd, statBase = ((long)b * a.Heads + h) * seq;
            for (int e = tid; e < bq * hd; e += GroupSize)
            {
                int r = e / hd, d = e - r * hd, t = t0 + r;
                bool ok = t < seq;
                sh[qsOff + r * hdp + d] = ok ? q[qBase + (long)t * ldq + d] : 0f;
                sh[dosOff + r * hdp + d] = ok ? dO[qBase + (long)t * ldq + d] : 0f;
                sh[dqOff + e] = 0f;
            }
            if (tid < bq)
            {
                bool ok = t0 + tid < seq;
                sh[lseOff + tid] = ok ? lse[statBase + t0 + tid] : 0f;
                sh[dOff + tid] = ok ? delta[statBase + t0 + tid] : 0f;
            }
            int kFirst = MinFirstKey(doc, a, b, t0, tEnd);
            Group.Barrier();
            for (int j0 = kFirst / bk * bk; j0 < tEnd; j0 += bk)
            {
                for (int e = tid; e < bk * hd; e += GroupSize)
                {
                    int c = e / hd, d = e - c * hd, j = j0 + c;
                    bool ok = j < seq;
                    sh[ksOff + c * hdp + d] = ok ? k[kBase + (long)j * ldk + d] : 0f;
                    sh[vsOff + c * hdp + d] = ok ? v[kBase + (long)j * ldk + d] : 0f;
                }
                Group.Barrier();
                for (int e = tid; e < bq * bk; e += GroupSize)
                {
                    int r = e / bk, c = e - r * bk, t = t0 + r, j = j0 + c;
                    float ds = 0f;
                    if (t < seq && j <= t && j >= FirstKey(doc, a, b, t))
                    {
                        float p = XMath.Exp(RowDot(sh, qsOff + r * hdp, sh, ksOff + c * hdp, hd) * a.Scale - sh[lseOff + r]);
                        float dp = RowDot(sh, dosOff + r * hdp, sh, vsOff + c * hdp, hd);
                        ds = p * (dp - sh[dOff + r]);
                    }
                    sh[ssOff + r * sk + c] = ds;
                }
                Group.Barrier();
                for (int e = tid; e < bq * hd; e += GroupSize)
                {
                    int r = e / hd, d = e - r * hd, row = ssOff + r * sk;
                    float acc = sh[dqOff + e];
                    for (int c = 0; c < bk; c++) acc += sh[row + c] * sh[ksOff + c * hdp + d];
                    sh[dqOff + e] = acc;
                }
                Group.Barrier();
            }
            for (int e = tid; e < bq * hd; e += GroupSize)
            {
                int r = e / hd, d = e - r * hd, t = t0 + r;
                if (t < seq) dq[qBase + (long)t * ldq + d] = a.Scale * sh[dqOff + e];
            }
            Group.Barrier();
        }
    }

    /// <summary>
    /// dk, dv for one (sequence, kv head, key tile) per unit, over the query tiles of every head of the group:
    /// dV += Pᵀ·dO, dK += scale·dSᵀ·Q with P and dS recomputed as in the dQ kernel. The unit owns its rows of dk and
    /// dv, so nothing races. Shared: K, V [BK, hd+1], Q, dO [BQ, hd+1], P/dS [BQ, BK+1], dK, dV [BK, hd], lse, D [BQ].
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionDkDvKernel(ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> dO, ArrayView<float> lse,
        ArrayView<float> delta, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<int> doc, AttentionArgs a)
    {
        var sh = SharedMemory.GetDynamic<float>();
        int hd = a.HeadDim, hdp = hd + 1, bq = a.BQ, bk = a.BK, sk = bk + 1, seq = a.Seq;
        int ksOff = 0, vsOff = ksOff + bk * hdp, qsOff = vsOff + bk * hdp, dosOff = qsOff + bq * hdp, ssOff = dosOff + bq * hdp;
        int dkOff = ssOff + bq * sk, dvOff = dkOff + bk * hd, lseOff = dvOff + bk * hd, dOff = lseOff + bq;
        int tid = Group.IdxX, group = a.Heads / a.KvHeads, ldq = a.Heads * hd, ldk = a.KvHeads * hd;
        int kTiles = (seq + bk - 1) / bk, units = a.Batch * a.KvHeads * kTiles;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int kt = u % kTiles, bg = u / kTiles, b = bg / a.KvHeads, g = bg - b * a.KvHeads;
            int j0 = kt * bk, jLast = DeviceReduce.Min(seq, j0 + bk) - 1;
            long kBase = (long)b * seq * ldk + g * hd;
            for (int e = tid; e < bk * hd; e += GroupSize)
            {
                int c = e / hd, d = e - c * hd, j = j0 + c;
                bool ok = j < seq;
                sh[ksOff + c * hdp + d] = ok ? k[kBase + (long)j * ldk + d] : 0f;
                sh[vsOff + c * hdp + d] = ok ? v[kBase + (long)j * ldk + d] : 0f;
                sh[dkOff + e] = 0f;
                sh[dvOff + e] = 0f;
            }
            Group.Barrier();
            for (int h = g * group; h < (g + 1) * group; h++)
            {
                long qBase = (long)b * seq * ldq + h * hd, statBase = ((long)b * a.Heads + h) * seq;
                for (int t0 = j0 / bq * bq; t0 < seq; t0 += bq)
                {
                    int tEnd = DeviceReduce.Min(seq, t0 + bq);
                    if (MinFirstKey(doc, a, b, t0, tEnd) > jLast) continue;
                    for (int e = tid; e < bq * hd; e += GroupSize)
                    {
                        int r = e / hd, d = e - r * hd, t = t0 + r;
                        bool ok = t < seq;
                        sh[qsOff + r * hdp + d] = ok ? q[qBase + (long)t * ldq + d] : 0f;
                        sh[dosOff + r * hdp + d] = ok ? dO[qBase + (long)t * ldq + d] : 0f;
                    }
                    if (tid < bq)
                    {
                        bool ok = t0 + tid < seq;
                        sh[lseOff + tid] = ok ? lse[statBase + t0 + tid] : 0f;
                        sh[dOff + tid] = ok ? delta[statBase + t0 + tid] : 0f;
                    }
                    Group.Barrier();
                    for (int e = tid; e < bq * bk; e += GroupSize)
                    {
                        int r = e / bk, c = e - r * bk, t = t0 + r, j = j0 + c;
                        float p = 0f;
                        if (t < seq && j <= t && j >= FirstKey(doc, a, b, t))
                            p = XMath.Exp(RowDot(sh, qsOff + r * hdp, sh, ksOff + c * hdp, hd) * a.Scale - sh[lseOff + r]);
                        sh[ssOff + r * sk + c] = p;
                    }
                    Group.Barrier();
                    AddTransposedProduct(sh, tid, bq, bk, hd, hdp, sk, ssOff, dosOff, dvOff); // dV += Pᵀ·dO
                    for (int e = tid; e < bq * bk; e += GroupSize)
                    {
                        int r = e / bk, c = e - r * bk, idx = ssOff + r * sk + c;
                        float p = sh[idx];
                        if (p != 0f) sh[idx] = p * (RowDot(sh, dosOff + r * hdp, sh, vsOff + c * hdp, hd) - sh[dOff + r]);
                    }
                    Group.Barrier();
                    AddTransposedProduct(sh, tid, bq, bk, hd, hdp, sk, ssOff, qsOff, dkOff); // dK += dSᵀ·Q (scaled at the end)
                }
            }
            for (int e = tid; e < bk * hd; e += GroupSize)
            {
                int c = e / hd, d = e - c * hd, j = j0 + c;
                if (j < seq)
                {
                    dk[kBase + (long)j * ldk + d] = a.Scale * sh[dkOff + e];
                    dv[kBase + (long)j * ldk + d] = sh[dvOff + e];
                }
            }
            Group.Barrier();
        }
    }
}
