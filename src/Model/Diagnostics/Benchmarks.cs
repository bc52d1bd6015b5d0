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
/// <param name="Only">The parts to measure (<see cref="Parts"/>); null: all.</param>
public sealed record BenchOptions(string? StepModel = null, bool Quick = false, IReadOnlyCollection<string>? Only = null)
{
    /// <summary>The parts of a run: GEMMs, copy and AdamW bandwidth, attention, training steps.</summary>
    public static readonly IReadOnlyList<string> Parts = ["gemm", "bandwidth", "attention", "step"];

    /// <summary>Whether the run measures <paramref name="part"/>.</summary>
    public bool Measures(string part) => Only is null || Only.Contains(part);
}

/// <summary>
/// <c>hft bench</c>: GEMM TFLOP/s of our kernels on fp32 and on bf16 operands (and, on CUDA, of cuBLAS in fp32 and TF32
/// tensor-op mode), the copy bandwidth of the device, the masked AdamW's bandwidth, attention forward and backward,
/// and a full training step of the benchmark Llama with full fine-tuning and with HFT, each in fp32 and in bf16 mixed
/// precision (ms, tokens/s, arena bytes, cost_bound). The JSON has the keys <c>card</c>, <c>gemm</c> (entries with
/// <c>impl</c> ours-fp32, ours-bf16, ours-bf16-fast, ours-bf16-wgmma, ours-bf16-mma, ours-bf16-wgmma-tma and ours-bf16-wgmma-ws (CUDA), cublas-fp32, cublas-tf32; on CUDA also <c>wgmma</c>, <c>mma</c>, <c>wgmma_tma</c> and <c>wgmma_ws</c>, their status), <c>copy_gbps</c>, <c>adamw_gbps</c>,
/// <c>attention</c> (fp32; on a GPU also <c>attention_bf16</c>, the tensor-core kernels), <c>step</c> (entries with <c>method</c> fft or hft and <c>precision</c> fp32 or bf16),
/// <c>hft_fft_ratio</c> (an object: precision → HFT ms / FFT ms), and the step model's <c>step_model</c>,
/// <c>step_config</c> (its config.json), <c>step_batch</c>, <c>step_seq</c> and <c>step_frozen</c> (the tensors HFT
/// froze). A measurement that throws is kept as an entry with an <c>error</c> instead of its figures
/// (<see cref="Errors"/>). <see cref="BenchReport.Compare"/> sets a report beside the figures of tools/pytorch_baseline.py.
/// </summary>
public static partial class Benchmarks
{
    /// <summary>The benchmark model and batch.</summary>
    public static (LlamaConfig Config, int Batch, int Seq) StepModel(string name) => name switch
    {
        "base" => (new LlamaConfig { VocabSize = 32000, HiddenSize = 768, IntermediateSize = 2048, NumHiddenLayers = 12, NumAttentionHeads = 12, MaxPositionEmbeddings = 2048 }, 8, 1024),
        "small" => (new LlamaConfig { VocabSize = 2048, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 4, NumAttentionHeads = 4, MaxPositionEmbeddings = 1024 }, 4, 256),
        _ => throw new ArgumentException($"unknown benchmark model '{name}'; expected base or small"),
    };

