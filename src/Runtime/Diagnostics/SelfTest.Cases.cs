using System.Globalization;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;

namespace HftRuntime.Runtime.Diagnostics;

/// <summary>The self-test's cases: every operation on small odd shapes, and the 134M model's training shapes.</summary>
public static partial class SelfTest
{
    private static readonly SelfTestCase[] AllCases = BuildCases().ToArray();

    private static IEnumerable<SelfTestCase> BuildCases()
    {
        int seed = 1;
        // Small shapes: every operation, odd sizes.
        yield return Elementwise(100_003, seed++);
        yield return Reductions(100_003, large: false, seed++);
        yield return Embedding(37, 65, 101, large: false, seed++);
        yield return RmsNorm(37, 65, large: false, seed++);
        yield return Rope(13, 3, 10, 17, large: false, seed++);
        foreach (var (b, t, h, kv, hd, doc) in new[] { (1, 1, 2, 1, 8, false), (2, 5, 4, 2, 6, false), (1, 70, 4, 2, 16, true), (2, 33, 3, 3, 64, false), (1, 37, 2, 2, 128, true) })
            yield return Attention(b, t, h, kv, hd, doc, large: false, seed++);
        // Tensor-core attention (bf16 operands; head dimension 64): tiles of 64 rows with ragged ends, GQA, documents.
        foreach (var (b, t, h, kv, doc) in new[] { (1, 1, 2, 1, false), (2, 150, 4, 2, true), (1, 200, 2, 2, false) })
            yield return Attention(b, t, h, kv, 64, doc, large: false, seed++, bf16: true);
        foreach (var (b, qn, keys, rows, h, kv, hd) in new[] { (2, 1, 1, 4, 2, 1, 8), (3, 1, 37, 40, 4, 2, 6), (2, 1, 70, 70, 8, 2, 64), (1, 33, 33, 41, 3, 3, 16), (2, 5, 29, 31, 4, 2, 128) })
            yield return AttentionDecode(b, qn, keys, rows, h, kv, hd, large: false, seed++);
        yield return SwiGlu(1001, large: false, seed++);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (17, 33, 65), (65, 31, 129), (130, 257, 40) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    foreach (bool accumulate in new[] { false, true })
                        yield return MatMul(m, n, k, ta, tb, accumulate, large: false, seed++);
        yield return MatMul(65, 31, 129, true, false, accumulate: true, large: false, seed++, forceSplit: 3);
        yield return MatMul(40, 70, 1000, false, true, accumulate: false, large: false, seed++, forceSplit: 4);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (17, 33, 65), (65, 31, 129), (130, 257, 40) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    yield return MatMul(m, n, k, ta, tb, accumulate: ta, large: false, seed++, bf16: true);
        // Summed products (the backward pass's input gradients): parts of different k, fp32 and bf16, written and added to.
        yield return MatMulSum(17, 33, [65, 31, 7], accumulate: false, bf16: false, large: false, seed++);
        yield return MatMulSum(40, 70, [64, 128, 9], accumulate: true, bf16: true, large: false, seed++);
        yield return MatMulSwiGlu(33, 40, 70, large: false, seed++);
        yield return MatMulRope(37, 3, 64, 50, 20, large: false, seed++);
        yield return CrossEntropy(7, 11, large: false, seed++);
        yield return CrossEntropy(13, 1000, large: false, seed++);
        yield return AdamW(5003, large: false, seed++);

        // Training shapes of the 134M model (4 × 1024 tokens), for a GPU.
        const int tokens = 4096, d = 768, f = 2048, vocab = 32000;
        yield return MatMul(1024, 1024, 1024, false, false, accumulate: false, large: true, seed++);
        yield return MatMul(tokens, d, d, false, true, accumulate: false, large: true, seed++);
        yield return MatMul(tokens, f, d, false, true, accumulate: false, large: true, seed++);
        yield return MatMul(tokens, d, f, false, true, accumulate: false, large: true, seed++);
        yield return MatMul(tokens, vocab, d, false, true, accumulate: false, large: true, seed++);
        yield return MatMul(tokens, d, f, false, false, accumulate: false, large: true, seed++);
        yield return MatMul(tokens, d, vocab, false, false, accumulate: false, large: true, seed++);
        yield return MatMul(d, d, tokens, true, false, accumulate: true, large: true, seed++);
        yield return MatMul(f, d, tokens, true, false, accumulate: true, large: true, seed++);
        yield return MatMul(vocab, d, tokens, true, false, accumulate: true, large: true, seed++);
        yield return MatMul(4096, 4096, 4096, false, true, accumulate: false, large: true, seed++, bf16: true);
        yield return MatMul(tokens, d, d, false, true, accumulate: false, large: true, seed++, bf16: true);
        yield return MatMul(tokens, f, d, false, true, accumulate: false, large: true, seed++, bf16: true);
        yield return MatMul(tokens, d, f, false, true, accumulate: false, large: true, seed++, bf16: true);
        yield return MatMul(tokens, vocab, d, false, true, accumulate: false, large: true, seed++, bf16: true);
        yield return MatMul(tokens, d, f, false, false, accumulate: false, large: true, seed++, bf16: true);
        yield return MatMul(tokens, d, vocab, false, false, accumulate: false, large: true, seed++, bf16: true);
        yield return MatMul(d, d, tokens, true, false, accumulate: true, large: true, seed++, bf16: true);
        yield return MatMul(f, d, tokens, true, false, accumulate: true, large: true, seed++, bf16: true);
        yield return MatMul(vocab, d, tokens, true, false, accumulate: true, large: true, seed++, bf16: true);
        // The same products on the fast bf16 kernel of the ILGPU back-end (forced; it takes the NT form with full tiles
        // and leaves the other forms to the simple kernel, so those cases check the dispatch too).
        yield return MatMulBf16Variant(Bf16GemmVariant.Fast, 4096, 4096, 4096, false, true, accumulate: false, seed++);
        yield return MatMulBf16Variant(Bf16GemmVariant.Fast, tokens, d, d, false, true, accumulate: false, seed++);
        yield return MatMulBf16Variant(Bf16GemmVariant.Fast, tokens, f, d, false, true, accumulate: false, seed++);
        yield return MatMulBf16Variant(Bf16GemmVariant.Fast, tokens, d, f, false, true, accumulate: false, seed++);
        yield return MatMulBf16Variant(Bf16GemmVariant.Fast, tokens, vocab, d, false, true, accumulate: false, seed++);
        yield return MatMulBf16Variant(Bf16GemmVariant.Fast, tokens, d, f, false, false, accumulate: false, seed++);
        yield return MatMulBf16Variant(Bf16GemmVariant.Fast, d, d, tokens, true, false, accumulate: true, seed++);
        // And on each PTX kernel (forced: wgmma with cp.async or TMA loads and warp-specialized on sm_90 only, mma.sync on
        // compute capability 8.0 and later, the simple kernel elsewhere): every form of the training shapes.
        foreach (var variant in IlgpuBackend.PtxVariants)
        {
            yield return MatMulBf16Variant(variant, 4096, 4096, 4096, false, true, accumulate: false, seed++);
            yield return MatMulBf16Variant(variant, tokens, d, d, false, true, accumulate: false, seed++);
            yield return MatMulBf16Variant(variant, tokens, f, d, false, true, accumulate: false, seed++);
            yield return MatMulBf16Variant(variant, tokens, vocab, d, false, true, accumulate: false, seed++);
            yield return MatMulBf16Variant(variant, tokens, d, f, false, false, accumulate: false, seed++);
            yield return MatMulBf16Variant(variant, tokens, d, vocab, false, false, accumulate: false, seed++);
            yield return MatMulBf16Variant(variant, d, d, tokens, true, false, accumulate: true, seed++);
            yield return MatMulBf16Variant(variant, vocab, d, tokens, true, false, accumulate: true, seed++);
            // The input gradients through q, k, v and through gate, up, summed (one launch on the warp-specialized kernel).
            yield return MatMulSum(tokens, d, [d, d, d], accumulate: false, bf16: true, large: true, seed++, variant);
            yield return MatMulSum(tokens, d, [f, f], accumulate: false, bf16: true, large: true, seed++, variant);
            // The MLP's gate and up products with h (one launch on the warp-specialized kernel).
            yield return MatMulSwiGlu(tokens, f, d, large: true, seed++, variant);
            // The q (or k) projection with RoPE (one launch on the warp-specialized kernel).
            yield return MatMulRope(tokens, 12, 64, d, 1024, large: true, seed++, variant);
        }
        yield return Attention(4, 1024, 12, 12, 64, false, large: true, seed++);
        yield return Attention(4, 1024, 12, 4, 64, true, large: true, seed++);
        yield return Attention(4, 1024, 12, 12, 64, false, large: true, seed++, bf16: true);
        yield return Attention(4, 1024, 12, 4, 64, true, large: true, seed++, bf16: true);
        yield return AttentionDecode(8, 1, 1023, 1024, 12, 12, 64, large: true, seed++);
        yield return AttentionDecode(1, 1024, 1024, 1024, 12, 4, 64, large: true, seed++);
        yield return RmsNorm(tokens, d, large: true, seed++);
        yield return SwiGlu((long)tokens * f, large: true, seed++);
        yield return Embedding(tokens, d, vocab, large: true, seed++);
        yield return Rope(tokens, 12, 64, 1024, large: true, seed++);
        yield return CrossEntropy(2048, vocab, large: true, seed++);
        yield return AdamW(16 << 20, large: true, seed++);
        yield return Reductions(16 << 20, large: true, seed++);
    }

