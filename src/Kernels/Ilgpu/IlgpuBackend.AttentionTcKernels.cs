using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>The tensor-core attention kernels (see IlgpuBackend.AttentionTc.cs for the layout); q, k, v, o and dO are bf16.</summary>
public sealed partial class IlgpuBackend
{
    /// <summary>
    /// delta[(b·heads + h)·seq + t] = Σ_d dO·O for each query row and head, from bf16 dO and O (head dimension 64: one
    /// pair per lane); one warp per (row, head).
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionTcDeltaKernel(ArrayView<float> delta, ArrayView<U4> dO4, ArrayView<U4> o4, AttentionArgs a)
    {
        ArrayView<uint> dO = dO4.Cast<uint>(), o = o4.Cast<uint>();
        int lane = Warp.LaneIdx;
        long rows = (long)a.Batch * a.Seq * a.Heads, warps = (long)Grid.DimX * (Group.DimX / WarpSize);
        for (long w = (long)Grid.IdxX * (Group.DimX / WarpSize) + Warp.WarpIdx; w < rows; w += warps)
        {
            long i = w * (TcHeadDim / 2) + lane;
            uint x = dO[i], y = o[i];
            float s = DeviceReduce.XorSum(Interop.IntAsFloat(x << 16) * Interop.IntAsFloat(y << 16) + Interop.IntAsFloat(x & 0xFFFF0000u) * Interop.IntAsFloat(y & 0xFFFF0000u));
            if (lane == 0) delta[StatIndex(w, a)] = s;
        }
    }