    /// <summary>
    /// Runs every benchmark on <paramref name="backend"/>; <paramref name="log"/> receives progress lines, and
    /// <paramref name="checkpoint"/> the report so far after each part (its <c>complete</c> is false until the end),
    /// so that a run stopped by a timeout still leaves what it measured.
    /// </summary>
    public static JsonObject Run(Backend backend, BenchOptions options, Action<string>? log = null, Action<JsonObject>? checkpoint = null)
    {
        bool gpu = backend.Name == "cuda";
        int repeats = options.Quick ? 3 : 10;
        var report = new JsonObject { ["card"] = backend.DeviceName, ["device"] = backend.Name, ["quick"] = options.Quick, ["complete"] = false };

        if (options.Measures("gemm"))
        {
            int[] sizes = gpu ? (options.Quick ? [1024, 4096] : [1024, 2048, 4096, 8192]) : (options.Quick ? [256] : [512, 1024, 2048]);
            var gemm = new JsonArray();
            // On CUDA the bf16 GEMM is timed with each variant of the ILGPU back-end: "ours-bf16" the simple kernel,
            // "ours-bf16-fast" the fast one, "ours-bf16-wgmma" the wgmma one, and so on (see Bf16GemmVariant; an entry with an error
            // where that kernel did not run); the selection is restored afterwards.
            var ilgpuCuda = gpu ? backend as IlgpuBackend : null;
            var impls = Enum.GetValues<Bf16GemmVariant>().Select(v => (Type: DType.BF16, Impl: Bf16Impl(v), Variant: v))
                .Prepend((DType.F32, "ours-fp32", Bf16GemmVariant.Simple));
            foreach (var (type, impl, variant) in impls)
            {
                if (variant != Bf16GemmVariant.Simple && ilgpuCuda is null) continue;
                var savedVariant = ilgpuCuda?.Bf16GemmVariant ?? Bf16GemmVariant.Simple;
                if (ilgpuCuda is not null && type == DType.BF16) ilgpuCuda.Bf16GemmVariant = variant;
                foreach (int s in sizes)
                {
                    var entry = new JsonObject { ["impl"] = impl, ["m"] = s, ["n"] = s, ["k"] = s };
                    try
                    {
                        double t = TimeVariant(ilgpuCuda, variant, () => TimeGemm(backend, type, s, s, s, repeats));
                        entry["tflops"] = 2.0 * s * s * s / t / 1e12;
                        log?.Invoke($"gemm {impl} {s}^3: {2.0 * s * s * s / t / 1e12:F2} TFLOP/s");
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        entry["error"] = Describe(e);
                        log?.Invoke($"gemm {impl} {s}^3: {Describe(e)}");
                    }
                    gemm.Add(entry);
                }
                if (ilgpuCuda is not null) ilgpuCuda.Bf16GemmVariant = savedVariant;
            }
            if (gpu && backend is IlgpuBackend ib && ib.Accelerator is CudaAccelerator cuda)
                foreach (var entry in CuBlasGemm(cuda, sizes, repeats, log)) gemm.Add(entry);
            report["gemm"] = gemm;
            // On CUDA also every bf16 kernel on the products of a training step of the step model (its shapes, not cubes).
            if (ilgpuCuda is not null)
            {
                var (config, batch, seq) = StepModel(options.StepModel ?? "base");
                report["gemm_training"] = TrainingGemmTimes(ilgpuCuda, config, batch, seq, repeats, log);
            }
            if (ilgpuCuda is not null)
                foreach (var variant in IlgpuBackend.PtxVariants)
                    report[IlgpuBackend.NameOf(variant).Replace('-', '_')] = ilgpuCuda.PtxStatus(variant);
            checkpoint?.Invoke(report);

        }

        if (options.Measures("bandwidth"))
        {
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
        }

        if (options.Measures("attention"))
        {
            report["attention"] = Attention(backend, gpu ? (8, 1024, 12, 64) : (2, 512, 4, 64), repeats, log, bf16: false);
            // bf16 products: the tensor-core kernels on a GPU (the CPU back-end computes attention in fp32 either way).
            if (gpu) report["attention_bf16"] = Attention(backend, (8, 1024, 12, 64), repeats, log, bf16: true);
            checkpoint?.Invoke(report);
        }

        if (options.Measures("step"))
        {
            string model = options.StepModel ?? (gpu ? "base" : "small");
            var (config, batch, seq) = StepModel(model);
            var frozen = FreezePolicy.Hft(1).SelectFrozen(LlamaModel.TensorNames(config));
            report["step_model"] = model;
            if (backend.Name == "cuda" && backend is IlgpuBackend cudaBackend) report["bf16_gemm_default"] = IlgpuBackend.NameOf(cudaBackend.Bf16GemmVariant);
            report["step_config"] = JsonNode.Parse(config.ToJson());
            report["step_batch"] = batch;
            report["step_seq"] = seq;
            report["step_policy"] = FreezePolicy.Hft(1).Describe();
            report["step_frozen"] = new JsonArray(frozen.Order(StringComparer.Ordinal).Select(n => (JsonNode)n).ToArray());
            var steps = new JsonArray();
            report["step"] = steps;
            report["hft_fft_ratio"] = new JsonObject();
            Steps(backend, config, batch, seq, frozen, options.Quick ? 3 : 8, log, entry =>
            {
                steps.Add(entry);
                report["hft_fft_ratio"] = Ratios(steps);
                checkpoint?.Invoke(report);
            });
        }
        report["complete"] = true;
        checkpoint?.Invoke(report);
        return report;
    }

