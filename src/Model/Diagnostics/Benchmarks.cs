using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Training;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Model.Diagnostics;

/// <summary>What <see cref="Benchmarks.Run"/> measures and how long it may take.</summary>
/// <param name="StepModel">"base" (the 134M model: d 768, 12 layers, 12 heads, FFN 2048, vocabulary 32000, batch 8 × 1024) or
/// "small" (d 256, 4 layers, FFN 688, vocabulary 2048, batch 4 × 256); null: base on a GPU, small on a CPU.</param>
/// <param name="Quick">Fewer sizes and repeats (for tests and a first look).</param>
public sealed record BenchOptions(string? StepModel = null, bool Quick = false);

/// <summary>
/// <c>hft bench</c>: GEMM TFLOP/s of our kernels (and, on CUDA, of cuBLAS in fp32 and TF32 tensor-op mode), the copy
/// bandwidth of the device, the masked AdamW's bandwidth, attention forward and backward, and a full training step
/// of the benchmark Llama with full fine-tuning and with HFT (ms, tokens/s, arena bytes, cost_bound). The JSON has
/// the keys <c>card</c>, <c>gemm</c>, <c>copy_gbps</c>, <c>adamw_gbps</c>, <c>attention</c> and <c>step</c>.
/// </summary>
public static class Benchmarks
{
    /// <summary>The benchmark model and batch.</summary>
    public static (LlamaConfig Config, int Batch, int Seq) StepModel(string name) => name switch
    {
        "base" => (new LlamaConfig { VocabSize = 32000, HiddenSize = 768, IntermediateSize = 2048, NumHiddenLayers = 12, NumAttentionHeads = 12, MaxPositionEmbeddings = 2048 }, 8, 1024),
        "small" => (new LlamaConfig { VocabSize = 2048, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 4, NumAttentionHeads = 4, MaxPositionEmbeddings = 1024 }, 4, 256),
        _ => throw new ArgumentException($"unknown benchmark model '{name}'; expected base or small"),
    };

    /// <summary>Runs every benchmark on <paramref name="backend"/>; <paramref name="log"/> receives progress lines.</summary>
    public static JsonObject Run(Backend backend, BenchOptions options, Action<string>? log = null)
    {
        bool gpu = backend.Name == "cuda";
        int repeats = options.Quick ? 3 : 10;
        var report = new JsonObject { ["card"] = backend.DeviceName, ["device"] = backend.Name, ["quick"] = options.Quick };

        int[] sizes = gpu ? (options.Quick ? [1024, 4096] : [1024, 2048, 4096, 8192]) : (options.Quick ? [256] : [512, 1024, 2048]);
        var gemm = new JsonArray();
        foreach (int s in sizes)
        {
            double t = TimeGemm(backend, s, s, s, repeats);
            gemm.Add(new JsonObject { ["impl"] = "ours-fp32", ["m"] = s, ["n"] = s, ["k"] = s, ["tflops"] = 2.0 * s * s * s / t / 1e12 });
            log?.Invoke($"gemm ours {s}^3: {2.0 * s * s * s / t / 1e12:F2} TFLOP/s");
        }
        if (gpu && backend is IlgpuBackend ib && ib.Accelerator is CudaAccelerator cuda)
            foreach (var entry in CuBlasGemm(cuda, sizes, repeats, log)) gemm.Add(entry);
        report["gemm"] = gemm;

        long copyFloats = gpu ? 64L << 20 : 8L << 20;
        double copyT = TimeOp(backend, repeats, arena => (arena.Reserve("a", copyFloats), arena.Reserve("b", copyFloats)),
            (t) => backend.Copy(t.Item2, t.Item1));
        report["copy_gbps"] = 2.0 * copyFloats * 4 / copyT / 1e9;
        log?.Invoke($"copy: {report["copy_gbps"]!.GetValue<double>():F1} GB/s");

        long adamN = gpu ? 32L << 20 : 4L << 20;
        double adamT = TimeOp(backend, repeats, arena =>
        {
            var p = arena.Reserve("p", adamN); var g = arena.Reserve("g", adamN); var m = arena.Reserve("m", adamN); var v = arena.Reserve("v", adamN);
            var seg = arena.Reserve("seg", 3, DType.I32);
            return (p, g, m, v, seg);
        }, t => backend.AdamW(t.p, t.g, t.m, t.v, t.seg, 1, new AdamWStep(1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, 1), default),
            init: t => backend.Upload<int>(t.seg, [0, (int)adamN, 1]));
        report["adamw_gbps"] = 28.0 * adamN / adamT / 1e9;
        report["adamw_bytes_per_param"] = 28;
        log?.Invoke($"adamw: {report["adamw_gbps"]!.GetValue<double>():F1} GB/s");

        report["attention"] = Attention(backend, gpu ? (8, 1024, 12, 64) : (2, 512, 4, 64), repeats, log);

        string model = options.StepModel ?? (gpu ? "base" : "small");
        var steps = Steps(backend, model, options.Quick ? 3 : 8, log);
        report["step"] = steps;
        report["step_model"] = model;
        report["hft_fft_ratio"] = steps[1]!["ms"]!.GetValue<double>() / steps[0]!["ms"]!.GetValue<double>();
        return report;
    }