    private static SelfTestCase Elementwise(int n, int seed) => new("elementwise", S($"{n}"), false, seed, rng =>
    {
        var a = Randn(rng, n); var b = Randn(rng, n);
        return c =>
        {
            var ta = c.In(a); var tb = c.In(b);
            var copy = c.Out(n); var sum = c.Out(n); var scaled = c.Out(n); var filled = c.Out(n); var rounded = c.OutBf16(n);
            var be = c.Backend;
            return
            [
                new Step("copy", () => be.Copy(copy, ta), [copy], 0),
                new Step("to bf16", () => be.ToBf16(rounded, ta), [rounded], 0),
                new Step("add in place", () => { be.Copy(sum, ta); be.AddInPlace(sum, tb); }, [sum], 1e-7),
                new Step("scale", () => { be.Copy(scaled, tb); be.Scale(scaled, -1.75f); }, [scaled], 1e-7),
                new Step("fill", () => be.Fill(filled, 0.625f), [filled], 0),
            ];
        };
    });

    private static SelfTestCase Reductions(long n, bool large, int seed) => new("reductions", S($"{n}"), large, seed, rng =>
    {
        // b correlates with a, so the dot product is large next to Σ|a·b| and the float reference is accurate.
        var a = Randn(rng, n); var b = Randn(rng, n, 0.25);
        for (long i = 0; i < n; i++) b[i] += 0.5f * a[i];
        return c =>
        {
            var ta = c.In(a); var tb = c.In(b); var ss = c.Out(1); var dot = c.In([0.5f]);
            var be = c.Backend;
            return
            [
                new Step("sum of squares", () => be.SumSquares(ss, ta), [ss], 1e-5, 2.0 * n),
                new Step("dot (accumulate)", () => be.Dot(dot, ta, tb, accumulate: true), [dot], 1e-5, 2.0 * n),
            ];
        };
    });