    /// <summary>HFT ms / FFT ms per step label (precision, and the bf16 GEMM kernel where named), for the labels that have both.</summary>
    private static JsonObject Ratios(JsonArray steps)
    {
        var ratios = new JsonObject();
        foreach (string label in steps.Select(s => StepLabel(s)).Distinct())
        {
            if (StepMs(steps, "fft", label) is double fft && StepMs(steps, "hft", label) is double hft)
                ratios[label] = hft / fft;
        }
        return ratios;
    }

    /// <summary>A step entry's precision, followed by "fast-gemm" or "simple-gemm" where the entry names its bf16 GEMM kernel.</summary>
    public static string StepLabel(JsonNode? step) =>
        step?["bf16_gemm"] is JsonNode g ? $"{step["precision"]} {g}-gemm" : step?["precision"]?.GetValue<string>() ?? "";

    /// <summary>The precisions of the training-step entries, in report order.</summary>
    public static IReadOnlyList<Precision> StepPrecisions { get; } = [Precision.Fp32, Precision.Bf16];

    /// <summary>
    /// The measurements of a report that failed, as "what: error" lines (GEMM and step entries with an <c>error</c>,
    /// and a report whose run stopped early); empty when everything was measured. A cuBLAS comparison that could not
    /// load cuBLAS is not counted.
    /// </summary>
    public static IReadOnlyList<string> Errors(JsonObject report)
    {
        var errors = new List<string>();
        if (report["complete"] is JsonNode complete && !complete.GetValue<bool>()) errors.Add("the run stopped before the end (incomplete report)");
        if (report["gemm"] is JsonArray gemm)
        {
            foreach (var g in gemm)
            {
                if (g?["error"] is JsonNode e && g["impl"]?.GetValue<string>() != "cublas")
                    errors.Add($"gemm {g["impl"]} {g["m"]}^3: {e}");
            }
        }
        if (report["step"] is JsonArray steps)
        {
            foreach (var st in steps)
                if (st?["error"] is JsonNode e) errors.Add($"step {st["method"]} {StepLabel(st)}: {e}");
        }
        return errors;
    }

    private static double? StepMs(JsonArray steps, string method, string label) =>
        steps.FirstOrDefault(s => s?["method"]?.GetValue<string>() == method && StepLabel(s) == label)?["ms"]?.GetValue<double>();

    private static string Describe(Exception e) => $"{e.GetType().Name}: {e.Message}";

    /// <summary>The bench's name of a bf16 kernel: ours-bf16 (the simple one), ours-bf16-fast, ours-bf16-wgmma, ….</summary>
    private static string Bf16Impl(Bf16GemmVariant variant) =>
        variant == Bf16GemmVariant.Simple ? "ours-bf16" : "ours-bf16-" + IlgpuBackend.NameOf(variant);

    /// <summary>
    /// <paramref name="time"/>'s seconds, measured with <paramref name="variant"/> selected on <paramref name="backend"/>;
    /// throws where it is a PTX variant whose kernel did not run (its status says why).
    /// </summary>
    private static double TimeVariant(IlgpuBackend? backend, Bf16GemmVariant variant, Func<double> time)
    {
        long launches = backend?.PtxLaunches(variant) ?? 0;
        // The kernel alone: a product it cannot take goes to the ILGPU kernels, not to the next PTX one.
        bool fallback = backend?.PtxFallback ?? false;
        if (backend is not null) backend.PtxFallback = false;
        double seconds;
        try
        {
            seconds = time();
        }
        finally
        {
            if (backend is not null) backend.PtxFallback = fallback;
        }
        if (backend?.PtxStatus(variant) is { } status && backend.PtxLaunches(variant) == launches)
            throw new InvalidOperationException($"the {IlgpuBackend.NameOf(variant)} kernel did not run: {status}");
        return seconds;
    }

