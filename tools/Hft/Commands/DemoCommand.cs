using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Cli.Commands;

/// <summary>
/// <c>hft demo</c>: checks the numbers against the bundled Hugging Face reference cases, then trains the same small
/// Llama on a bundled public-domain text with full fine-tuning and with Half Fine-Tuning and compares them
/// (learning, speed, optimizer memory). The forgetting experiment of the paper comes with the demo data of a later version.
/// </summary>
internal static class DemoCommand
{
    /// <summary>The bundled text the demo trains on.</summary>
    public const string TextFile = "moby-dick-ch1-12.txt";

    public static Command Create(TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        var output = new Option<string>("--out") { Description = "Directory for the models and the report", DefaultValueFactory = _ => "hft-demo" };
        var quick = new Option<bool>("--quick") { Description = "A tiny model and a few steps (seconds; what CI runs)" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("demo", "Verify against Hugging Face, then compare full fine-tuning with Half Fine-Tuning on a small model")
        {
            output, quick, device, threads,
        };
        cmd.SetAction(r => Run(r.GetValue(output)!, r.GetValue(quick), r.GetValue(device)!, r.GetValue(threads), stdout, stderr, cancel));
        return cmd;
    }

    /// <summary>Directory of files shipped next to the executable.</summary>
    private static string Shipped(string name) => Path.Combine(AppContext.BaseDirectory, name);

    private static int Run(string outDir, bool quick, string device, int threads, TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        var inv = CultureInfo.InvariantCulture;
        string text = Path.Combine(Shipped("data"), TextFile);
        string cases = Shipped("reference-cases");
        if (!File.Exists(text)) throw new InvalidInputException(text, "the demo text is missing next to the executable (build or publish hft again)");
        if (!Directory.Exists(cases)) throw new InvalidInputException(cases, "the reference cases are missing next to the executable");
        OutputGuard.RequireFresh(outDir);
        Directory.CreateDirectory(outDir);

        // 1. The numbers: our forward, backward and AdamW against Hugging Face transformers (float64).
        stdout.WriteLine("1. Checking against Hugging Face reference cases (loss, logits, every gradient, AdamW, DPO)");
        var checks = new JsonArray();
        bool verified = true;
        using (var backend = Devices.Create(device, threads))
            foreach (var dir in Directory.GetDirectories(cases).OrderBy(d => d, StringComparer.Ordinal))
            {
                var report = GoldenVerifier.Run(dir, backend);
                var worst = report.Rows.MaxBy(r => r.RelativeError / Math.Max(r.Tolerance, 1e-30))!;
                verified &= report.Passed;
                stdout.WriteLine(string.Format(inv, "   {0,-20} {1}: {2} quantities on {3}; closest to its tolerance: {4} ({5:0.0e+00} of {6:0e+00})",
                    Path.GetFileName(dir), report.Passed ? "PASS" : "FAIL", report.Rows.Count, report.Device, worst.Quantity, worst.RelativeError, worst.Tolerance));
                checks.Add(new JsonObject { ["case"] = Path.GetFileName(dir), ["passed"] = report.Passed, ["quantities"] = report.Rows.Count });
            }

        // 2. Full fine-tuning vs Half Fine-Tuning of the same model on the same data, steps and seed.
        string preset = quick ? "tiny" : "small";
        var options = quick
            ? new TrainingOptions { Steps = 30, Batch = 8, Seq = 64, Lr = 3e-3f, EvalEvery = 0, EvalBatches = 4, LogEvery = 10, Seed = 1 }
            : new TrainingOptions { Steps = 300, Batch = 8, Seq = 128, Lr = 2e-3f, EvalEvery = 100, EvalBatches = 8, LogEvery = 50, Seed = 1 };
        stdout.WriteLine($"2. Training a {preset} Llama on {TextFile} ({new FileInfo(text).Length:N0} bytes): full fine-tuning, then Half Fine-Tuning");
        string baseDir = Path.Combine(outDir, "base");
        InitCommand.Execute(baseDir, preset, "bytes", 1, TextWriter.Null);
        var runs = new Dictionary<string, JsonObject>();
        foreach (var method in new[] { "fft", "hft" })
        {
            var job = new TrainCommand.TrainJob(baseDir, text, "lm", method, null, 0.5, false, null, 0.05, Path.Combine(outDir, method), false, device, threads, options);
            var (code, report) = TrainCommand.Execute(job, quiet: true, stdout, stderr, cancel);
            if (code != Program.ExitOk) return code;
            runs[method] = report;
        }

        var fft = runs["fft"]; var hft = runs["hft"];
        double ratio = hft["step_ms_median"]!.GetValue<double>() / fft["step_ms_median"]!.GetValue<double>();
        double bound = hft["cost_bound"]!.GetValue<double>();
        var summary = new JsonObject
        {
            ["device"] = hft["device"]!.GetValue<string>(),
            ["reference_cases"] = checks,
            ["model_preset"] = preset,
            ["text"] = TextFile,
            ["steps"] = options.Steps,
            ["step_time_ratio_hft_fft"] = ratio,
            ["cost_bound"] = bound,
        };
        foreach (var (m, r) in runs)
            summary[m] = new JsonObject
            {
                ["params_trainable"] = r["params_trainable"]!.GetValue<long>(),
                ["bytes_optimizer"] = r["bytes_optimizer"]!.GetValue<long>(),
                ["final_loss"] = r["losses"]!.AsArray().LastOrDefault()?.GetValue<float>(),
                ["held_out_loss"] = r["eval"]!.AsArray().LastOrDefault()?["loss"]?.GetValue<double>(),
                ["step_ms_median"] = r["step_ms_median"]!.GetValue<double>(),
                ["tokens_per_s"] = r["tokens_per_s"]!.GetValue<double>(),
            };
        File.WriteAllText(Path.Combine(outDir, "report.json"), summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        string md = Markdown(summary, runs);
        File.WriteAllText(Path.Combine(outDir, "report.md"), md);
        stdout.WriteLine();
        stdout.Write(md);
        stdout.WriteLine($"wrote {Path.Combine(outDir, "report.md")}, report.json and the models base/, fft/, hft/");
        return verified ? Program.ExitOk : Program.ExitCheckFailed;
    }

    private static string Markdown(JsonObject s, Dictionary<string, JsonObject> runs)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"| method | trainable parameters | optimizer memory | final train loss | held-out loss | ms/step | tokens/s |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var (m, _) in runs)
        {
            var r = s[m]!;
            sb.AppendLine(string.Format(inv, "| {0} | {1:N0} | {2:N0} B | {3:F3} | {4:F3} | {5:F1} | {6:N0} |", m.ToUpperInvariant(),
                r["params_trainable"]!.GetValue<long>(), r["bytes_optimizer"]!.GetValue<long>(), r["final_loss"]?.GetValue<float>() ?? float.NaN,
                r["held_out_loss"]?.GetValue<double>() ?? double.NaN, r["step_ms_median"]!.GetValue<double>(), r["tokens_per_s"]!.GetValue<double>()));
        }
        sb.AppendLine();
        sb.AppendLine(string.Format(inv, "HFT/FFT step time: {0:F3} (analytic bound from the FLOPs saved: {1:F3}) on {2}.",
            s["step_time_ratio_hft_fft"]!.GetValue<double>(), s["cost_bound"]!.GetValue<double>(), s["device"]!.GetValue<string>()));
        return sb.ToString();
    }
}