    private static SelfTestCase Embedding(int n, int dim, int vocab, bool large, int seed) => new("embedding", S($"{n}x{dim} vocab {vocab}"), large, seed, rng =>
    {
        var table = Randn(rng, (long)vocab * dim); var ids = RandInt(rng, n, vocab); ids[n - 1] = ids[0];
        var dy = Randn(rng, (long)n * dim); var dTable0 = Randn(rng, (long)vocab * dim, 0.1);
        return c =>
        {
            var tt = c.In(table); var ti = c.In(ids); var y = c.Out((long)n * dim); var tdy = c.In(dy); var dTable = c.In(dTable0);
            var be = c.Backend;
            return
            [
                new Step("embedding forward", () => be.EmbeddingForward(y, ti, tt, n, dim, vocab), [y], 0),
                new Step("embedding backward", () => be.EmbeddingBackward(dTable, ti, tdy, n, dim, vocab), [dTable], 1e-6),
            ];
        };
    });

    private static SelfTestCase RmsNorm(int n, int dim, bool large, int seed) => new("rmsnorm", S($"{n}x{dim}"), large, seed, rng =>
    {
        var x = Randn(rng, (long)n * dim); var w = Randn(rng, dim, 0.5); var dy = Randn(rng, (long)n * dim);
        var dx0 = Randn(rng, (long)n * dim); var dw0 = Randn(rng, dim);
        return c =>
        {
            var tx = c.In(x); var tw = c.In(w); var tdy = c.In(dy); var y = c.Out((long)n * dim); var rstd = c.Out(n);
            var dx = c.In(dx0); var dw = c.In(dw0); var dxFrozen = c.In(dx0);
            var xSum = c.In(x); var y16 = c.OutBf16((long)n * dim); var rstd2 = c.Out(n);
            var be = c.Backend;
            return
            [
                new Step("rmsnorm forward", () => be.RmsNormForward(y, rstd, tx, tw, n, dim, 1e-5f), [y, rstd], 1e-5),
                // Fused: x += dy as the residual, the output only in bf16 (one bf16 step of tolerance, 2⁻⁸).
                new Step("rmsnorm forward (residual, bf16)", () => { be.Copy(xSum, tx); be.RmsNormForward(default, rstd2, xSum, tw, n, dim, 1e-5f, tdy, y16); },
                    [xSum, rstd2, y16], 4e-3),
                new Step("rmsnorm backward", () => be.RmsNormBackward(dx, dw, tdy, tx, tw, rstd, n, dim), [dx, dw], 1e-5),
                new Step("rmsnorm backward (frozen w)", () => be.RmsNormBackward(dxFrozen, default, tdy, tx, tw, rstd, n, dim), [dxFrozen], 1e-5),
            ];
        };
    });