    /// <summary>
    /// c = a·bᵀ (or the form of <paramref name="transA"/> and <paramref name="transB"/>) with a and b of
    /// <paramref name="type"/> (F32 or BF16; c is F32): median seconds.
    /// </summary>
    private static double TimeGemm(Backend backend, DType type, int m, int n, int k, int repeats, bool transA = false, bool transB = true)
    {
        if (type == DType.F32)
        {
            return TimeOp(backend, repeats, arena => (arena.Reserve("a", (long)m * k), arena.Reserve("b", (long)k * n), arena.Reserve("c", (long)m * n)),
                t => backend.MatMul(t.Item3, t.Item1, t.Item2, m, n, k, transA, transB, accumulate: false),
                init: t => { backend.Fill(t.Item1, 0.01f); backend.Fill(t.Item2, 0.02f); });
        }
        // The bf16 operands are written from float32 ones by ToBf16 (Fill is float32 only).
        return TimeOp(backend, repeats, arena => (A: arena.Reserve("a", (long)m * k), B: arena.Reserve("b", (long)k * n), C: arena.Reserve("c", (long)m * n),
                A16: arena.Reserve("a16", (long)m * k, type), B16: arena.Reserve("b16", (long)k * n, type)),
            t => backend.MatMul(t.C, t.A16, t.B16, m, n, k, transA, transB, accumulate: false),
            init: t =>
            {
                backend.Fill(t.A, 0.01f); backend.Fill(t.B, 0.02f);
                backend.ToBf16(t.A16, t.A); backend.ToBf16(t.B16, t.B);
            });
    }

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

    private static JsonObject Attention(Backend backend, (int B, int T, int H, int D) s, int repeats, Action<string>? log, bool bf16)
    {
        long nq = (long)s.B * s.T * s.H * s.D;
        float scale = 1f / MathF.Sqrt(s.D);
        (Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dq, Tensor dk, Tensor dv) Reserve(DeviceArena a) =>
            (a.Reserve("q", nq), a.Reserve("k", nq), a.Reserve("v", nq), a.Reserve("o", nq), a.Reserve("lse", (long)s.B * s.H * s.T),
             a.Reserve("dq", nq), a.Reserve("dk", nq), a.Reserve("dv", nq));
        void Init((Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dq, Tensor dk, Tensor dv) t)
        {
            backend.Fill(t.q, 0.1f); backend.Fill(t.k, 0.2f); backend.Fill(t.v, 0.3f);
            backend.AttentionForward(t.o, t.lse, t.q, t.k, t.v, default, s.B, s.T, s.H, s.H, s.D, scale, bf16);
        }
        double fwd = TimeOp(backend, repeats, Reserve, t => backend.AttentionForward(t.o, t.lse, t.q, t.k, t.v, default, s.B, s.T, s.H, s.H, s.D, scale, bf16), Init);
        double bwd = TimeOp(backend, repeats, Reserve, t => backend.AttentionBackward(t.dq, t.dk, t.dv, t.o, t.o, t.lse, t.q, t.k, t.v, default,
            s.B, s.T, s.H, s.H, s.D, scale, bf16), Init);
        double flops = 2.0 * 2 * s.D * s.H * (s.T + 1) / 2.0 * s.B * s.T;
        log?.Invoke($"attention{(bf16 ? " bf16" : "")}: forward {fwd * 1e3:F2} ms, backward {bwd * 1e3:F2} ms");
        return new JsonObject
        {
            ["shape"] = $"b{s.B} t{s.T} h{s.H} d{s.D} causal", ["precision"] = bf16 ? "bf16" : "fp32", ["forward_ms"] = fwd * 1e3, ["backward_ms"] = bwd * 1e3,
            ["forward_tflops"] = flops / fwd / 1e12, ["backward_tflops"] = 2.5 * flops / bwd / 1e12,
        };
    }

