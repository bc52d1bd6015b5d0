namespace HftRuntime.Kernels.Cpu;

/// <summary>
/// Causal grouped-query attention on the CPU. Queries are processed in blocks of <see cref="QueryBlock"/> rows;
/// a block's scores against the keys it may see are formed with the GEMM, soft-maxed in place (the log-sum-exp is
/// kept), and multiplied by V. The backward pass recomputes the probabilities from the log-sum-exp, so nothing of
/// size seq × seq is stored between the passes.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    private const int QueryBlock = 64;

    private struct AttentionArgs
    {
        public float* O, Lse, Q, K, V, DQ, DK, DV, DO;
        public int* DocStart;
        public int Seq, Heads, KvHeads, HeadDim;
        public float Scale;
    }

    /// <inheritdoc/>
    /// <remarks>bf16 is ignored: the CPU back-end (the reference) computes attention in fp32.</remarks>
    protected override void AttentionForwardCore(Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16)
    {
        var a = new AttentionArgs
        {
            O = F(o), Lse = F(lse), Q = F(q), K = F(k), V = F(v), DocStart = docStart.IsEmpty ? null : I(docStart),
            Seq = seq, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, Scale = scale,
        };
        CheckDocStart(a.DocStart, batch, seq);
        _pool.For(batch * heads, 1, &AttentionForwardHeads, &a);
    }

    /// <inheritdoc/>
    /// <remarks>bf16 is ignored, as in the forward pass.</remarks>
    protected override void AttentionBackwardCore(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse,
        Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16)
    {
        var a = new AttentionArgs
        {
            O = F(o), Lse = F(lse), Q = F(q), K = F(k), V = F(v), DQ = F(dq), DK = F(dk), DV = F(dv), DO = F(dO),
            DocStart = docStart.IsEmpty ? null : I(docStart),
            Seq = seq, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, Scale = scale,
        };
        CheckDocStart(a.DocStart, batch, seq);
        // One task per (sequence, kv head): it owns that head's dK and dV, so no two threads add to the same rows.
        _pool.For(batch * kvHeads, 1, &AttentionBackwardGroups, &a);
    }

    private static void CheckDocStart(int* docStart, int batch, int seq)
    {
        if (docStart == null) return;
        for (int i = 0; i < batch * seq; i++)
        {
            int t = i % seq;
            if (docStart[i] < 0 || docStart[i] > t)
                throw new ArgumentOutOfRangeException(nameof(docStart), docStart[i], $"docStart at row {i} must lie in [0, {t}]");
        }
    }

    /// <summary>First key position visible to query t of sequence b (inclusive).</summary>
    private static int FirstKey(AttentionArgs* a, int b, int t) => a->DocStart == null ? 0 : a->DocStart[b * a->Seq + t];

    private static void AttentionForwardHeads(void* p, int s, int e)
    {
        var a = (AttentionArgs*)p;
        int seq = a->Seq, hd = a->HeadDim, group = a->Heads / a->KvHeads;
        int ldq = a->Heads * hd, ldk = a->KvHeads * hd;
        float* scores = ScratchBuffer.Get((long)QueryBlock * seq);
        for (int task = s; task < e; task++)
        {
            int b = task / a->Heads, h = task % a->Heads, g = h / group;
            float* qh = a->Q + (long)b * seq * ldq + h * hd, oh = a->O + (long)b * seq * ldq + h * hd;
            float* kh = a->K + (long)b * seq * ldk + g * hd, vh = a->V + (long)b * seq * ldk + g * hd;
            float* lse = a->Lse + ((long)b * a->Heads + h) * seq;
            for (int i0 = 0; i0 < seq; i0 += QueryBlock)
            {
                int rows = Math.Min(QueryBlock, seq - i0), keys = i0 + rows;
                CpuGemm.Gemm(null, rows, keys, hd, a->Scale, qh + (long)i0 * ldq, ldq, false, kh, ldk, true, scores, keys, false);
                for (int r = 0; r < rows; r++)
                {
                    int t = i0 + r, j0 = FirstKey(a, b, t);
                    var row = new Span<float>(scores + (long)r * keys, keys);
                    row[..j0].Clear();
                    row[(t + 1)..].Clear();
                    var live = row[j0..(t + 1)];
                    float max = System.Numerics.Tensors.TensorPrimitives.Max(live);
                    System.Numerics.Tensors.TensorPrimitives.Subtract(live, max, live);
                    System.Numerics.Tensors.TensorPrimitives.Exp(live, live);
                    float sum = System.Numerics.Tensors.TensorPrimitives.Sum(live);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(live, 1f / sum, live);
                    lse[t] = max + MathF.Log(sum);
                }
                CpuGemm.Gemm(null, rows, hd, keys, 1f, scores, keys, false, vh, ldk, false, oh + (long)i0 * ldq, ldq, false);
            }
        }
    }

    private static void AttentionBackwardGroups(void* p, int s, int e)
    {
        var a = (AttentionArgs*)p;
        int seq = a->Seq, hd = a->HeadDim, group = a->Heads / a->KvHeads;
        int ldq = a->Heads * hd, ldk = a->KvHeads * hd;
        float* probs = ScratchBuffer.Get(2L * QueryBlock * seq + QueryBlock);
        float* dprobs = probs + (long)QueryBlock * seq;
        float* delta = dprobs + (long)QueryBlock * seq;
        for (int task = s; task < e; task++)
        {
            int b = task / a->KvHeads, g = task % a->KvHeads;
            float* kh = a->K + (long)b * seq * ldk + g * hd, vh = a->V + (long)b * seq * ldk + g * hd;
            float* dkh = a->DK + (long)b * seq * ldk + g * hd, dvh = a->DV + (long)b * seq * ldk + g * hd;
            for (int t = 0; t < seq; t++)
            {
                new Span<float>(dkh + (long)t * ldk, hd).Clear();
                new Span<float>(dvh + (long)t * ldk, hd).Clear();
            }
            for (int h = g * group; h < (g + 1) * group; h++)
            {
                long qoff = (long)b * seq * ldq + h * hd;
                float* qh = a->Q + qoff, oh = a->O + qoff, doh = a->DO + qoff, dqh = a->DQ + qoff;
                float* lse = a->Lse + ((long)b * a->Heads + h) * seq;
                for (int i0 = 0; i0 < seq; i0 += QueryBlock)
                {
                    int rows = Math.Min(QueryBlock, seq - i0), keys = i0 + rows;
                    // P = exp(scale·Q Kᵀ − lse), masked; dP = dO Vᵀ; D = rowsum(dO ∘ O); dS = P ∘ (dP − D)
                    CpuGemm.Gemm(null, rows, keys, hd, a->Scale, qh + (long)i0 * ldq, ldq, false, kh, ldk, true, probs, keys, false);
                    CpuGemm.Gemm(null, rows, keys, hd, 1f, doh + (long)i0 * ldq, ldq, false, vh, ldk, true, dprobs, keys, false);
                    for (int r = 0; r < rows; r++)
                    {
                        int t = i0 + r, j0 = FirstKey(a, b, t);
                        var pr = new Span<float>(probs + (long)r * keys, keys);
                        var dpr = new Span<float>(dprobs + (long)r * keys, keys);
                        pr[..j0].Clear(); pr[(t + 1)..].Clear();
                        var live = pr[j0..(t + 1)];
                        System.Numerics.Tensors.TensorPrimitives.Subtract(live, lse[t], live);
                        System.Numerics.Tensors.TensorPrimitives.Exp(live, live);
                        float d = System.Numerics.Tensors.TensorPrimitives.Dot(
                            new ReadOnlySpan<float>(doh + (long)t * ldq, hd), new ReadOnlySpan<float>(oh + (long)t * ldq, hd));
                        System.Numerics.Tensors.TensorPrimitives.Subtract(dpr, d, dpr);
                        System.Numerics.Tensors.TensorPrimitives.Multiply(dpr, pr, dpr);
                    }
                    // dQ = scale·dS K; dK += scale·dSᵀ Q; dV += Pᵀ dO
                    CpuGemm.Gemm(null, rows, hd, keys, a->Scale, dprobs, keys, false, kh, ldk, false, dqh + (long)i0 * ldq, ldq, false);
                    CpuGemm.Gemm(null, keys, hd, rows, a->Scale, dprobs, keys, true, qh + (long)i0 * ldq, ldq, false, dkh, ldk, true);
                    CpuGemm.Gemm(null, keys, hd, rows, 1f, probs, keys, true, doh + (long)i0 * ldq, ldq, false, dvh, ldk, true);
                }
            }
        }
    }
}