    /// <summary>RoPE tables [maxPos, hd/2] with base 10000.</summary>
    private static (float[] Cos, float[] Sin) RopeTables(int maxPos, int hd)
    {
        int half = hd / 2;
        var cos = new float[maxPos * half]; var sin = new float[maxPos * half];
        for (int p = 0; p < maxPos; p++)
            for (int j = 0; j < half; j++)
            {
                double angle = p / Math.Pow(10000.0, 2.0 * j / hd);
                cos[p * half + j] = (float)Math.Cos(angle);
                sin[p * half + j] = (float)Math.Sin(angle);
            }
        return (cos, sin);
    }

    private static SelfTestCase Rope(int n, int heads, int hd, int maxPos, bool large, int seed) => new("rope", S($"{n}x{heads}x{hd}"), large, seed, rng =>
    {
        var (cos, sin) = RopeTables(maxPos, hd);
        var x = Randn(rng, (long)n * heads * hd); var pos = RandInt(rng, n, maxPos);
        return c =>
        {
            var tc = c.In(cos); var ts = c.In(sin); var tp = c.In(pos);
            var fwd = c.Out((long)n * heads * hd); var inv = c.Out((long)n * heads * hd); var tx = c.In(x);
            var both = c.Out((long)n * heads * hd); var both16 = c.OutBf16((long)n * heads * hd);
            var x16 = c.InBf16(x); var inPlace16 = c.OutBf16((long)n * heads * hd);
            var be = c.Backend;
            return
            [
                new Step("rope", () => { be.Copy(fwd, tx); be.Rope(fwd, tp, tc, ts, n, heads, hd, maxPos, inverse: false); }, [fwd], 1e-6),
                new Step("rope inverse", () => { be.Copy(inv, tx); be.Rope(inv, tp, tc, ts, n, heads, hd, maxPos, inverse: true); }, [inv], 1e-6),
                new Step("rope (bf16)", () => { be.Copy(both, tx); be.Rope(both, tp, tc, ts, n, heads, hd, maxPos, inverse: false, xBf16: both16); }, [both, both16], 4e-3),
                // In place on bf16 (the q and k products' bf16 outputs).
                new Step("rope (bf16 in place)", () => { be.Copy(inPlace16, x16); be.Rope(inPlace16, tp, tc, ts, n, heads, hd, maxPos, inverse: false); }, [inPlace16], 4e-3),
            ];
        };
    });

    /// <summary>
    /// Attention forward and backward; bf16: with bf16 products (the tensor-core kernels for head dimension 64 on the
    /// ILGPU back-end), against the CPU back-end's fp32, within the bf16 tolerances (unit roundoff 2⁻⁹: 1e-2 forward,
    /// 2e-2 for the gradients, which round dO and dS as well).
    /// </summary>
    private static SelfTestCase Attention(int batch, int seq, int heads, int kvHeads, int hd, bool packed, bool large, int seed, bool bf16 = false) =>
        new("attention", S($"b{batch} t{seq} h{heads}/{kvHeads} d{hd}{(packed ? " docs" : "")}{(bf16 ? " bf16" : "")}"), large, seed, rng =>
        {
            long nq = (long)batch * seq * heads * hd, nk = (long)batch * seq * kvHeads * hd;
            var q = Randn(rng, nq); var k = Randn(rng, nk); var v = Randn(rng, nk); var dO = Randn(rng, nq);
            int[]? doc = null;
            if (packed)
            {
                doc = new int[batch * seq];
                for (int b = 0; b < batch; b++)
                {
                    int start = 0;
                    for (int t = 0; t < seq; t++)
                    {
                        if (t > 0 && rng.Next(Math.Max(2, seq / 4)) == 0) start = t;
                        doc[b * seq + t] = start;
                    }
                }
            }
            float scale = 1f / MathF.Sqrt(hd);
            // Causal: half of the seq² score matrix; QKᵀ and PV forward, five products backward.
            double fwdFlops = 2.0 * 2 * batch * heads * ((double)seq * (seq + 1) / 2) * hd;
            // The tensor-core cases also run the backward pass with RoPE after it (the model's order): positions t mod 100.
            bool withRope = bf16 && hd == 64;
            const int maxPos = 100;
            var (cos, sin) = withRope ? RopeTables(maxPos, hd) : ([], []);
            var pos = withRope ? Enumerable.Range(0, batch * seq).Select(i => i % seq % maxPos).ToArray() : [];
            return c =>
            {
                var tq = c.In(q); var tk = c.In(k); var tv = c.In(v); var tdo = c.In(dO);
                var td = doc is null ? default : c.In(doc);
                var o = c.Out(nq); var lse = c.Out((long)batch * heads * seq);
                var dq = c.Out(nq); var dk = c.Out(nk); var dv = c.Out(nk);
                var be = c.Backend;
                var steps = new List<Step>
                {
                    new Step("attention forward", () => be.AttentionForward(o, lse, tq, tk, tv, td, batch, seq, heads, kvHeads, hd, scale, bf16), [o, lse],
                        bf16 ? 1e-2 : 1e-5, fwdFlops),
                    // With one token the softmax is over a single key: dq and dk vanish (rounding noise only), so
                    // the three gradients are compared as one vector there.
                    new Step("attention backward", () => be.AttentionBackward(dq, dk, dv, tdo, o, lse, tq, tk, tv, td, batch, seq, heads, kvHeads, hd, scale, bf16),
                        [dq, dk, dv], bf16 ? 2e-2 : 5e-5, 2.5 * fwdFlops, Combined: seq == 1),
                };
                if (!withRope) return [.. steps];
                var rq = c.Out(nq); var rk = c.Out(nk); var rv = c.Out(nk);
                var tp = c.In(pos); var tc = c.In(cos); var ts = c.In(sin);
                // Fused where the back-end fuses it (the tensor-core kernels' stores), the separate operations elsewhere
                // (the CPU reference).
                steps.Add(new Step("attention backward + rope", () =>
                {
                    if (be.FusesAttentionBackwardRope(hd))
                    {
                        be.AttentionBackwardRope(rq, rk, rv, tdo, o, lse, tq, tk, tv, td, batch, seq, heads, kvHeads, hd, scale, tp, tc, ts, maxPos);
                        return;
                    }
                    be.AttentionBackward(rq, rk, rv, tdo, o, lse, tq, tk, tv, td, batch, seq, heads, kvHeads, hd, scale, bf16);
                    be.Rope(rq, tp, tc, ts, batch * seq, heads, hd, maxPos, inverse: true);
                    be.Rope(rk, tp, tc, ts, batch * seq, kvHeads, hd, maxPos, inverse: true);
                }, [rq, rk, rv], 2e-2, 2.5 * fwdFlops, Combined: seq == 1));
                return [.. steps];
            };
        });

