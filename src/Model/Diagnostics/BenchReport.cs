using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using HftRuntime.Runtime;

namespace HftRuntime.Model.Diagnostics;

/// <summary>The readable forms of an <c>hft bench</c> report: a markdown summary, and a comparison with PyTorch's figures.</summary>
public static class BenchReport
{
    /// <summary>
    /// The bf16 products of a training step (<c>gemm_training</c>) as a table: a row per product, a column of TFLOP/s per
    /// kernel ("error" where it did not run), and PyTorch's column where <paramref name="torch"/> has the same shapes.
    /// </summary>
    private static void TrainingGemmTable(StringBuilder sb, JsonArray ours, JsonArray? torch)
    {
        var inv = CultureInfo.InvariantCulture;
        static string Key(JsonNode? g) => $"{g?["form"]} {g?["m"]}x{g?["n"]}x{g?["k"]}";
        var impls = ours.Select(g => g?["impl"]?.GetValue<string>() ?? "").Distinct().ToList();
        var rows = ours.Select(g => (Key: Key(g), Product: g?["product"]?.ToString() ?? "")).DistinctBy(x => x.Key).ToList();
        string Cell(JsonArray list, string impl, string key) =>
            list.FirstOrDefault(g => g?["impl"]?.GetValue<string>() == impl && Key(g) == key) is not JsonNode g ? "" :
            g["tflops"] is JsonNode t ? t.GetValue<double>().ToString("F1", inv) : "error";
        bool withTorch = torch is not null && torch.Count > 0;
        sb.AppendLine().AppendLine("bf16 products of a training step of the step model (TFLOP/s; c in fp32):").AppendLine();
        sb.AppendLine("| product | form m×n×k | " + string.Join(" | ", impls) + (withTorch ? " | torch-bf16 |" : " |"));
        sb.AppendLine("| --- | --- |" + string.Concat(Enumerable.Repeat(" ---: |", impls.Count + (withTorch ? 1 : 0))));
        foreach (var (key, product) in rows)
            sb.AppendLine($"| {product} | {key} | " + string.Join(" | ", impls.Select(i => Cell(ours, i, key)))
                + (withTorch ? $" | {Cell(torch!, "torch-bf16", key)} |" : " |"));
    }

