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
    [IlgpuKernel(MaxGroupThreads = TcGroup, MinGroupsPerMultiprocessor = TcGroupsPerMultiprocessor)]
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
    /// [d][key pair], V as [key][d pair]); dq = scale·dQ, with a.RopeMax &gt; 0 rotated back by the rows' positions
    /// (<see cref="Unrotated"/>), stored as floats or, with a.OutBf16, as bf16 pairs (dq as 4-byte words).
    /// </summary>
    [IlgpuKernel(MaxGroupThreads = TcGroup, MinGroupsPerMultiprocessor = TcGroupsPerMultiprocessor)]
    internal static void AttentionTcDqKernel(ArrayView<uint> dq, ArrayView<U4> dO, ArrayView<float> lse, ArrayView<float> delta,
        ArrayView<U4> q, ArrayView<U4> k, ArrayView<U4> v, ArrayView<int> doc, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin, AttentionArgs a)
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
            acc = Map(acc, default, new RowScale { Su = a.Scale, Sl = a.Scale });
            if (a.RopeMax != 0) acc = Unrotated(acc, RopeRowsOf(positions, (long)unit.B * seq, ru, seq, a.RopeMax), cos, sin, t);
            StoreRows(dq.Cast<float>(), dq, a.OutBf16, unit.QBase, ldq, ru, seq, t, acc, 1f, 1f);
        }
    }

    /// <summary>
    /// Where a lane's two rows (r and r + 8 of a sequence whose tokens start at token0) find their angles: table row
    /// offsets (position · 32) and whether each position lies in the table (a row past the sequence or a position
    /// outside the table keeps its values, as RopeCore leaves them; its offset is row 0's).
    /// </summary>
    internal struct RopeRows
    {
        public long Tu, Tl;
        public bool InU, InL;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static RopeRows RopeRowsOf(ArrayView<int> positions, long token0, int r, int seq, int max)
    {
        int pu = r < seq ? positions[token0 + r] : -1, pl = r + 8 < seq ? positions[token0 + r + 8] : -1;
        RopeRows rr;
        rr.InU = pu >= 0 && pu < max;
        rr.InL = pl >= 0 && pl < max;
        rr.Tu = (long)(rr.InU ? pu : 0) * (TcHeadDim / 2);
        rr.Tl = (long)(rr.InL ? pl : 0) * (TcHeadDim / 2);
        return rr;
    }

    /// <summary>
    /// A warp's 16 × 64 gradient block rotated back (rotate-half layout: column c pairs with c + 32, which is the same
    /// lane's fragment J(j + 4) for J(j)): the arithmetic of Rotate with sign −1, so that the result is the one the
    /// separate inverse RoPE gives.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static C8 Unrotated(C8 c, RopeRows r, ArrayView<float> cos, ArrayView<float> sin, int t)
    {
        var p = UnrotatedPair(c.J0, c.J4, 2 * t, r, cos, sin); c.J0 = p.Lo; c.J4 = p.Hi;
        p = UnrotatedPair(c.J1, c.J5, 8 + 2 * t, r, cos, sin); c.J1 = p.Lo; c.J5 = p.Hi;
        p = UnrotatedPair(c.J2, c.J6, 16 + 2 * t, r, cos, sin); c.J2 = p.Lo; c.J6 = p.Hi;
        p = UnrotatedPair(c.J3, c.J7, 24 + 2 * t, r, cos, sin); c.J3 = p.Lo; c.J7 = p.Hi;
        return c;
    }

    /// <summary>Two C fragments: columns col, col + 1 (Lo) and col + 32, col + 33 (Hi).</summary>
    internal struct FragPair
    {
        public CFrag Lo, Hi;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FragPair UnrotatedPair(CFrag lo, CFrag hi, int col, RopeRows r, ArrayView<float> cos, ArrayView<float> sin)
    {
        float cu0 = cos[r.Tu + col], cu1 = cos[r.Tu + col + 1], su0 = -sin[r.Tu + col], su1 = -sin[r.Tu + col + 1];
        float cl0 = cos[r.Tl + col], cl1 = cos[r.Tl + col + 1], sl0 = -sin[r.Tl + col], sl1 = -sin[r.Tl + col + 1];
        FragPair p;
        p.Lo = lo;
        p.Hi = hi;
        if (r.InU)
        {
            p.Lo.X0 = lo.X0 * cu0 - hi.X0 * su0; p.Hi.X0 = hi.X0 * cu0 + lo.X0 * su0;
            p.Lo.X1 = lo.X1 * cu1 - hi.X1 * su1; p.Hi.X1 = hi.X1 * cu1 + lo.X1 * su1;
        }
        if (r.InL)
        {
            p.Lo.X2 = lo.X2 * cl0 - hi.X2 * sl0; p.Hi.X2 = hi.X2 * cl0 + lo.X2 * sl0;
            p.Lo.X3 = lo.X3 * cl1 - hi.X3 * sl1; p.Hi.X3 = hi.X3 * cl1 + lo.X3 * sl1;
        }
        return p;
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
    /// dk = scale·dK, with a.RopeMax &gt; 0 rotated back by the keys' positions; dk and dv stored as floats or, with
    /// a.OutBf16, as bf16 pairs (as 4-byte words).
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionTcDkDvKernel(ArrayView<uint> dk, ArrayView<uint> dv, ArrayView<U4> dO, ArrayView<float> lse,
        ArrayView<float> delta, ArrayView<U4> q, ArrayView<U4> k, ArrayView<U4> v, ArrayView<int> doc, ArrayView<int> positions, ArrayView<float> cos,
        ArrayView<float> sin, AttentionArgs a)
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
            dK = Map(dK, default, new RowScale { Su = a.Scale, Sl = a.Scale });
            if (a.RopeMax != 0) dK = Unrotated(dK, RopeRowsOf(positions, (long)b * seq, ku, seq, a.RopeMax), cos, sin, t);
            StoreRows(dk.Cast<float>(), dk, a.OutBf16, kBase, ldk, ku, seq, t, dK, 1f, 1f);
            StoreRows(dv.Cast<float>(), dv, a.OutBf16, kBase, ldk, ku, seq, t, dV, 1f, 1f);
        }
    }
}
