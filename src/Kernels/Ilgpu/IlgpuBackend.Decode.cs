using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Attention against a key/value cache (generation), flash style like <see cref="AttentionForwardKernel"/> but with
/// the rows of a tile taken across the heads that share a kv head: the work of one (sequence, kv head) is the matrix of
/// rows r = i·group + hh (query i, head g·group + hh), so a decode step (one query) puts all the group's heads in one
/// tile and reads the cached keys and values once for them. One group of threads per (sequence, kv head, row tile)
/// walks the key tiles up to the tile's last visible key with an online softmax. The row tile is the smallest of 8, 16,
/// 32, 64 that holds the unit's rows (so a decode step does not pay for 64 rows), the key tile the largest that fits
/// <see cref="SharedMemoryBudget"/>. Cache rows at or beyond the tile's visible limit are never loaded.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DecodeArgs> _attentionDecode = null!;

    /// <summary>Shape and tiling of an attention-decode launch.</summary>
    internal struct DecodeArgs
    {
        public int Batch, Queries, Keys, CacheRows, Heads, KvHeads, HeadDim, BQ, BK;
        public float Scale;
    }

    private static readonly int[] DecodeRowTiles = [8, 16, 32, 64];
    private static readonly int[] DecodeKeyTiles = [64, 32, 16, 8];

    private void LoadDecode() =>
        _attentionDecode = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DecodeArgs>(AttentionDecodeKernel);

    /// <summary>Row and key tiles for <paramref name="rows"/> rows per unit and head dimension <paramref name="hd"/>.</summary>
    internal static (int Q, int K) DecodeTiles(long rows, int hd)
    {
        int bq = DecodeRowTiles[^1];
        foreach (int t in DecodeRowTiles)
            if (t >= rows) { bq = t; break; }
        for (; bq >= DecodeRowTiles[0]; bq /= 2)
            foreach (int bk in DecodeKeyTiles)
                if (ForwardShared(bq, bk, hd) * sizeof(float) <= SharedMemoryBudget) return (bq, bk);
        throw new ArgumentException($"headDim {hd} is too large for the attention kernels (their tiles must fit {SharedMemoryBudget} bytes of shared memory)", "headDim");
    }

    /// <inheritdoc/>
    protected override void AttentionDecodeCore(Tensor o, Tensor q, Tensor kCache, Tensor vCache,
        int batch, int queries, int keys, int cacheRows, int heads, int kvHeads, int headDim, float scale)
    {
        long rows = (long)queries * (heads / kvHeads);
        var tiles = DecodeTiles(rows, headDim);
        var a = new DecodeArgs
        {
            Batch = batch, Queries = queries, Keys = keys, CacheRows = cacheRows, Heads = heads, KvHeads = kvHeads, HeadDim = headDim,
            BQ = tiles.Q, BK = tiles.K, Scale = scale,
        };
        long units = (long)batch * kvHeads * ((rows + tiles.Q - 1) / tiles.Q);
        _attentionDecode(Config(TileGroups(units), ForwardShared(tiles.Q, tiles.K, headDim)), F(o), F(q), F(kCache), F(vCache), a);
    }

    /// <summary>
    /// o for one (sequence, kv head, row tile) per unit; row r of the unit is query r / group of head
    /// g·group + r % group, and sees cache rows 0 … keys − queries + r / group.
    /// Shared: Q [BQ, hd+1], K [BK, hd+1], V [BK, hd], S [BQ, BK+1], O [BQ, hd], rescale, sum, max [BQ].
    /// </summary>
    [IlgpuKernel]
    internal static void AttentionDecodeKernel(ArrayView<float> o, ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, DecodeArgs a)
    {
        var sh = SharedMemory.GetDynamic<float>();
        int hd = a.HeadDim, hdp = hd + 1, bq = a.BQ, bk = a.BK, sk = bk + 1;
        int qsOff = 0, ksOff = qsOff + bq * hdp, vsOff = ksOff + bk * hdp, ssOff = vsOff + bk * hd, osOff = ssOff + bq * sk;
        int alOff = osOff + bq * hd, lsOff = alOff + bq, msOff = lsOff + bq;
        int tid = Group.IdxX, group = a.Heads / a.KvHeads, ldq = a.Heads * hd, ldk = a.KvHeads * hd;
        int rows = a.Queries * group, past = a.Keys - a.Queries;
        int rTiles = (rows + bq - 1) / bq, units = a.Batch * a.KvHeads * rTiles;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int rt = u % rTiles, bg = u / rTiles, b = bg / a.KvHeads, g = bg - b * a.KvHeads;
            int r0 = rt * bq, rEnd = DeviceReduce.Min(rows, r0 + bq);
            // Keys visible to the tile: up to the last query's limit.
            int kEnd = past + (rEnd - 1) / group + 1;
            long qBase = (long)b * a.Queries * ldq + (long)g * group * hd, kBase = (long)b * a.CacheRows * ldk + g * hd;
            for (int e = tid; e < bq * hd; e += GroupSize)
            {
                int r = e / hd, d = e - r * hd, row = r0 + r;
                float x = 0f;
                if (row < rows)
                {
                    int i = row / group, hh = row - i * group;
                    x = q[qBase + (long)i * ldq + hh * hd + d];
                }
                sh[qsOff + r * hdp + d] = x;
                sh[osOff + e] = 0f;
            }
            if (tid < bq)
            {
                sh[msOff + tid] = float.NegativeInfinity;
                sh[lsOff + tid] = 0f;
            }
            Group.Barrier();
            for (int j0 = 0; j0 < kEnd; j0 += bk)
            {
                for (int e = tid; e < bk * hd; e += GroupSize)
                {
                    int c = e / hd, d = e - c * hd, j = j0 + c;
                    bool ok = j < kEnd;
                    sh[ksOff + c * hdp + d] = ok ? kCache[kBase + (long)j * ldk + d] : 0f;
                    sh[vsOff + e] = ok ? vCache[kBase + (long)j * ldk + d] : 0f;
                }
                Group.Barrier();
                for (int e = tid; e < bq * bk; e += GroupSize)
                {
                    int r = e / bk, c = e - r * bk, row = r0 + r, j = j0 + c;
                    float s = float.NegativeInfinity;
                    if (row < rows && j <= past + row / group)
                        s = RowDot(sh, qsOff + r * hdp, sh, ksOff + c * hdp, hd) * a.Scale;
                    sh[ssOff + r * sk + c] = s;
                }
                Group.Barrier();
                OnlineSoftmaxStep(sh, tid, bq, bk, hd, sk, ssOff, msOff, lsOff, alOff, osOff, vsOff);
            }
            for (int e = tid; e < bq * hd; e += GroupSize)
            {
                int r = e / hd, d = e - r * hd, row = r0 + r;
                if (row < rows)
                {
                    int i = row / group, hh = row - i * group;
                    o[qBase + (long)i * ldq + hh * hd + d] = sh[osOff + e] / sh[lsOff + r];
                }
            }
            Group.Barrier();
        }
    }
}