    /// <summary>
    /// Full fine-tuning and HFT (<paramref name="frozen"/>) of the step model in each of <see cref="StepPrecisions"/>:
    /// median ms of <paramref name="repeats"/> optimizer steps after two warm-up steps. A configuration that throws
    /// becomes an entry with an <c>error</c>, and the others still run.
    /// </summary>
    private static void Steps(Backend backend, LlamaConfig config, int batch, int seq, IReadOnlySet<string> frozen, int repeats, Action<string>? log,
        Action<JsonObject> add)
    {
        var rng = new Rng(2);
        var ids = new int[batch * seq];
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.NextInt(config.VocabSize);
        var inputs = ModelInputs.FromLabels(ids, ids, batch, seq);
        // On CUDA, bf16 steps run once more with each other bf16 GEMM kernel of the ILGPU back-end (entries with
        // "bf16_gemm"; wgmma only where its module loaded and a form passed its check), so that one run shows which
        // kernel trains faster; with wgmma-ws selected, first with each of its refinements switched from its default in
        // turn (summed products, the RoPE launch, persistent launches and 128 × 192 tiles off; the SwiGLU launch on), so
        // that one run shows what each is worth.
        var ilgpuCuda = backend.Name == "cuda" ? backend as IlgpuBackend : null;
        var configurations = StepPrecisions.Select(p => (Precision: p, Variant: (Bf16GemmVariant?)null, Refinement: (string?)null)).ToList();
        if (ilgpuCuda is not null)
        {
            if (ilgpuCuda.Bf16GemmVariant == Bf16GemmVariant.WgmmaWs)
                foreach (string refinement in WgmmaWsRefinements)
                    configurations.Add((Precision.Bf16, Bf16GemmVariant.WgmmaWs, refinement));
            foreach (var other in Enum.GetValues<Bf16GemmVariant>())
                if (other != ilgpuCuda.Bf16GemmVariant && ilgpuCuda.PtxStatus(other)?.Contains("checked", StringComparison.Ordinal) != false)
                    configurations.Add((Precision.Bf16, other, null));
        }
        foreach (var (precision, variant, refinement) in configurations)
        {
            foreach (var method in new[] { "fft", "hft" })
            {
                var frozenHere = method == "fft" ? new HashSet<string>() : frozen;
                var entry = new JsonObject { ["method"] = method, ["precision"] = precision.Name() };
                if (variant is Bf16GemmVariant v) entry["bf16_gemm"] = IlgpuBackend.NameOf(v) + (refinement is null ? "" : "-" + refinement);
                var savedVariant = ilgpuCuda?.Bf16GemmVariant ?? Bf16GemmVariant.Simple;
                if (variant is Bf16GemmVariant selected)
                {
                    // That kernel alone (the default configurations keep the fallback a user gets).
                    ilgpuCuda!.Bf16GemmVariant = selected;
                    ilgpuCuda.PtxFallback = false;
                }
                if (refinement is not null) SetRefinement(ilgpuCuda!, refinement, apply: true);
                try
                {
                    using var model = LlamaModel.Create(backend, config, new LlamaModelOptions(batch, seq, frozenHere, Precision: precision,
                        LossChunkRows: LlamaModelOptions.DefaultLossChunkRows(batch, seq, config.VocabSize)));
                    model.InitializeWeights(1);
                    var step = new OptimizerStep(model, new AdamWOptions(), 1f);
                    var times = new double[repeats];
                    float loss = float.NaN;
                    for (int i = -2; i < repeats; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        step.Begin();
                        loss = step.ForwardBackward(inputs);
                        step.Finish(1e-4f, loss);
                        backend.Synchronize();
                        if (i >= 0) times[i] = sw.Elapsed.TotalMilliseconds;
                    }
                    if (!float.IsFinite(loss)) throw new InvalidOperationException($"the loss is {loss}");
                    // Where the time goes: one more step with every operation synchronized and timed; in it, which bf16
                    // products the selected kernel refused (shapes, forms): the simple kernel's share of a step.
                    long simpleBefore = ilgpuCuda?.Bf16SimpleLaunches ?? 0;
                    entry["profile"] = ProfiledStep(backend, step, inputs);
                    if (ilgpuCuda is not null && precision == Precision.Bf16)
                        entry["simple_gemm_per_step"] = ilgpuCuda.Bf16SimpleLaunches - simpleBefore;
                    Array.Sort(times);
                    double ms = times[repeats / 2];
                    entry["ms"] = ms;
                    entry["tokens_per_s"] = batch * seq / (ms / 1e3);
                    entry["peak_bytes"] = model.Arena.ReservedBytes;
                    entry["cost_bound"] = LlamaCostModel.CostBound(config, seq, frozenHere);
                    entry["attention_precision"] = model.AttentionPrecision;
                    entry["loss"] = loss;
                    log?.Invoke($"step {method} {StepLabel(entry)}: {ms:F1} ms, {batch * seq / (ms / 1e3):N0} tokens/s");
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    entry["error"] = Describe(e);
                    log?.Invoke($"step {method} {StepLabel(entry)}: {Describe(e)}");
                }
                finally
                {
                    if (ilgpuCuda is not null)
                    {
                        ilgpuCuda.Bf16GemmVariant = savedVariant;
                        ilgpuCuda.PtxFallback = true;
                    }
                    if (refinement is not null) SetRefinement(ilgpuCuda!, refinement, apply: false);
                }
                add(entry);
            }
        }
    }