    /// <summary>A markdown summary of a report (of the parts it has, when it is one a stopped run left).</summary>
    public static string Markdown(JsonObject r)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"### hft bench on {r["card"]}").AppendLine();
        if (r["complete"] is JsonNode complete && !complete.GetValue<bool>())
            sb.AppendLine("Incomplete: the run stopped before the end; what it measured follows.").AppendLine();
        if (r["gemm"] is JsonArray gemm)
        {
            sb.AppendLine("| GEMM | m = n = k | TFLOP/s |").AppendLine("| --- | ---: | ---: |");
            foreach (var g in gemm)
                sb.AppendLine(string.Format(inv, "| {0} | {1} | {2} |", g!["impl"], g["m"],
                    g["tflops"] is JsonNode t ? t.GetValue<double>().ToString("F2", inv) : g["error"]?.ToString() ?? "n/a"));
        }
        if (r["gemm_training"] is JsonArray training) TrainingGemmTable(sb, training, null);
        if (r["wgmma"] is JsonNode wgmma) sb.AppendLine().AppendLine($"wgmma kernel: {wgmma}.");
        if (r["mma"] is JsonNode mma) sb.AppendLine().AppendLine($"mma kernel: {mma}.");
        if (r["wgmma_tma"] is JsonNode tma) sb.AppendLine().AppendLine($"wgmma kernel with TMA loads: {tma}.");
        if (r["wgmma_ws"] is JsonNode ws) sb.AppendLine().AppendLine($"warp-specialized wgmma kernel: {ws}.");
        if (r["copy_gbps"] is JsonNode copy && r["adamw_gbps"] is JsonNode adamw)
        {
            sb.AppendLine().AppendLine(string.Format(inv, "Copy {0:F1} GB/s; masked AdamW {1:F1} GB/s ({2:P0} of copy).",
                copy.GetValue<double>(), adamw.GetValue<double>(), adamw.GetValue<double>() / copy.GetValue<double>()));
        }
        foreach (var key in new[] { "attention", "attention_bf16" })
        {
            if (r[key] is not JsonObject a) continue;
            sb.AppendLine(string.Format(inv, "Attention {0} {1}: forward {2:F2} ms ({3:F2} TFLOP/s), backward {4:F2} ms ({5:F2} TFLOP/s).", a["shape"],
                a["precision"]?.GetValue<string>() ?? "fp32", a["forward_ms"]!.GetValue<double>(), a["forward_tflops"]!.GetValue<double>(),
                a["backward_ms"]!.GetValue<double>(), a["backward_tflops"]!.GetValue<double>()));
        }
        if (r["step"] is JsonArray steps)
        {
            string kernel = r["bf16_gemm_default"] is JsonNode k ? $" (bf16 rows without a named GEMM kernel use the default, {k})" : "";
            sb.AppendLine().AppendLine($"Training step, {r["step_model"]} model{kernel}:").AppendLine();
            sb.AppendLine("| method | precision | ms/step | tokens/s | arena bytes | cost_bound |").AppendLine("| --- | --- | ---: | ---: | ---: | ---: |");
            foreach (var s in steps)
            {
                if (s!["error"] is JsonNode error)
                    sb.AppendLine($"| {s["method"]} | {Benchmarks.StepLabel(s)} | failed: {error} | | | |");
                else
                    sb.AppendLine(string.Format(inv, "| {0} | {1} | {2:F1} | {3:N0} | {4:N0} | {5:F3} |", s["method"], Benchmarks.StepLabel(s), s["ms"]!.GetValue<double>(),
                        s["tokens_per_s"]!.GetValue<double>(), s["peak_bytes"]!.GetValue<long>(), s["cost_bound"]!.GetValue<double>()));
            }
            if (r["hft_fft_ratio"] is JsonObject ratios && ratios.Count > 0
                && steps.FirstOrDefault(s => s?["method"]?.GetValue<string>() == "hft" && s["cost_bound"] is not null) is JsonNode hft)
            {
                sb.AppendLine().AppendLine(string.Format(inv, "HFT/FFT step time {0} against cost_bound {1:F3}.",
                    string.Join(", ", ratios.Select(kv => string.Format(inv, "{0} {1:F3}", kv.Key, kv.Value!.GetValue<double>()))),
                    hft["cost_bound"]!.GetValue<double>()));
            }
            Profiles(sb, steps);
        }
        return sb.ToString();
    }

    /// <summary>
    /// The step profiles side by side: ms per operation (matrix products with their TFLOP/s) for each profiled step,
    /// the operations in the order of the first step's time.
    /// </summary>
    private static void Profiles(StringBuilder sb, JsonArray steps)
    {
        var inv = CultureInfo.InvariantCulture;
        var profiled = steps.Where(s => s?["profile"]?["ops"] is JsonObject).ToList();
        if (profiled.Count == 0) return;
        var names = profiled.SelectMany(s => ((JsonObject)s!["profile"]!["ops"]!).Select(kv => kv.Key)).Distinct().ToList();
        sb.AppendLine().AppendLine("Where a step's time goes (one step, every operation synchronized and timed; ms, matrix products with TFLOP/s):").AppendLine();
        sb.AppendLine("| operation | " + string.Join(" | ", profiled.Select(s => $"{s!["method"]} {Benchmarks.StepLabel(s)}")) + " |");
        sb.AppendLine("| --- |" + string.Concat(profiled.Select(_ => " ---: |")));
        foreach (string name in names)
        {
            var cells = profiled.Select(s => s!["profile"]!["ops"]![name] is JsonNode op
                ? op["tflops"] is JsonNode t
                    ? string.Format(inv, "{0:F2} ({1:F1})", op["ms"]!.GetValue<double>(), t.GetValue<double>())
                    : string.Format(inv, "{0:F2}", op["ms"]!.GetValue<double>())
                : "");
            sb.AppendLine($"| {name} | {string.Join(" | ", cells)} |");
        }
        sb.AppendLine("| total | " + string.Join(" | ", profiled.Select(s => string.Format(inv, "{0:F1}", s!["profile"]!["total_ms"]!.GetValue<double>()))) + " |");
    }

    /// <summary>
    /// A markdown comparison of a report with the JSON that tools/pytorch_baseline.py writes (the same step model,
    /// batch and AdamW run by PyTorch and transformers): GEMM TFLOP/s of ours-fp32 and ours-bf16 against torch-fp32
    /// and each ours-bf16 kernel against torch-bf16 (cuBLAS through torch.matmul) and cublas-tf32 against torch-tf32; attention forward and backward
    /// ms in fp32 and bf16 against scaled_dot_product_attention (ours/torch below 1: ours is faster); per training-step method and
    /// precision our ms/step and memory beside PyTorch's, with ours/torch ratios of the step time (below 1: ours is
    /// faster) and of the memory; PyTorch-only precisions (bf16-pure) follow with their figures alone; then both
    /// HFT/FFT ratios per precision. Notes where the models, batch or frozen tensors differ.
    /// </summary>
    public static string Compare(JsonObject ours, JsonObject torch)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(string.Format(inv, "### hft bench on {0} against PyTorch {1} (transformers {2}) on {3}", ours["card"], torch["torch_version"],
            torch["transformers_version"], torch["card"])).AppendLine();
        var notes = CompareNotes(ours, torch).ToList();
        foreach (string note in notes) sb.AppendLine($"Note: {note}");
        if (notes.Count > 0) sb.AppendLine();

        static string F(JsonNode? n, string format) => Number(n) is double d ? d.ToString(format, CultureInfo.InvariantCulture) : "n/a";
        static string Ratio(JsonNode? a, JsonNode? b) =>
            Number(a) is double x && Number(b) is double y && y > 0 ? (x / y).ToString("F3", CultureInfo.InvariantCulture) : "n/a";

        sb.AppendLine("| GEMM (c = a·bᵀ) | m = n = k | ours TFLOP/s | PyTorch | PyTorch TFLOP/s | ours/torch |").AppendLine("| --- | ---: | ---: | --- | ---: | ---: |");
        var torchGemm = torch["gemm"] as JsonArray ?? [];
        foreach (var g in ours["gemm"] as JsonArray ?? [])
        {
            string impl = g?["impl"]?.GetValue<string>() ?? "";
            string? counterpart = impl switch
            {
                "ours-fp32" => "torch-fp32",
                _ when impl.StartsWith("ours-bf16", StringComparison.Ordinal) => "torch-bf16", // each of our bf16 kernels
                "cublas-tf32" => "torch-tf32",
                _ => null,
            };
            if (counterpart is null || g!["m"] is null) continue;
            var t = torchGemm.FirstOrDefault(x => x?["impl"]?.GetValue<string>() == counterpart && x["m"]?.GetValue<int>() == g["m"]!.GetValue<int>()
                && x["n"]?.GetValue<int>() == g["n"]!.GetValue<int>() && x["k"]?.GetValue<int>() == g["k"]!.GetValue<int>());
            // PyTorch's bf16 product writes a bf16 c unless its torch.mm has out_dtype; ours writes fp32.
            string label = t?["c_dtype"] is JsonValue cd && cd.ToString() != "float32" ? $"{counterpart} (c {cd})" : counterpart;
            sb.AppendLine($"| {impl} | {g["m"]} | {(g["error"] is JsonNode e ? $"failed: {e}" : F(g["tflops"], "F2"))} | {label} | {F(t?["tflops"], "F2")} | {Ratio(g["tflops"], t?["tflops"])} |");
        }

        if (ours["gemm_training"] is JsonArray training) TrainingGemmTable(sb, training, torch["gemm_training"] as JsonArray);

        var attention = new[] { "attention", "attention_bf16" }.Where(key => ours[key] is JsonObject || torch[key] is JsonObject).ToList();
        if (attention.Count > 0)
        {
            sb.AppendLine().AppendLine("| attention | precision | ours fwd ms | PyTorch fwd ms | fwd ours/torch | ours bwd ms | PyTorch bwd ms | bwd ours/torch |");
            sb.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
            foreach (string key in attention)
            {
                JsonNode? o = ours[key], t = torch[key];
                sb.AppendLine($"| {o?["shape"] ?? t?["shape"]} | {o?["precision"] ?? t?["precision"]} | {F(o?["forward_ms"], "F2")} | {(t?["error"] is JsonNode te ? $"failed: {te}" : F(t?["forward_ms"], "F2"))} | " +
                    $"{Ratio(o?["forward_ms"], t?["forward_ms"])} | {F(o?["backward_ms"], "F2")} | {F(t?["backward_ms"], "F2")} | {Ratio(o?["backward_ms"], t?["backward_ms"])} |");
            }
        }

        sb.AppendLine().AppendLine(string.Format(inv, "Training step, {0} model, batch {1} × {2}; ours/torch below 1: ours is faster or smaller " +
            "(bytes: our arena against torch.cuda.max_memory_allocated):", ours["step_model"], ours["step_batch"], ours["step_seq"])).AppendLine();
        sb.AppendLine("| method | precision | ours ms/step | PyTorch ms/step | time ours/torch | ours tokens/s | PyTorch tokens/s | ours bytes | PyTorch bytes | memory ours/torch |");
        sb.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        var torchSteps = torch["step"] as JsonArray ?? [];
        var ourSteps = ours["step"] as JsonArray ?? [];
        JsonNode? Find(JsonArray steps, JsonNode? s) => steps.FirstOrDefault(x => x?["method"]?.GetValue<string>() == s?["method"]?.GetValue<string>()
            && x?["precision"]?.GetValue<string>() == s?["precision"]?.GetValue<string>());
        string Bytes(JsonNode? n) => Number(n) is double d ? d.ToString("N0", inv) : "n/a";
        foreach (var s in ourSteps)
        {
            var t = Find(torchSteps, s);
            string oursMs = s?["error"] is JsonNode e ? $"failed: {e}" : F(s?["ms"], "F1");
            string torchMs = t?["error"] is JsonNode te ? $"failed: {te}" : F(t?["ms"], "F1");
            sb.AppendLine($"| {s?["method"]} | {Benchmarks.StepLabel(s)} | {oursMs} | {torchMs} | {Ratio(s?["ms"], t?["ms"])} | {F(s?["tokens_per_s"], "N0")} | {F(t?["tokens_per_s"], "N0")} | {Bytes(s?["peak_bytes"])} | {Bytes(t?["peak_bytes"])} | {Ratio(s?["peak_bytes"], t?["peak_bytes"])} |");
        }
        foreach (var t in torchSteps)
        {
            if (Find(ourSteps, t) is not null) continue;
            string torchMs = t?["error"] is JsonNode te ? $"failed: {te}" : F(t?["ms"], "F1");
            sb.AppendLine($"| {t?["method"]} | {t?["precision"]} (PyTorch only) | | {torchMs} | | | {F(t?["tokens_per_s"], "N0")} | | {Bytes(t?["peak_bytes"])} | |");
        }

        var ourRatios = ours["hft_fft_ratio"] as JsonObject;
        var torchRatios = torch["hft_fft_ratio"] as JsonObject;
        var precisions = (ourRatios?.Select(kv => kv.Key) ?? []).Concat(torchRatios?.Select(kv => kv.Key) ?? []).Distinct().ToList();
        if (precisions.Count > 0)
        {
            sb.AppendLine().AppendLine("| HFT/FFT step time | ours | PyTorch |").AppendLine("| --- | ---: | ---: |");
            foreach (string p in precisions) sb.AppendLine($"| {p} | {F(ourRatios?[p], "F3")} | {F(torchRatios?[p], "F3")} |");
        }
        return sb.ToString();
    }

    /// <summary>Where the PyTorch run measured something other than ours: model, batch, sequence or frozen tensors.</summary>
    private static IEnumerable<string> CompareNotes(JsonObject ours, JsonObject torch)
    {
        var model = torch["model"] as JsonObject;
        if (ours["step_config"] is JsonObject oc && model?["config"] is JsonObject tc)
        {
            foreach (string key in new[] { "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "max_position_embeddings", "tie_word_embeddings", "rms_norm_eps", "rope_theta" })
            {
                string a = oc[key]?.ToJsonString() ?? "null", b = tc[key]?.ToJsonString() ?? "null";
                if (tc.ContainsKey(key) && !JsonNode.DeepEquals(oc[key], tc[key]) && !NumbersEqual(oc[key], tc[key]))
                    yield return $"config \"{key}\" is {a} here and {b} in the PyTorch run";
            }
        }
        else
        {
            yield return "a report without step_config or a PyTorch file without model.config: the models cannot be checked";
        }
        if (model is not null && (!JsonNode.DeepEquals(ours["step_batch"], model["batch"]) || !JsonNode.DeepEquals(ours["step_seq"], model["seq"])))
            yield return $"batch {ours["step_batch"]} × {ours["step_seq"]} here, {model["batch"]} × {model["seq"]} in the PyTorch run";
        if (ours["step_frozen"] is JsonArray of && torch["frozen"] is JsonArray tf)
        {
            var a = of.Select(n => n!.GetValue<string>()).ToHashSet(StringComparer.Ordinal);
            var b = tf.Select(n => n!.GetValue<string>()).ToHashSet(StringComparer.Ordinal);
            if (!a.SetEquals(b))
                yield return $"HFT froze {a.Count} tensors here and {b.Count} in the PyTorch run, {a.Except(b).Count()} only here, {b.Except(a).Count()} only there";
        }
    }

    private static bool NumbersEqual(JsonNode? a, JsonNode? b) => Number(a) is double x && Number(b) is double y && x == y;

    /// <summary>A JSON number as a double, whether the node was parsed or built from a long, int or double; else null.</summary>
    private static double? Number(JsonNode? n) =>
        n is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.Number
            ? double.Parse(v.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture) : null;
}