    /// <summary>A markdown summary of a report.</summary>
    public static string Markdown(JsonObject r)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"### hft bench on {r["card"]}").AppendLine();
        sb.AppendLine("| GEMM | m = n = k | TFLOP/s |").AppendLine("| --- | ---: | ---: |");
        foreach (var g in r["gemm"]!.AsArray())
            sb.AppendLine(string.Format(inv, "| {0} | {1} | {2} |", g!["impl"], g["m"],
                g["tflops"] is JsonNode t ? t.GetValue<double>().ToString("F2", inv) : g["error"]?.ToString() ?? "n/a"));
        sb.AppendLine().AppendLine(string.Format(inv, "Copy {0:F1} GB/s; masked AdamW {1:F1} GB/s ({2:P0} of copy).",
            r["copy_gbps"]!.GetValue<double>(), r["adamw_gbps"]!.GetValue<double>(), r["adamw_gbps"]!.GetValue<double>() / r["copy_gbps"]!.GetValue<double>()));
        var a = r["attention"]!;
        sb.AppendLine(string.Format(inv, "Attention {0}: forward {1:F2} ms ({2:F2} TFLOP/s), backward {3:F2} ms ({4:F2} TFLOP/s).", a["shape"],
            a["forward_ms"]!.GetValue<double>(), a["forward_tflops"]!.GetValue<double>(), a["backward_ms"]!.GetValue<double>(), a["backward_tflops"]!.GetValue<double>()));
        sb.AppendLine().AppendLine($"Training step, {r["step_model"]} model:").AppendLine();
        sb.AppendLine("| method | precision | ms/step | tokens/s | arena bytes | cost_bound |").AppendLine("| --- | --- | ---: | ---: | ---: | ---: |");
        foreach (var s in r["step"]!.AsArray())
            sb.AppendLine(string.Format(inv, "| {0} | {1} | {2:F1} | {3:N0} | {4:N0} | {5:F3} |", s!["method"], s["precision"], s["ms"]!.GetValue<double>(),
                s["tokens_per_s"]!.GetValue<double>(), s["peak_bytes"]!.GetValue<long>(), s["cost_bound"]!.GetValue<double>()));
        if (r["hft_fft_ratio"] is JsonNode ratio)
            sb.AppendLine().AppendLine(string.Format(inv, "HFT/FFT step time {0:F3} against cost_bound {1:F3}.", ratio.GetValue<double>(), r["step"]!.AsArray()[1]!["cost_bound"]!.GetValue<double>()));
        return sb.ToString();
    }

    private static double TimeGemm(Backend backend, int m, int n, int k, int repeats) =>
        TimeOp(backend, repeats, arena => (arena.Reserve("a", (long)m * k), arena.Reserve("b", (long)k * n), arena.Reserve("c", (long)m * n)),
            t => backend.MatMul(t.Item3, t.Item1, t.Item2, m, n, k, transA: false, transB: true, accumulate: false),
            init: t => { backend.Fill(t.Item1, 0.01f); backend.Fill(t.Item2, 0.02f); });

    /// <summary>Median seconds of <paramref name="op"/> over <paramref name="repeats"/> runs after two warm-up runs.</summary>
    private static double TimeOp<T>(Backend backend, int repeats, Func<DeviceArena, T> reserve, Action<T> op, Action<T>? init = null)
    {
        using var arena = backend.CreateArena();
        var t = reserve(arena);
        arena.Commit();
        init?.Invoke(t);
        for (int i = 0; i < 2; i++) op(t);
        backend.Synchronize();
        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            op(t);
            backend.Synchronize();
            times[i] = sw.Elapsed.TotalSeconds;
        }
        Array.Sort(times);
        return times[repeats / 2];
    }

    private static JsonObject Attention(Backend backend, (int B, int T, int H, int D) s, int repeats, Action<string>? log)
    {
        long nq = (long)s.B * s.T * s.H * s.D;
        float scale = 1f / MathF.Sqrt(s.D);
        (Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dq, Tensor dk, Tensor dv) Reserve(DeviceArena a) =>
            (a.Reserve("q", nq), a.Reserve("k", nq), a.Reserve("v", nq), a.Reserve("o", nq), a.Reserve("lse", (long)s.B * s.H * s.T),
             a.Reserve("dq", nq), a.Reserve("dk", nq), a.Reserve("dv", nq));
        void Init((Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dq, Tensor dk, Tensor dv) t)
        {
            backend.Fill(t.q, 0.1f); backend.Fill(t.k, 0.2f); backend.Fill(t.v, 0.3f);
            backend.AttentionForward(t.o, t.lse, t.q, t.k, t.v, default, s.B, s.T, s.H, s.H, s.D, scale);
        }
        double fwd = TimeOp(backend, repeats, Reserve, t => backend.AttentionForward(t.o, t.lse, t.q, t.k, t.v, default, s.B, s.T, s.H, s.H, s.D, scale), Init);
        double bwd = TimeOp(backend, repeats, Reserve, t => backend.AttentionBackward(t.dq, t.dk, t.dv, t.o, t.o, t.lse, t.q, t.k, t.v, default,
            s.B, s.T, s.H, s.H, s.D, scale), Init);
        double flops = 2.0 * 2 * s.D * s.H * (s.T + 1) / 2.0 * s.B * s.T;
        log?.Invoke($"attention: forward {fwd * 1e3:F2} ms, backward {bwd * 1e3:F2} ms");
        return new JsonObject
        {
            ["shape"] = $"b{s.B} t{s.T} h{s.H} d{s.D} causal", ["forward_ms"] = fwd * 1e3, ["backward_ms"] = bwd * 1e3,
            ["forward_tflops"] = flops / fwd / 1e12, ["backward_tflops"] = 2.5 * flops / bwd / 1e12,
        };
    }

    private static JsonArray Steps(Backend backend, string name, int repeats, Action<string>? log)
    {
        var (config, batch, seq) = StepModel(name);
        var rng = new Rng(2);
        var ids = new int[batch * seq];
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.NextInt(config.VocabSize);
        var inputs = ModelInputs.FromLabels(ids, ids, batch, seq);
        var steps = new JsonArray();
        foreach (var method in new[] { "fft", "hft" })
        {
            var frozen = method == "fft" ? new HashSet<string>() : FreezePolicy.Hft(1).SelectFrozen(LlamaModel.TensorNames(config));
            using var model = LlamaModel.Create(backend, config, new LlamaModelOptions(batch, seq, frozen));
            model.InitializeWeights(1);
            var step = new OptimizerStep(model, new AdamWOptions(), 1f);
            var times = new double[repeats];
            for (int i = -2; i < repeats; i++)
            {
                var sw = Stopwatch.StartNew();
                step.Begin();
                float loss = step.ForwardBackward(inputs);
                step.Finish(1e-4f, loss);
                backend.Synchronize();
                if (i >= 0) times[i] = sw.Elapsed.TotalMilliseconds;
            }
            Array.Sort(times);
            double ms = times[repeats / 2];
            steps.Add(new JsonObject
            {
                ["method"] = method, ["precision"] = "fp32", ["ms"] = ms, ["tokens_per_s"] = batch * seq / (ms / 1e3),
                ["peak_bytes"] = model.Arena.ReservedBytes, ["cost_bound"] = LlamaCostModel.CostBound(config, seq, frozen),
            });
            log?.Invoke($"step {method}: {ms:F1} ms, {batch * seq / (ms / 1e3):N0} tokens/s");
        }
        return steps;
    }

    private static IEnumerable<JsonObject> CuBlasGemm(CudaAccelerator cuda, int[] sizes, int repeats, Action<string>? log)
    {
        var results = new List<JsonObject>();
        try
        {
            using var blas = new CuBlas(cuda);
            foreach (var (mode, impl) in new[] { (CuBlasMathMode.DefaultMath, "cublas-fp32"), (CuBlasMathMode.TensorOpMath, "cublas-tf32") })
            {
                blas.MathMode = mode;
                foreach (int s in sizes)
                {
                    using var a = cuda.Allocate1D<float>((long)s * s);
                    using var b = cuda.Allocate1D<float>((long)s * s);
                    using var c = cuda.Allocate1D<float>((long)s * s);
                    a.MemSetToZero(); b.MemSetToZero();
                    void Op() => blas.Gemm(CuBlasOperation.NonTranspose, CuBlasOperation.NonTranspose, s, s, s, 1f, a.View, s, b.View, s, 0f, c.View, s);
                    Op(); Op(); cuda.Synchronize();
                    var times = new double[repeats];
                    for (int i = 0; i < repeats; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        Op();
                        cuda.Synchronize();
                        times[i] = sw.Elapsed.TotalSeconds;
                    }
                    Array.Sort(times);
                    double tflops = 2.0 * s * s * s / times[repeats / 2] / 1e12;
                    results.Add(new JsonObject { ["impl"] = impl, ["m"] = s, ["n"] = s, ["k"] = s, ["tflops"] = tflops });
                    log?.Invoke($"gemm {impl} {s}^3: {tflops:F2} TFLOP/s");
                }
            }
        }
        catch (Exception e) when (e is DllNotFoundException or CuBlasException or EntryPointNotFoundException or TypeInitializationException)
        {
            results.Add(new JsonObject { ["impl"] = "cublas", ["error"] = $"cuBLAS unavailable: {e.Message} (it loads libcublas.so.12; link libcublas.so.13 under that name on LD_LIBRARY_PATH)" });
        }
        return results;
    }
}