    /// <summary>
    /// The refinements of the warp-specialized GEMM that a bf16 step is also timed with switched from its default (its
    /// <c>bf16_gemm</c> "wgmma-ws-" + the name, which says what runs): products summed in one launch, the RoPE launch,
    /// persistent launches and 128 × 192 tiles turned off; the SwiGLU launch (off by default) turned on.
    /// </summary>
    public static IReadOnlyList<string> WgmmaWsRefinements { get; } = ["unsummed", "fused-swiglu", "unfused-rope", "block-per-tile", "256"];

    /// <summary>Switches one of <see cref="WgmmaWsRefinements"/> (<paramref name="apply"/>) or puts it back to its default.</summary>
    private static void SetRefinement(IlgpuBackend backend, string name, bool apply)
    {
        switch (name)
        {
            case "unsummed": backend.SummedGemm = !apply && IlgpuBackend.SummedGemmByDefault; break;
            case "fused-swiglu": backend.SwiGluGemm = apply || IlgpuBackend.SwiGluGemmByDefault; break;
            case "unfused-rope": backend.RopeGemm = !apply && IlgpuBackend.RopeGemmByDefault; break;
            case "block-per-tile": backend.PersistentGemm = !apply && IlgpuBackend.PersistentGemmByDefault; break;
            case "256": backend.NarrowTiles = !apply; break;
            default: throw new ArgumentException($"no refinement '{name}'", nameof(name));
        }
    }

    /// <summary>
    /// One optimizer step with <see cref="Backend.Profile"/> set: per operation, calls, ms and, for matrix products,
    /// TFLOP/s; total_ms is their sum (above the step's own time: every operation waits for the one before).
    /// </summary>
    private static JsonObject ProfiledStep(Backend backend, OptimizerStep step, ModelInputs inputs)
    {
        var profile = new OpProfile();
        backend.Profile = profile;
        try
        {
            step.Begin();
            step.Finish(1e-4f, step.ForwardBackward(inputs));
            backend.Synchronize();
        }
        finally
        {
            backend.Profile = null;
        }
        var ops = new JsonObject();
        foreach (var (name, e) in profile.Ops.OrderByDescending(kv => kv.Value.Ms))
        {
            var op = new JsonObject { ["calls"] = e.Calls, ["ms"] = e.Ms };
            if (e.Flops > 0) op["tflops"] = e.Flops / (e.Ms / 1e3) / 1e12;
            ops[name] = op;
        }
        return new JsonObject { ["total_ms"] = profile.TotalMs, ["ops"] = ops };
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
