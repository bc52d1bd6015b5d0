using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Model.Experiments;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary>
/// <c>hft demo</c>: checks the numbers against the bundled Hugging Face reference cases, then reproduces the paper's
/// claim on real text (<see cref="ForgettingExperiment"/>): a base Llama pretrained on corpus A forgets less of A when
/// it learns task B with Half Fine-Tuning than with full fine-tuning.
/// </summary>
internal static class DemoCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        var output = new Option<string>("--out") { Description = "Directory for the models (base/, fft/, hft/) and the report", DefaultValueFactory = _ => "hft-demo" };
        var quick = new Option<bool>("--quick") { Description = "A tiny model and few steps (a few minutes on two CPU cores; what CI runs)" };
        var seeds = new Option<int>("--seeds") { Description = "Fine-tuning seeds (freeze draw and data order); figures become means with _std", DefaultValueFactory = _ => 1 };
        var quiet = new Option<bool>("--quiet") { Description = "Print only the report" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var precision = CommonOptions.Precision(auto: true);
        precision.Description = "Arithmetic of the pretraining and the fine-tuning runs: fp32, bf16 mixed precision, or auto (default: bf16 on a CUDA device, " +
            "fp32 elsewhere). The reference cases are checked in fp32, and in bf16 too when the runs are bf16";
        var cmd = new Command("demo", "Verify against Hugging Face, then show that Half Fine-Tuning forgets less than full fine-tuning")
        {
            output, quick, seeds, quiet, device, threads, precision,
        };
        cmd.SetAction(r => Run(r.GetValue(output)!, r.GetValue(quick), r.GetValue(seeds), r.GetValue(quiet), r.GetValue(device)!, r.GetValue(threads),
            r.GetValue(precision)!, stdout, cancel));
        return cmd;
    }

    /// <summary>A file shipped next to the executable.</summary>
    private static string Shipped(params string[] path) => Path.Combine([AppContext.BaseDirectory, .. path]);

    private static int Run(string outDir, bool quick, int seeds, bool quiet, string device, int threads, string precisionText, TextWriter stdout, CancellationToken cancel)
    {
        var inv = CultureInfo.InvariantCulture;
        if (seeds < 1) throw new ArgumentException("--seeds must be at least 1");
        var data = new ExperimentData(Shipped("data", "corpus-a-train.txt.gz"), Shipped("data", "corpus-a-heldout.txt.gz"),
            Shipped("data", "task-b-train.jsonl"), Shipped("data", "task-b-heldout.jsonl"), Shipped("data", "tokenizer.model"));
        string cases = Shipped("reference-cases");
        foreach (var f in new[] { data.CorpusTrain, data.CorpusHeldOut, data.TaskTrain, data.TaskHeldOut, data.Tokenizer })
            if (!File.Exists(f)) throw new InvalidInputException(f, "the demo data is missing next to the executable (build or publish hft again)");
        if (!Directory.Exists(cases)) throw new InvalidInputException(cases, "the reference cases are missing next to the executable");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any(e => Path.GetFileName(e) != "base"))
            throw new InvalidInputException(outDir, "already holds a demo; choose another --out (a directory holding only base/ is reused)");
        void Say(string line) { if (!quiet) stdout.WriteLine(line); }

        using var backend = Devices.Create(device, threads);
        var precision = PrecisionNames.Resolve(precisionText, backend.Name);
        Say($"device {backend.DeviceName}, precision {precision.Name()}");
        Precision[] checkedIn = precision == Precision.Fp32 ? [Precision.Fp32] : [Precision.Fp32, precision];
        Say($"1. Our forward, backward and AdamW in {string.Join(" and ", checkedIn.Select(p => p.Name()))} against Hugging Face transformers (float64 reference cases)");
        bool verified = true;
        foreach (var p in checkedIn)
            foreach (var dir in Directory.GetDirectories(cases).OrderBy(d => d, StringComparer.Ordinal))
            {
                var report = GoldenVerifier.Run(dir, backend, p);
                var worst = report.Rows.MaxBy(r => r.RelativeError / Math.Max(r.Tolerance, 1e-30))!;
                verified &= report.Passed;
                Say(string.Format(inv, "   {0,-20} {1} {2}: {3} quantities; closest to its tolerance: {4} ({5:0.0e+00} of {6:0e+00})",
                    Path.GetFileName(dir), p.Name(), report.Passed ? "PASS" : "FAIL", report.Rows.Count, worst.Quantity, worst.RelativeError, worst.Tolerance));
            }

        var tokenizer = Model.Tokenizers.Tokenizers.Create(data.Tokenizer);
        var scale = ExperimentScale.FromEnvironment(tokenizer.VocabSize) ?? ExperimentScale.For(quick, backend.Name == "cuda", tokenizer.VocabSize);
        Say($"2. Forgetting: pretrain on corpus A, fine-tune on task B with FFT and with HFT ({scale.Name} scale)");
        var result = ConsoleDisplay.Run(stdout, quiet, "demo", progress =>
            ForgettingExperiment.Run(backend, data, scale, outDir, seeds, progress, cancel, quiet ? null : line => stdout.WriteLine("   " + line), precision));
        string md = Markdown(result, verified);
        File.WriteAllText(Path.Combine(outDir, "report.md"), md);
        DemoPlot.Save(result, Path.Combine(outDir, "demo.png"));
        stdout.WriteLine();
        stdout.Write(md);
        Say($"wrote {Path.Combine(outDir, "report.md")}, report.json, demo.png and the models base/, fft/, hft/");
        return verified ? Program.ExitOk : Program.ExitCheckFailed;
    }

    /// <summary>report.md: what was run, the table, the claim's figures, sample answers.</summary>
    internal static string Markdown(JsonObject r, bool verified)
    {
        var inv = CultureInfo.InvariantCulture;
        string F(JsonNode? n, string fmt) => n is null ? "n/a" : JsonNumbers.ToDouble(n).ToString(fmt, inv);
        string Pm(JsonObject o, string key, string fmt) => o[key + "_std"] is JsonNode s ? $"{F(o[key], fmt)} ± {F(s, fmt)}" : F(o[key], fmt);
        var sb = new StringBuilder();
        var model = r["model"]!;
        sb.AppendLine($"## HFT vs FFT: learning task B, forgetting corpus A ({r["scale"]} scale, {r["device"]}, {r["precision"]})").AppendLine();
        sb.AppendLine(string.Format(inv, "Base: a Llama with d {0}, {1} layers, {2} heads, vocabulary {3}, pretrained for {4} steps on corpus A (State of the Union addresses and Moby-Dick). " +
            "Task B: WordNet definitions (\"Define: word\" → gloss), {5} steps at lr {6} for both methods; {7} seed(s). Reference cases: {8}.",
            model["hidden_size"], model["num_hidden_layers"], model["num_attention_heads"], model["vocab_size"], r["pretrain"]!["steps"],
            r["fine_tune"]!["steps"], r["fine_tune"]!["lr"], r["seeds"], verified ? "all pass" : "FAILED"));
        sb.AppendLine();
        sb.AppendLine("| | A perplexity (held out) | task B loss (held out) | exact match (held out) | exact match (seen) | trainable parameters | optimizer memory | ms/step | tokens/s |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        sb.AppendLine(string.Format(inv, "| base | {0} | | | | | | | |", F(r["base_ppl_before"], "F2")));
        foreach (var m in new[] { "fft", "hft" })
        {
            var o = r[m]!.AsObject();
            sb.AppendLine($"| {m.ToUpperInvariant()} | {Pm(o, "base_ppl_after", "F2")} | {Pm(o, "task_loss", "F3")} | {Pm(o, "task_exact_match", "P1")} | {Pm(o, "task_exact_match_train", "P1")} | " +
                $"{F(o["params_trainable"], "N0")} | {F(o["bytes_optimizer"], "N0")} B | {Pm(o, "step_ms_median", "F1")} | {Pm(o, "tokens_per_s", "N0")} |");
        }
        sb.AppendLine();
        if (r["forgetting_ratio"] is JsonNode ratio)
            sb.AppendLine(string.Format(inv, "forgetting_ratio = (HFT's rise in A perplexity) / (FFT's rise) = **{0}**; HFT's task loss is {1:P1} of FFT's; goal (ratio ≤ 0.5, task loss within 5 %): {2}.",
                Pm(r, "forgetting_ratio", "F3") + (r["forgetting_ratio_seeds"] is JsonArray each ? $" (seeds: {string.Join(", ", each.Select(x => F(x, "F3")))})" : ""),
                JsonNumbers.ToDouble(r["task_loss_ratio_hft_fft"]), r["goal"]!["met"]!.GetValue<bool>() ? "met" : "not met"));
        else sb.AppendLine($"forgetting_ratio: null — warning: {r["warning"]}.");
        sb.AppendLine(string.Format(inv, "HFT/FFT step time {0:F3} (cost bound {1:F3}).", JsonNumbers.ToDouble(r["step_time_ratio_hft_fft"]), JsonNumbers.ToDouble(r["hft"]!["cost_bound"])));
        sb.AppendLine().AppendLine("Sample answers (held out):").AppendLine();
        var fftAnswers = r["fft"]!["answers"]!.AsArray();
        var hftAnswers = r["hft"]!["answers"]!.AsArray();
        for (int i = 0; i < Math.Min(4, fftAnswers.Count); i++)
            sb.AppendLine($"- {fftAnswers[i]!["prompt"]!.GetValue<string>().Split('\n').FirstOrDefault(l => l.StartsWith("Define", StringComparison.Ordinal)) ?? ""}: " +
                $"reference \"{fftAnswers[i]!["reference"]}\"; FFT \"{fftAnswers[i]!["answer"]!.GetValue<string>().Trim()}\"; HFT \"{hftAnswers[i]!["answer"]!.GetValue<string>().Trim()}\"");
        return sb.ToString();
    }
}