    private static SelfTestCase AttentionDecode(int batch, int queries, int keys, int cacheRows, int heads, int kvHeads, int hd, bool large, int seed) =>
        new("attention decode", S($"b{batch} q{queries} k{keys}/{cacheRows} h{heads}/{kvHeads} d{hd}"), large, seed, rng =>
        {
            long nq = (long)batch * queries * heads * hd, nk = (long)batch * cacheRows * kvHeads * hd;
            var q = Randn(rng, nq); var k = Randn(rng, nk); var v = Randn(rng, nk);
            // Cache rows past the keys are never written by a generator: poisoned, they must never be read.
            int kvd = kvHeads * hd;
            for (long b = 0; b < batch; b++)
                for (long j = keys; j < cacheRows; j++)
                    for (int x = 0; x < kvd; x++) k[(b * cacheRows + j) * kvd + x] = v[(b * cacheRows + j) * kvd + x] = float.NaN;
            float scale = 1f / MathF.Sqrt(hd);
            int past = keys - queries;
            double flops = 2.0 * 2 * batch * heads * ((double)queries * past + (double)queries * (queries + 1) / 2) * hd;
            return c =>
            {
                var tq = c.In(q); var tk = c.In(k); var tv = c.In(v); var o = c.Out(nq);
                var be = c.Backend;
                return [new Step("attention decode", () => be.AttentionDecode(o, tq, tk, tv, batch, queries, keys, cacheRows, heads, kvHeads, hd, scale), [o], 1e-5, flops)];
            };
        });

    private static SelfTestCase SwiGlu(long n, bool large, int seed) => new("swiglu", S($"{n}"), large, seed, rng =>
    {
        var g = Randn(rng, n, 2); var u = Randn(rng, n); var dh = Randn(rng, n);
        return c =>
        {
            var tg = c.In(g); var tu = c.In(u); var tdh = c.In(dh); var h = c.Out(n);
            var dg = c.Out(n); var du = c.Out(n); var h16 = c.OutBf16(n);
            var g16 = c.OutBf16(n); var u16 = c.OutBf16(n); var dg16 = c.OutBf16(n); var du16 = c.OutBf16(n);
            var hIn16 = c.OutBf16(n); var dh16 = c.InBf16(dh); var dgIn16 = c.OutBf16(n); var duIn16 = c.OutBf16(n);
            var be = c.Backend;
            return
            [
                new Step("swiglu forward", () => be.SwiGluForward(h, tg, tu), [h], 1e-5),
                new Step("swiglu forward (bf16)", () => be.SwiGluForward(default, tg, tu, h16, g16, u16), [h16, g16, u16], 4e-3),
                // In place, as the model runs it: dGate over gate, dUp over up (copies keep the inputs for the timing runs).
                new Step("swiglu backward (in place)", () => { be.Copy(dg, tg); be.Copy(du, tu); be.SwiGluBackward(dg, du, tdh, dg, du); }, [dg, du], 1e-5),
                // bf16: from the rounded inputs, gradients rounded (a last-bit difference of σ may move a gradient by one bf16 step).
                new Step("swiglu backward (bf16)", () => { be.Copy(dg16, g16); be.Copy(du16, u16); be.SwiGluBackward(dg16, du16, tdh, dg16, du16); },
                    [dg16, du16], 4e-3),
                // From the products' bf16 outputs: bf16 gate and up forward, a bf16 dh backward.
                new Step("swiglu forward (bf16 in)", () => be.SwiGluForward(default, g16, u16, hIn16), [hIn16], 4e-3),
                new Step("swiglu backward (bf16 dh)", () => { be.Copy(dgIn16, g16); be.Copy(duIn16, u16); be.SwiGluBackward(dgIn16, duIn16, dh16, dgIn16, duIn16); },
                    [dgIn16, duIn16], 4e-3),
            ];
        };
    });