    /// <summary>
    /// o and lse for one (sequence, head, 64 queries) per unit: warp w holds queries 16w .. 16w + 15 as A fragments
    /// and walks the visible 64-key tiles (K as [key][d pair], V as [d][key pair]) with an online softmax in base 2.
    /// q, k, v are bf16 (16-byte chunks); o is written in fp32, or with a.OutBf16 in bf16 to o16 (uint pairs). The next
    /// tile's loads are issued before the current tile is multiplied, so that their latency hides behind the mma.
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionTcForwardKernel(ArrayView<float> o, ArrayView<uint> o16, ArrayView<float> lse, ArrayView<U4> q, ArrayView<U4> k,
        ArrayView<U4> v, ArrayView<int> doc, AttentionArgs a)
    {
        var ks4 = SharedMemory.Allocate<U4>(TcStage / 4);
        var vt4 = SharedMemory.Allocate<U4>(TcStage / 4);
        ArrayView<uint> ks = ks4.Cast<uint>(), vt = vt4.Cast<uint>();
        int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31, t = lane & 3, frag = (lane >> 2) * TcLd + 2 * t;
        int seq = a.Seq, ldq = a.Heads * TcHeadDim, ldk = a.KvHeads * TcHeadDim;
        int qTiles = (seq + TcRows - 1) / TcRows, units = a.Batch * a.Heads * qTiles;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            var unit = QueryUnitOf(u, qTiles, warp, lane, doc, a);
            A4 qa = LoadRowsA(q.Cast<uint>(), unit.QBase, ldq, unit.Ru, seq, t);
            var scores = unit.Scores;
            float mu = float.NegativeInfinity, ml = float.NegativeInfinity, lu = 0f, ll = 0f;
            C8 acc = default;
            TileRegs kr = LoadTcTile(k, unit.KBase, ldk, unit.KFirst, seq, tid), vr = LoadTcTile(v, unit.KBase, ldk, unit.KFirst, seq, tid);
            for (int j0 = unit.KFirst; j0 < unit.TEnd; j0 += TcTile)
            {
                StoreTileRows(ks4, kr, tid);
                StoreTileCols(vt4, vr, tid);
                Group.Barrier();
                kr = LoadTcTile(k, unit.KBase, ldk, j0 + TcTile, seq, tid);
                vr = LoadTcTile(v, unit.KBase, ldk, j0 + TcTile, seq, tid);
                if (unit.WarpSees(j0, seq))
                {
                    scores.Key = j0 + 2 * t;
                    C8 s = Product(default, qa, ks, frag, warp, lane);
                    // Below the diagonal every query of the warp sees every key of the tile: the scores are only scaled.
                    s = unit.WarpSeesAll(j0, seq, a.HasDoc) ? Map(s, default, new RowScale { Su = scores.Sl2, Sl = scores.Sl2 }) : Map(s, default, scores);
                    float nu = TcMax(mu, QuadMax(RowMax(s, false))), nl = TcMax(ml, QuadMax(RowMax(s, true)));
                    // A row that has seen nothing yet keeps probabilities 0 (2^(−∞ − 0)) instead of NaN.
                    float uu = nu == float.NegativeInfinity ? 0f : nu, ul = nl == float.NegativeInfinity ? 0f : nl;
                    C8 p = Map(s, default, new RowExp2 { Uu = uu, Ul = ul });
                    float au = TcExp2(mu - uu), al = TcExp2(ml - ul);
                    lu = lu * au + RowSum(p, false);
                    ll = ll * al + RowSum(p, true);
                    mu = nu;
                    ml = nl;
                    acc = Product(Map(acc, default, new RowScale { Su = au, Sl = al }), ToA(p), vt, frag, warp, lane);
                }
                Group.Barrier();
            }
            lu = QuadSum(lu);
            ll = QuadSum(ll);
            StoreRows(o, o16, a.OutBf16, unit.QBase, ldq, unit.Ru, seq, t, acc, 1f / lu, 1f / ll);
            if (t == 0 && unit.Ru < seq) lse[unit.Stat + unit.Ru] = (mu + XMath.Log2(lu)) * Ln2;
            if (t == 0 && unit.Rl < seq) lse[unit.Stat + unit.Rl] = (ml + XMath.Log2(ll)) * Ln2;
        }
    }

    /// <summary>
    /// dq for one (sequence, head, 64 queries) per unit: Q and dO as A fragments; per visible 64-key tile
    /// P = 2^(S·scale·log2 e − lse·log2 e), dP = dO·Vᵀ, dS = P∘(dP − D), dQ += dS·K (K as [key][d pair] and
    /// [d][key pair], V as [key][d pair]); dq = scale·dQ.
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionTcDqKernel(ArrayView<float> dq, ArrayView<U4> dO, ArrayView<float> lse, ArrayView<float> delta,
        ArrayView<U4> q, ArrayView<U4> k, ArrayView<U4> v, ArrayView<int> doc, AttentionArgs a)
    {
        var ks4 = SharedMemory.Allocate<U4>(TcStage / 4);
        var kt4 = SharedMemory.Allocate<U4>(TcStage / 4);
        var vs4 = SharedMemory.Allocate<U4>(TcStage / 4);
        ArrayView<uint> ks = ks4.Cast<uint>(), kt = kt4.Cast<uint>(), vs = vs4.Cast<uint>();
        int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31, t = lane & 3, frag = (lane >> 2) * TcLd + 2 * t;
        int seq = a.Seq, ldq = a.Heads * TcHeadDim, ldk = a.KvHeads * TcHeadDim;
        int qTiles = (seq + TcRows - 1) / TcRows, units = a.Batch * a.Heads * qTiles;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            var unit = QueryUnitOf(u, qTiles, warp, lane, doc, a);
            int ru = unit.Ru, rl = unit.Rl;
            A4 qa = LoadRowsA(q.Cast<uint>(), unit.QBase, ldq, ru, seq, t), da = LoadRowsA(dO.Cast<uint>(), unit.QBase, ldq, ru, seq, t);
            var scores = unit.Scores;
            var exp = new RowExp2 { Uu = ru < seq ? lse[unit.Stat + ru] * Log2E : 0f, Ul = rl < seq ? lse[unit.Stat + rl] * Log2E : 0f };
            var ds = new RowDs { Du = ru < seq ? delta[unit.Stat + ru] : 0f, Dl = rl < seq ? delta[unit.Stat + rl] : 0f };
            C8 acc = default;
            TileRegs kr = LoadTcTile(k, unit.KBase, ldk, unit.KFirst, seq, tid), vr = LoadTcTile(v, unit.KBase, ldk, unit.KFirst, seq, tid);
            for (int j0 = unit.KFirst; j0 < unit.TEnd; j0 += TcTile)
            {
                StoreTileRows(ks4, kr, tid);
                StoreTileCols(kt4, kr, tid);
                StoreTileRows(vs4, vr, tid);
                Group.Barrier();
                kr = LoadTcTile(k, unit.KBase, ldk, j0 + TcTile, seq, tid);
                vr = LoadTcTile(v, unit.KBase, ldk, j0 + TcTile, seq, tid);
                if (unit.WarpSees(j0, seq))
                {
                    scores.Key = j0 + 2 * t;
                    C8 sc = Product(default, qa, ks, frag, warp, lane);
                    C8 p = unit.WarpSeesAll(j0, seq, a.HasDoc)
                        ? Map(sc, default, new RowScaledExp2 { S = scores.Sl2, Uu = exp.Uu, Ul = exp.Ul })
                        : Map(Map(sc, default, scores), default, exp);
                    C8 dS = Map(p, Product(default, da, vs, frag, warp, lane), ds);
                    acc = Product(acc, ToA(dS), kt, frag, warp, lane);
                }
                Group.Barrier();
            }
            StoreRows(dq, q.Cast<uint>(), 0, unit.QBase, ldq, ru, seq, t, acc, a.Scale, a.Scale);
        }
    }

    /// <summary>
    /// Query q0 + (tid mod 64)'s log-sum-exp, D and document start, loaded ahead as the tiles are, by every thread and
    /// without a branch (a query past the end reads the last one): nothing may write or move the loads' registers
    /// before <see cref="StoreQueryStats"/> (threads below 64) puts them in shared memory, or the warp waits for them
    /// there and then.
    /// </summary>
    internal struct QueryStats
    {
        public float Lse, D;
        public int Doc, Query;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static QueryStats LoadQueryStats(ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> doc, AttentionArgs a, int b, long stat, int q0, int tid)
    {
        QueryStats s;
        s.Query = q0 + (tid & (TcTile - 1));
        int tc = DeviceReduce.Min(s.Query, a.Seq - 1);
        s.Lse = lse[stat + tc];
        s.D = delta[stat + tc];
        s.Doc = a.HasDoc != 0 ? doc[(long)b * a.Seq + tc] : 0;
        return s;
    }

    /// <summary>
    /// The query tile's statistics into the shared stats (threads below 64): log2-sum-exp, D, first key as int bits
    /// (the document start clamped to [0, query], as <see cref="FirstKey"/>; int.MaxValue, no key, past the end; 0, 0
    /// and int.MaxValue there).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreQueryStats(ArrayView<float> stats, QueryStats s, int seq, int tid)
    {
        if (tid >= TcTile) return;
        bool ok = s.Query < seq;
        int first = s.Doc < 0 ? 0 : s.Doc > s.Query ? s.Query : s.Doc;
        stats[tid] = ok ? s.Lse * Log2E : 0f;
        stats[TcTile + tid] = ok ? s.D : 0f;
        stats[2 * TcTile + tid] = Interop.IntAsFloat((uint)(ok ? first : int.MaxValue));
    }

    /// <summary>Where head h of sequence b starts in q or dO (bf16 elements; rows of ldq).</summary>
    private static long QTileBase(int b, int h, int seq, int ldq) => (long)b * seq * ldq + h * TcHeadDim;

    /// <summary>
    /// dk, dv for one (sequence, kv head, 64 keys) per unit over the 64-query tiles of every head of its group: K and
    /// V as A fragments; Pᵀ = 2^(K·Qᵀ·scale·log2 e − lse·log2 e), dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ − D),
    /// dK += dSᵀ·Q (Q and dO as [query][d pair] and [d][query pair]; the tile's lse, D and first keys in shared);
    /// dk = scale·dK.
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionTcDkDvKernel(ArrayView<float> dk, ArrayView<float> dv, ArrayView<U4> dO, ArrayView<float> lse,
        ArrayView<float> delta, ArrayView<U4> q, ArrayView<U4> k, ArrayView<U4> v, ArrayView<int> doc, AttentionArgs a)
    {
        var qs4 = SharedMemory.Allocate<U4>(TcStage / 4);
        var qt4 = SharedMemory.Allocate<U4>(TcStage / 4);
        var dos4 = SharedMemory.Allocate<U4>(TcStage / 4);
        var dot4 = SharedMemory.Allocate<U4>(TcStage / 4);
        ArrayView<uint> qs = qs4.Cast<uint>(), qt = qt4.Cast<uint>(), dos = dos4.Cast<uint>(), dot = dot4.Cast<uint>();
        // The query tile's log2-sum-exp, D and first keys (as int bits) in one array: one view held by both maps.
        var stats = SharedMemory.Allocate<float>(3 * TcTile);
        int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31, t = lane & 3, frag = (lane >> 2) * TcLd + 2 * t;
        int seq = a.Seq, group = a.Heads / a.KvHeads, ldq = a.Heads * TcHeadDim, ldk = a.KvHeads * TcHeadDim;
        int kTiles = (seq + TcRows - 1) / TcRows, units = a.Batch * a.KvHeads * kTiles;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            // The first key tiles (the most queries) of every sequence and kv head first.
            int bgs = a.Batch * a.KvHeads, kTile = u / bgs, bg = u % bgs, b = bg / a.KvHeads, g = bg - b * a.KvHeads;
            int k0 = kTile * TcRows, kEnd = DeviceReduce.Min(seq, k0 + TcRows), w0 = k0 + 16 * warp, ku = w0 + (lane >> 2);
            long kBase = (long)b * seq * ldk + g * TcHeadDim;
            A4 ka = LoadRowsA(k.Cast<uint>(), kBase, ldk, ku, seq, t), va = LoadRowsA(v.Cast<uint>(), kBase, ldk, ku, seq, t);
            var prob = new ColProb { Sl2 = a.Scale * Log2E, Ku = ku, Kl = ku + 8, C0 = 2 * t, Seq = seq, Stats = stats };
            var ds = new ColDs { C0 = 2 * t, Stats = stats };
            C8 dK = default, dV = default;
            for (int h = g * group; h < (g + 1) * group; h++)
            {
                long qBase = QTileBase(b, h, seq, ldq), stat = ((long)b * a.Heads + h) * seq;
                // Each step loads the next step's Q and dO tiles while it multiplies (`loaded`: the query tile qr and
                // dr hold; a step skipped by the document starts leaves them for the next, which then loads its own).
                int loaded = k0;
                TileRegs qr = LoadTcTile(q, qBase, ldq, k0, seq, tid), dr = LoadTcTile(dO, qBase, ldq, k0, seq, tid);
                var st = LoadQueryStats(lse, delta, doc, a, b, stat, k0, tid);
                for (int q0 = k0; q0 < seq; q0 += TcTile)
                {
                    // Without document starts every query tile from k0 on sees the unit's keys (MinFirstKey's loop skipped).
                    if (a.HasDoc != 0 && MinFirstKey(doc, a, b, q0, DeviceReduce.Min(seq, q0 + TcTile)) >= kEnd) continue; // group-uniform
                    if (loaded != q0)
                    {
                        qr = LoadTcTile(q, qBase, ldq, q0, seq, tid);
                        dr = LoadTcTile(dO, qBase, ldq, q0, seq, tid);
                        st = LoadQueryStats(lse, delta, doc, a, b, stat, q0, tid);
                    }
                    StoreQueryStats(stats, st, seq, tid);
                    StoreTileRows(qs4, qr, tid);
                    StoreTileCols(qt4, qr, tid);
                    StoreTileRows(dos4, dr, tid);
                    StoreTileCols(dot4, dr, tid);
                    Group.Barrier();
                    qr = LoadTcTile(q, qBase, ldq, q0 + TcTile, seq, tid);
                    dr = LoadTcTile(dO, qBase, ldq, q0 + TcTile, seq, tid);
                    st = LoadQueryStats(lse, delta, doc, a, b, stat, q0 + TcTile, tid);
                    loaded = q0 + TcTile;
                    if (w0 < seq && q0 + TcTile - 1 >= w0) // some query of the tile sees a key of this warp (warp-uniform)
                    {
                        prob.Q0 = q0;
                        C8 kq = Product(default, ka, qs, frag, warp, lane);
                        // Every query of the tile comes at or after the warp's last key: no masking.
                        C8 p = a.HasDoc == 0 && q0 >= w0 + 15 && q0 + TcTile <= seq
                            ? Map(kq, default, new ColProbAll { Sl2 = prob.Sl2, C0 = prob.C0, Stats = stats })
                            : Map(kq, default, prob);
                        dV = Product(dV, ToA(p), dot, frag, warp, lane);
                        C8 dS = Map(p, Product(default, va, dos, frag, warp, lane), ds);
                        dK = Product(dK, ToA(dS), qt, frag, warp, lane);
                    }
                    Group.Barrier();
                }
            }
            StoreRows(dk, k.Cast<uint>(), 0, kBase, ldk, ku, seq, t, dK, a.Scale, a.Scale);
            StoreRows(dv, v.Cast<uint>(), 0, kBase, ldk, ku, seq, t, dV, 1f, 1f);
        }
    }
}
