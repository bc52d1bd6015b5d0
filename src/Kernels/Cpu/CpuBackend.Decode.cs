using System.Numerics.Tensors;

namespace HftRuntime.Kernels.Cpu;

/// <summary>
/// Attention against a key/value cache (generation) on the CPU. Two shapes of work, both on the GEMM:
/// <list type="bullet">
/// <item>one query per sequence (a decode step): one task per (sequence, kv head); the queries of the heads that share
/// that kv head are adjacent in a row of q, so they form one [group, headDim] matrix and the cached keys and values
/// are read once for all of them: S = scale·Q_g·Kᵀ, softmax per row, O_g = P·V;</item>
/// <item>several queries (a prefill): one task per (sequence, head), query blocks of <see cref="QueryBlock"/> rows as
/// in <see cref="AttentionForwardCore"/>, with the causal limit shifted by the keys cached before the queries.</item>
/// </list>
/// Cache rows at or beyond a query's limit are never multiplied, so rows that were never written cannot leak in.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    private struct DecodeArgs
    {
        public float* O, Q, K, V;
        public int Queries, Keys, CacheRows, Heads, KvHeads, HeadDim;
        public float Scale;
    }

    /// <inheritdoc/>
    protected override void AttentionDecodeCore(Tensor o, Tensor q, Tensor kCache, Tensor vCache,
        int batch, int queries, int keys, int cacheRows, int heads, int kvHeads, int headDim, float scale)
    {
        var a = new DecodeArgs
        {
            O = F(o), Q = F(q), K = F(kCache), V = F(vCache),
            Queries = queries, Keys = keys, CacheRows = cacheRows, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, Scale = scale,
        };
        if (queries == 1) _pool.For(batch * kvHeads, 1, &DecodeGroups, &a);
        else _pool.For(batch * heads, 1, &DecodeHeads, &a);
    }

    /// <summary>One query per sequence: tasks are (sequence, kv head); the group's heads form one matrix.</summary>
    private static void DecodeGroups(void* p, int s, int e)
    {
        var a = (DecodeArgs*)p;
        int hd = a->HeadDim, group = a->Heads / a->KvHeads, keys = a->Keys;
        int ldq = a->Heads * hd, ldk = a->KvHeads * hd;
        float* scores = ScratchBuffer.Get((long)group * keys);
        for (int task = s; task < e; task++)
        {
            int b = task / a->KvHeads, g = task % a->KvHeads;
            float* qg = a->Q + (long)b * ldq + g * group * hd, og = a->O + (long)b * ldq + g * group * hd;
            float* kh = a->K + (long)b * a->CacheRows * ldk + g * hd, vh = a->V + (long)b * a->CacheRows * ldk + g * hd;
            CpuGemm.Gemm(null, group, keys, hd, a->Scale, qg, hd, false, kh, ldk, true, scores, keys, false);
            for (int r = 0; r < group; r++) SoftmaxInPlace(new Span<float>(scores + (long)r * keys, keys));
            CpuGemm.Gemm(null, group, hd, keys, 1f, scores, keys, false, vh, ldk, false, og, hd, false);
        }
    }

    /// <summary>Several queries per sequence: tasks are (sequence, head), in blocks of queries.</summary>
    private static void DecodeHeads(void* p, int s, int e)
    {
        var a = (DecodeArgs*)p;
        int hd = a->HeadDim, group = a->Heads / a->KvHeads, queries = a->Queries, past = a->Keys - a->Queries;
        int ldq = a->Heads * hd, ldk = a->KvHeads * hd;
        float* scores = ScratchBuffer.Get((long)QueryBlock * a->Keys);
        for (int task = s; task < e; task++)
        {
            int b = task / a->Heads, h = task % a->Heads, g = h / group;
            float* qh = a->Q + (long)b * queries * ldq + h * hd, oh = a->O + (long)b * queries * ldq + h * hd;
            float* kh = a->K + (long)b * a->CacheRows * ldk + g * hd, vh = a->V + (long)b * a->CacheRows * ldk + g * hd;
            for (int i0 = 0; i0 < queries; i0 += QueryBlock)
            {
                int rows = Math.Min(QueryBlock, queries - i0), visible = past + i0 + rows;
                CpuGemm.Gemm(null, rows, visible, hd, a->Scale, qh + (long)i0 * ldq, ldq, false, kh, ldk, true, scores, visible, false);
                for (int r = 0; r < rows; r++)
                {
                    int limit = past + i0 + r + 1;
                    var row = new Span<float>(scores + (long)r * visible, visible);
                    row[limit..].Clear();
                    SoftmaxInPlace(row[..limit]);
                }
                CpuGemm.Gemm(null, rows, hd, visible, 1f, scores, visible, false, vh, ldk, false, oh + (long)i0 * ldq, ldq, false);
            }
        }
    }

    /// <summary>Replaces a row of scores by its softmax.</summary>
    private static void SoftmaxInPlace(Span<float> live)
    {
        float max = TensorPrimitives.Max(live);
        TensorPrimitives.Subtract(live, max, live);
        TensorPrimitives.Exp(live, live);
        float sum = TensorPrimitives.Sum(live);
        TensorPrimitives.Multiply(live, 1f / sum, live);
    }
}