    private static SelfTestCase MatMul(int m, int n, int k, bool transA, bool transB, bool accumulate, bool large, int seed, int forceSplit = 0, bool bf16 = false) =>
        new(bf16 ? "matmul bf16" : "matmul", S($"{m}x{n}x{k} {(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')}{(accumulate ? " acc" : "")}{(forceSplit > 0 ? $" split{forceSplit}" : "")}"),
            large, seed, rng =>
            {
                var a = Randn(rng, (long)m * k); var b = Randn(rng, (long)k * n); var c0 = accumulate ? Randn(rng, (long)m * n) : null;
                return c =>
                {
                    // bf16: both back-ends multiply the same bf16 values exactly and add in fp32; only the order differs.
                    var ta = bf16 ? c.InBf16(a) : c.In(a); var tb = bf16 ? c.InBf16(b) : c.In(b);
                    var tc = c0 is null ? c.Out((long)m * n) : c.In(c0);
                    var be = c.Backend;
                    double tolerance = k >= 2048 ? 5e-5 : 1e-5, flops = 2.0 * m * n * k;
                    var step = new Step(bf16 ? "matmul bf16" : "matmul", () => be.MatMul(tc, ta, tb, m, n, k, transA, transB, accumulate), [tc], tolerance, flops);
                    if (!bf16 || accumulate) return [step];
                    // The same product stored in bf16 (the model's gate, up, v, dO and dh): within one bf16 rounding.
                    var tc16 = c.OutBf16((long)m * n);
                    return [step, new Step("matmul bf16 → bf16", () => be.MatMul(tc16, ta, tb, m, n, k, transA, transB, accumulate: false), [tc16], 4e-3, flops)];
                };
            },
            forceSplit > 0 ? be => { if (be is IlgpuBackend ib) ib.ForceSplitK = forceSplit; } : null,
            forceSplit > 0 ? be => { if (be is IlgpuBackend ib) ib.ForceSplitK = 0; } : null);

    /// <summary>
    /// A large bf16 product with <see cref="IlgpuBackend.Bf16GemmVariant"/> forced to <paramref name="variant"/> on an
    /// ILGPU device, alone (no fallback to another PTX kernel; both restored afterwards); other back-ends run it as a
    /// plain bf16 product.
    /// </summary>
    private static SelfTestCase MatMulBf16Variant(Bf16GemmVariant variant, int m, int n, int k, bool transA, bool transB, bool accumulate, int seed)
    {
        var forced = Forced(variant);
        string name = "matmul bf16 " + IlgpuBackend.NameOf(variant);
        return new(name, S($"{m}x{n}x{k} {(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')}{(accumulate ? " acc" : "")}"),
            large: true, seed, rng =>
            {
                var a = Randn(rng, (long)m * k); var b = Randn(rng, (long)k * n); var c0 = accumulate ? Randn(rng, (long)m * n) : null;
                return c =>
                {
                    var ta = c.InBf16(a); var tb = c.InBf16(b);
                    var tc = c0 is null ? c.Out((long)m * n) : c.In(c0);
                    var be = c.Backend;
                    return [new Step(name, () => be.MatMul(tc, ta, tb, m, n, k, transA, transB, accumulate), [tc], k >= 2048 ? 5e-5 : 1e-5, 2.0 * m * n * k)];
                };
            },
            forced.Prepare, forced.Restore);
    }

