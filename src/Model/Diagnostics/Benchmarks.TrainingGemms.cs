using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;

namespace HftRuntime.Model.Diagnostics;

/// <summary>One matrix product of a training step: c[m, n] = op(a)·op(b) in the step's form (NT, NN or TN).</summary>
/// <param name="Product">What it computes, e.g. "x·W_qᵀ" or "dW_down".</param>
/// <param name="M">Rows of c.</param>
/// <param name="N">Columns of c.</param>
/// <param name="K">The summed dimension.</param>
/// <param name="TransA">a is [k, m] (the weight gradient's form).</param>
/// <param name="TransB">b is [n, k] (the forward form).</param>
/// <param name="Parts">
/// For an input gradient through several weights (<see cref="Backend.MatMulSum"/>): the k of each product, summed
/// into one c (k is their sum); null for a single product.
/// </param>
public sealed record TrainingGemm(string Product, int M, int N, int K, bool TransA, bool TransB, int[]? Parts = null)
{
    /// <summary>NT (y = x·Wᵀ), NN (dx = dy·W) or TN (dW = dyᵀ·x).</summary>
    public string Form => TransA ? "TN" : TransB ? "NT" : "NN";
}

public static partial class Benchmarks
{
    /// <summary>
    /// The distinct matrix products of a training step of <paramref name="config"/> on batch × seq tokens (the loss
    /// head in chunks of LlamaModelOptions.DefaultLossChunkRows rows): each projection's forward (NT), input gradient
    /// (NN) and weight gradient (TN); products of the same shape and form are listed once, under the first name. Then
    /// the two sums of input gradients the backward pass takes as one <see cref="Backend.MatMulSum"/>: through q, k and
    /// v, and through gate and up.
    /// </summary>
    public static IReadOnlyList<TrainingGemm> TrainingGemms(LlamaConfig config, int batch, int seq)
    {
        int t = batch * seq, d = config.HiddenSize, f = config.IntermediateSize, v = config.VocabSize;
        int qd = config.NumAttentionHeads * config.HeadDim, kvd = config.NumKeyValueHeads * config.HeadDim;
        int rows = LlamaModelOptions.DefaultLossChunkRows(batch, seq, v) is int r and > 0 ? r : t;
        (string Name, int Out, int In, int Rows)[] weights =
            [("q", qd, d, t), ("k", kvd, d, t), ("v", kvd, d, t), ("o", d, qd, t), ("gate", f, d, t), ("up", f, d, t), ("down", d, f, t), ("head", v, d, rows)];
        var list = new List<TrainingGemm>();
        void Add(TrainingGemm g)
        {
            if (!list.Any(x => x.M == g.M && x.N == g.N && x.K == g.K && x.Form == g.Form)) list.Add(g);
        }
        foreach (var (name, output, input, n) in weights) Add(new($"x·W_{name}ᵀ", n, output, input, false, true));
        foreach (var (name, output, input, n) in weights) Add(new($"dy·W_{name}", n, input, output, false, false));
        foreach (var (name, output, input, n) in weights) Add(new($"dW_{name}", output, input, n, true, false));
        Add(new("dq·W_q + dk·W_k + dv·W_v", t, d, qd + 2 * kvd, false, false, [qd, kvd, kvd]));
        Add(new("dgate·W_gate + dup·W_up", t, d, 2 * f, false, false, [f, f]));
        return list;
    }

    /// <summary>
    /// Each bf16 kernel of the ILGPU CUDA back-end on each product of a step of the step model (<see cref="TrainingGemms"/>):
    /// entries {impl, product, form, m, n, k, tflops} (or error), the kernel selection restored afterwards.
    /// </summary>
    private static JsonArray TrainingGemmTimes(IlgpuBackend backend, LlamaConfig config, int batch, int seq, int repeats, Action<string>? log)
    {
        var list = new JsonArray();
        var saved = backend.Bf16GemmVariant;
        try
        {
            // wgmma-ws three times: as it runs (persistent, 128 × 192 tiles where they pay), with 128 × 256 tiles alone,
            // and launched with one block per tile.
            var runs = Enum.GetValues<Bf16GemmVariant>().Select(v => (Variant: v, Narrow: true, Persistent: true, Impl: Bf16Impl(v)))
                .Append((Bf16GemmVariant.WgmmaWs, false, true, Bf16Impl(Bf16GemmVariant.WgmmaWs) + "-256"))
                .Append((Bf16GemmVariant.WgmmaWs, true, false, Bf16Impl(Bf16GemmVariant.WgmmaWs) + "-block-per-tile"));
            foreach (var (variant, narrow, persistent, impl) in runs)
            {
                backend.Bf16GemmVariant = variant;
                backend.NarrowTiles = narrow;
                backend.PersistentGemm = persistent && IlgpuBackend.PersistentGemmByDefault;
                foreach (var g in TrainingGemms(config, batch, seq))
                {
                    var entry = new JsonObject { ["impl"] = impl, ["product"] = g.Product, ["form"] = g.Form, ["m"] = g.M, ["n"] = g.N, ["k"] = g.K };
                    try
                    {
                        double s = TimeVariant(backend, variant, () => g.Parts is { } parts
                            ? TimeGemmSum(backend, g.M, g.N, parts, repeats)
                            : TimeGemm(backend, DType.BF16, g.M, g.N, g.K, repeats, g.TransA, g.TransB));
                        entry["tflops"] = 2.0 * g.M * g.N * g.K / s / 1e12;
                        log?.Invoke($"gemm {impl} {g.Form} {g.M}x{g.N}x{g.K} ({g.Product}): {entry["tflops"]!.GetValue<double>():F1} TFLOP/s");
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        entry["error"] = Describe(e);
                    }
                    list.Add(entry);
                }
            }
        }
        finally
        {
            backend.Bf16GemmVariant = saved;
            backend.NarrowTiles = true;
            backend.PersistentGemm = IlgpuBackend.PersistentGemmByDefault;
        }
        return list;
    }

    /// <summary>Median seconds of a bf16 <see cref="Backend.MatMulSum"/> (NN, c in fp32) of products with the k of <paramref name="parts"/>.</summary>
    private static double TimeGemmSum(Backend backend, int m, int n, int[] parts, int repeats) =>
        TimeOp(backend, repeats, arena => (C: arena.Reserve("c", (long)m * n), Parts: parts.Select((k, i) => new MatMulPart(
                arena.Reserve($"a{i}", (long)m * k, DType.BF16), arena.Reserve($"b{i}", (long)k * n, DType.BF16), k)).ToArray(),
                Wide: arena.Reserve("wide", (long)Math.Max(m, n) * parts.Max())),
            t => backend.MatMulSum(t.C, m, n, transA: false, transB: false, accumulate: false, t.Parts),
            init: t =>
            {
                foreach (var (a, b, k) in t.Parts)
                {
                    backend.Fill(t.Wide, 0.01f);
                    backend.ToBf16(a, t.Wide.Slice(0, m * k));
                    backend.ToBf16(b, t.Wide.Slice(0, k * n));
                }
            });
}