    /// <summary>
    /// c (+)= Σ op(aᵢ)·op(bᵢ) (NN, as the backward pass's input gradients) over parts with the k of
    /// <paramref name="parts"/>; with <paramref name="variant"/>, on that bf16 kernel of an ILGPU device (restored
    /// afterwards; other back-ends run it as a plain sum).
    /// </summary>
    private static SelfTestCase MatMulSum(int m, int n, int[] parts, bool accumulate, bool bf16, bool large, int seed, Bf16GemmVariant? variant = null)
    {
        var forced = Forced(variant);
        string name = (bf16 ? "matmul bf16" : "matmul") + (variant is { } v ? " " + IlgpuBackend.NameOf(v) : "") + " sum";
        return new(name, S($"{m}x{n}x({string.Join("+", parts)}) NN{(accumulate ? " acc" : "")}"), large, seed, rng =>
        {
            var operands = parts.Select(k => (A: Randn(rng, (long)m * k), B: Randn(rng, (long)k * n), K: k)).ToArray();
            var c0 = accumulate ? Randn(rng, (long)m * n) : null;
            return c =>
            {
                var list = operands.Select(o => new MatMulPart(bf16 ? c.InBf16(o.A) : c.In(o.A), bf16 ? c.InBf16(o.B) : c.In(o.B), o.K)).ToArray();
                var tc = c0 is null ? c.Out((long)m * n) : c.In(c0);
                var be = c.Backend;
                int k = parts.Sum();
                return [new Step(name, () => be.MatMulSum(tc, m, n, transA: false, transB: false, accumulate, list), [tc], k >= 2048 ? 5e-5 : 1e-5, 2.0 * m * n * k)];
            };
        },
        forced.Prepare, forced.Restore);
    }

    /// <summary>
    /// gate = x·W_gateᵀ, up = x·W_upᵀ and h = silu(gate)·up in bf16 in one call; with <paramref name="variant"/>, on that
    /// bf16 kernel of an ILGPU device alone (restored afterwards).
    /// </summary>
    private static SelfTestCase MatMulSwiGlu(int n, int f, int d, bool large, int seed, Bf16GemmVariant? variant = null)
    {
        // The one launch is not the default (IlgpuBackend.SwiGluGemmByDefault): turned on for the case, so that it stays checked.
        var forced = Forced(variant, be => { bool saved = be.SwiGluGemm; be.SwiGluGemm = true; return () => be.SwiGluGemm = saved; });
        string name = "matmul bf16" + (variant is { } v ? " " + IlgpuBackend.NameOf(v) : "") + " swiglu";
        return new(name, S($"{n}x{f}x{d} NT"), large, seed, rng =>
        {
            var x = Randn(rng, (long)n * d); var wg = Randn(rng, (long)f * d); var wu = Randn(rng, (long)f * d);
            return c =>
            {
                var tx = c.InBf16(x); var twg = c.InBf16(wg); var twu = c.InBf16(wu);
                var gate = c.OutBf16((long)n * f); var up = c.OutBf16((long)n * f); var h = c.OutBf16((long)n * f);
                var be = c.Backend;
                // bf16 outputs: within one rounding (h from the rounded gate and up, so a gate one step apart moves it too).
                return [new Step(name, () => be.MatMulSwiGlu(h, gate, up, tx, twg, twu, n, f, d), [gate, up, h], 8e-3, 4.0 * n * f * d)];
            };
        },
        forced.Prepare, forced.Restore);
    }

    /// <summary>
    /// The attention's q projection with RoPE in one call (positions random); with
    /// <paramref name="variant"/>, on that bf16 kernel of an ILGPU device alone.
    /// </summary>
    private static SelfTestCase MatMulRope(int n, int heads, int headDim, int d, int maxPositions, bool large, int seed, Bf16GemmVariant? variant = null)
    {
        var forced = Forced(variant);
        // "rotated", not "rope": --only rope keeps selecting the RoPE kernel's own cases.
        string name = "matmul bf16" + (variant is { } v ? " " + IlgpuBackend.NameOf(v) : "") + " rotated";
        int width = heads * headDim;
        return new(name, S($"{n}x{width}x{d} NT"), large, seed, rng =>
        {
            var x = Randn(rng, (long)n * d); var w = Randn(rng, (long)width * d);
            var positions = Enumerable.Range(0, n).Select(_ => rng.Next(maxPositions)).ToArray();
            var cos = Randn(rng, (long)maxPositions * headDim / 2); var sin = Randn(rng, (long)maxPositions * headDim / 2);
            return c =>
            {
                var tx = c.InBf16(x); var tw = c.InBf16(w); var tp = c.In(positions); var tc = c.In(cos); var ts = c.In(sin);
                var q = c.OutBf16((long)n * width);
                var be = c.Backend;
                // bf16 output rotated: within one rounding (the fused launch rounds once, the separate passes twice).
                return [new Step(name, () => be.MatMulRope(q, tx, tw, n, width, d, tp, tc, ts, heads, headDim, maxPositions), [q], 8e-3, 2.0 * n * width * d)];
            };
        }, forced.Prepare, forced.Restore);
    }

    /// <summary>
    /// A case's set-up and tear-down that select <paramref name="variant"/> alone (no fallback to another PTX kernel) on
    /// an ILGPU device and restore the selection afterwards; none without a variant or on other back-ends.
    /// <paramref name="also"/> changes more for the case and returns what undoes it.
    /// </summary>
    private static (Action<Backend>? Prepare, Action<Backend>? Restore) Forced(Bf16GemmVariant? variant, Func<IlgpuBackend, Action>? also = null)
    {
        if (variant is not { } selected) return (null, null);
        var saved = Bf16GemmVariant.Simple;
        Action? undo = null;
        return (be =>
            {
                if (be is not IlgpuBackend ib) return;
                saved = ib.Bf16GemmVariant; ib.Bf16GemmVariant = selected; ib.PtxFallback = false;
                undo = also?.Invoke(ib);
            },
            be => { if (be is IlgpuBackend ib) { ib.Bf16GemmVariant = saved; ib.PtxFallback = true; undo?.Invoke(); undo = null; } });
    }

    private static SelfTestCase CrossEntropy(int n, int vocab, bool large, int seed) => new("cross-entropy", S($"{n}x{vocab}"), large, seed, rng =>
    {
        var logits = Randn(rng, (long)n * vocab, 3); var targets = RandInt(rng, n, vocab); targets[n / 2] = Backend.IgnoreIndex;
        var scale = Randn(rng, n);
        return c =>
        {
            var tl = c.In(logits); var tg = c.In(logits); var tt = c.In(targets); var ts = c.In(scale);
            var loss = c.Out(n); var loss2 = c.Out(n); var loss3 = c.Out(n); var g16 = c.OutBf16((long)n * vocab);
            var l16 = c.InBf16(logits); var inPlace16 = c.OutBf16((long)n * vocab); var loss4 = c.Out(n);
            var be = c.Backend;
            return
            [
                new Step("cross-entropy loss", () => be.CrossEntropy(tl, tt, default, loss, n, vocab, writeGradient: false), [loss], 1e-5),
                new Step("cross-entropy loss+grad", () => be.CrossEntropy(tg, tt, ts, loss2, n, vocab, writeGradient: true), [loss2, tg], 1e-5),
                new Step("cross-entropy loss+bf16 grad", () => be.CrossEntropy(tl, tt, ts, loss3, n, vocab, writeGradient: true, gradBf16: g16), [loss3, g16], 4e-3),
                // bf16 logits (the head product's bf16 output), their gradient in place (copies keep the input for the timing runs).
                new Step("cross-entropy bf16 logits+grad", () => { be.Copy(inPlace16, l16); be.CrossEntropy(inPlace16, tt, ts, loss4, n, vocab, writeGradient: true); },
                    [loss4, inPlace16], 4e-3),
            ];
        };
    });

    private static SelfTestCase AdamW(int count, bool large, int seed) => new("adamw", S($"{count}"), large, seed, rng =>
    {
        int third = count / 3;
        int[] segments = [0, third, 1, third + 7, third, 0, 2 * third + 11, count - (2 * third + 11), 1];
        var p = Randn(rng, count); var g = Randn(rng, count, 0.1); var m = Randn(rng, count, 0.01);
        var v = Randn(rng, count, 0.01).Select(x => x * x).ToArray();
        var step = new AdamWStep(1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
        return c =>
        {
            var tp = c.In(p); var tg = c.In(g); var tm = c.In(m); var tv = c.In(v); var ts = c.In(segments); var gs = c.In([0.75f]);
            var tp2 = c.In(p); var tm2 = c.In(m); var tv2 = c.In(v);
            var tp3 = c.In(p); var tm3 = c.In(m); var tv3 = c.In(v); var p16 = c.OutBf16(count);
            var be = c.Backend;
            return
            [
                new Step("adamw (grad scale)", () => be.AdamW(tp, tg, tm, tv, ts, 3, step, gs), [tp, tm, tv], 1e-6),
                // The bf16 copy is compared segment by segment (the gaps keep their NaN poison); fp32 values that differ
                // in the last bit may round to neighbouring bf16 values, so the bound is one bf16 step (2⁻⁸).
                new Step("adamw (bf16 copy)", () => be.AdamW(tp3, tg, tm3, tv3, ts, 3, step, gs, p16),
                    [tp3, p16.Slice(segments[0], segments[1]), p16.Slice(segments[3], segments[4]), p16.Slice(segments[6], segments[7])], 4e-3),
                new Step("adamw", () => be.AdamW(tp2, tg, tm2, tv2, ts, 3, step, default), [tp2, tm2, tv2], 1e-6),
            ];
        };
    });
}
