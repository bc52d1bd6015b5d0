using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Model;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>
/// <c>hft bench --quick</c> on the CPU: the JSON keys the GPU check and tools/pytorch_baseline.py's comparison read
/// (GEMM in fp32 and bf16, FFT and HFT steps in fp32 and bf16, one HFT/FFT ratio per precision), the markdown, and
/// <c>--from</c> with <c>--compare</c> against a PyTorch-shaped file.
/// </summary>
[TestFixture]
public sealed class BenchmarkTests
{
    private string _dir = null!;
    private string _json = null!;
    private string _output = null!;
    private JsonObject _report = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        _dir = Fixtures.TempDirectory();
        _json = Path.Combine(_dir, "bench.json");
        var (code, output, err) = HftCli.Run("bench", "--device", "cpu", "--threads", "2", "--quick", "--model", "small", "--json", _json);
        Assert.That(code, Is.EqualTo(Program.ExitOk), output + err);
        _output = output;
        _report = JsonNode.Parse(File.ReadAllText(_json))!.AsObject();
    }

    [OneTimeTearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void GemmHasOurBf16KernelAtEverySizeOfTheFp32One()
    {
        var gemm = _report["gemm"]!.AsArray();
        var fp32 = gemm.Where(g => g!["impl"]!.GetValue<string>() == "ours-fp32").Select(g => g!["m"]!.GetValue<int>()).ToList();
        var bf16 = gemm.Where(g => g!["impl"]!.GetValue<string>() == "ours-bf16").Select(g => g!["m"]!.GetValue<int>()).ToList();
        Assert.That(fp32, Is.Not.Empty);
        Assert.That(bf16, Is.EqualTo(fp32));
        foreach (var g in gemm)
        {
            Assert.That(g!["error"], Is.Null, g.ToJsonString());
            Assert.That(g["tflops"]!.GetValue<double>(), Is.GreaterThan(0), g.ToJsonString());
        }
    }

    /// <summary>
    /// Each step entry carries the profile of one step: the operations of a training step (matrix products by form
    /// and precision with their TFLOP/s, attention, AdamW), whose times sum to total_ms; HFT runs fewer products with
    /// a weight gradient (TN) than FFT; the markdown sets the profiles side by side.
    /// </summary>
    [Test]
    public void EveryStepHasAProfileOfWhereItsTimeGoes()
    {
        var steps = _report["step"]!.AsArray();
        foreach (var s in steps)
        {
            var profile = s!["profile"]!.AsObject();
            var ops = profile["ops"]!.AsObject();
            string p = s["precision"]!.GetValue<string>();
            Assert.That(ops.Select(kv => kv.Key), Is.SupersetOf(new[] { $"matmul NT {p}", $"matmul NN {p}", $"matmul TN {p}", "attention_forward", "attention_backward", "adamw", "cross_entropy" }), s.ToJsonString());
            Assert.That(ops[$"matmul NT {p}"]!["tflops"]!.GetValue<double>(), Is.GreaterThan(0));
            Assert.That(profile["total_ms"]!.GetValue<double>(), Is.EqualTo(ops.Sum(kv => kv.Value!["ms"]!.GetValue<double>())).Within(1e-6));
        }
        int Tn(string method, string precision) => steps.First(s => s!["method"]!.GetValue<string>() == method && s["precision"]!.GetValue<string>() == precision)!
            ["profile"]!["ops"]![$"matmul TN {precision}"]!["calls"]!.GetValue<int>();
        foreach (string p in new[] { "fp32", "bf16" }) Assert.That(Tn("hft", p), Is.LessThan(Tn("fft", p)), p);
        Assert.That(_output, Does.Contain("Where a step's time goes").And.Contain("| matmul NT fp32 | "));
    }

    [Test]
    public void StepHasFftAndHftInBothPrecisions()
    {
        var steps = _report["step"]!.AsArray();
        Assert.That(steps.Select(s => $"{s!["method"]} {s["precision"]}"), Is.EqualTo(new[] { "fft fp32", "hft fp32", "fft bf16", "hft bf16" }));
        foreach (var s in steps)
        {
            Assert.That(s!["error"], Is.Null, s.ToJsonString());
            Assert.That(s["ms"]!.GetValue<double>(), Is.GreaterThan(0));
            Assert.That(s["tokens_per_s"]!.GetValue<double>(), Is.EqualTo(4 * 256 / (s["ms"]!.GetValue<double>() / 1e3)).Within(1e-6).Percent);
            Assert.That(s["peak_bytes"]!.GetValue<long>(), Is.GreaterThan(0));
            Assert.That(s["loss"]!.GetValue<double>(), Is.GreaterThan(0).And.LessThan(20));
            double bound = s["cost_bound"]!.GetValue<double>();
            if (s["method"]!.GetValue<string>() == "fft") Assert.That(bound, Is.EqualTo(1.0));
            else Assert.That(bound, Is.InRange(0.5, 0.99));
        }
        // The precision reached the model: bf16 holds bf16 copies (and frozen matrices in bf16 alone), so its arena differs.
        Assert.That(steps[2]!["peak_bytes"]!.GetValue<long>(), Is.Not.EqualTo(steps[0]!["peak_bytes"]!.GetValue<long>()));
        Assert.That(steps[3]!["peak_bytes"]!.GetValue<long>(), Is.Not.EqualTo(steps[1]!["peak_bytes"]!.GetValue<long>()));
    }

    [Test]
    public void OneHftFftRatioPerPrecision()
    {
        var ratios = _report["hft_fft_ratio"]!.AsObject();
        var steps = _report["step"]!.AsArray();
        Assert.That(ratios.Select(kv => kv.Key), Is.EqualTo(new[] { "fp32", "bf16" }));
        Assert.That(ratios["fp32"]!.GetValue<double>(), Is.EqualTo(steps[1]!["ms"]!.GetValue<double>() / steps[0]!["ms"]!.GetValue<double>()).Within(1e-12));
        Assert.That(ratios["bf16"]!.GetValue<double>(), Is.EqualTo(steps[3]!["ms"]!.GetValue<double>() / steps[2]!["ms"]!.GetValue<double>()).Within(1e-12));
    }

    [Test]
    public void StepModelAndFrozenTensorsAreRecorded()
    {
        var (config, batch, seq) = Benchmarks.StepModel("small");
        Assert.That(_report["complete"]!.GetValue<bool>(), Is.True);
        Assert.That(_report["step_model"]!.GetValue<string>(), Is.EqualTo("small"));
        Assert.That(_report["step_batch"]!.GetValue<int>(), Is.EqualTo(batch));
        Assert.That(_report["step_seq"]!.GetValue<int>(), Is.EqualTo(seq));
        Assert.That(LlamaConfig.Parse(_report["step_config"]!.ToJsonString(), "step_config"), Is.EqualTo(config));
        var frozen = FreezePolicy.Hft(1).SelectFrozen(LlamaModel.TensorNames(config));
        Assert.That(_report["step_frozen"]!.AsArray().Select(n => n!.GetValue<string>()), Is.EquivalentTo(frozen));
        Assert.That(Benchmarks.Errors(_report), Is.Empty);
    }

    [Test]
    public void MarkdownListsEveryEntry()
    {
        Assert.That(_output, Does.Contain("| ours-bf16 | 256 |"));
        foreach (string row in new[] { "| fft | fp32 |", "| hft | fp32 |", "| fft | bf16 |", "| hft | bf16 |" })
            Assert.That(_output, Does.Contain(row));
        Assert.That(_output, Does.Match(@"HFT/FFT step time fp32 \d\.\d{3}, bf16 \d\.\d{3} against cost_bound"));
    }

    /// <summary>A file shaped as tools/pytorch_baseline.py writes it, with figures derived from ours (2× our times, half our TFLOP/s).</summary>
    private JsonObject TorchLike(bool sameFrozen)
    {
        var gemm = new JsonArray();
        foreach (var g in _report["gemm"]!.AsArray().Where(g => g!["impl"]!.GetValue<string>().StartsWith("ours-", StringComparison.Ordinal)))
        {
            string impl = "torch-" + g!["impl"]!.GetValue<string>()[5..];
            gemm.Add(new JsonObject { ["impl"] = impl, ["m"] = g["m"]!.GetValue<int>(), ["n"] = g["n"]!.GetValue<int>(), ["k"] = g["k"]!.GetValue<int>(), ["tflops"] = g["tflops"]!.GetValue<double>() / 2 });
        }
        var steps = new JsonArray();
        foreach (var s in _report["step"]!.AsArray())
        {
            steps.Add(new JsonObject
            {
                ["method"] = s!["method"]!.GetValue<string>(), ["precision"] = s["precision"]!.GetValue<string>(), ["ms"] = 2 * s["ms"]!.GetValue<double>(),
                ["tokens_per_s"] = s["tokens_per_s"]!.GetValue<double>() / 2, ["peak_bytes"] = 4 * s["peak_bytes"]!.GetValue<long>(),
            });
        }
        steps.Add(new JsonObject { ["method"] = "fft", ["precision"] = "bf16-pure", ["ms"] = 12.5, ["tokens_per_s"] = 81920.0, ["peak_bytes"] = 1000L });
        var frozen = _report["step_frozen"]!.AsArray().Select(n => n!.GetValue<string>()).ToList();
        if (!sameFrozen) frozen.RemoveAt(0);
        return new JsonObject
        {
            ["card"] = "test card", ["torch_version"] = "2.test", ["transformers_version"] = "4.test",
            ["model"] = new JsonObject { ["config"] = _report["step_config"]!.DeepClone(), ["batch"] = _report["step_batch"]!.GetValue<int>(), ["seq"] = _report["step_seq"]!.GetValue<int>() },
            ["frozen"] = new JsonArray(frozen.Select(n => (JsonNode)n).ToArray()),
            ["gemm"] = gemm, ["step"] = steps,
            ["attention"] = new JsonObject
            {
                ["shape"] = "b8 t1024 h12 d64 causal", ["precision"] = "fp32", ["forward_ms"] = 2 * _report["attention"]!["forward_ms"]!.GetValue<double>(),
                ["backward_ms"] = 4 * _report["attention"]!["backward_ms"]!.GetValue<double>(),
            },
            ["attention_bf16"] = new JsonObject { ["shape"] = "b8 t1024 h12 d64 causal", ["precision"] = "bf16", ["error"] = "RuntimeError: no kernel" },
            ["hft_fft_ratio"] = new JsonObject { ["fp32"] = 0.9, ["bf16"] = 0.8, ["bf16-pure"] = 0.7 },
        };
    }

    [Test]
    public void CompareSetsOursBesidePyTorch()
    {
        string text = BenchReport.Compare(_report, TorchLike(sameFrozen: true));
        Assert.That(text, Does.Not.Contain("Note:"));
        Assert.That(text, Does.Match(@"\| ours-fp32 \| 256 \| [\d.]+ \| torch-fp32 \| [\d.]+ \| 2\.000 \|"));
        Assert.That(text, Does.Match(@"\| ours-bf16 \| 256 \| [\d.]+ \| torch-bf16 \| [\d.]+ \| 2\.000 \|"));
        foreach (string p in new[] { "fp32", "bf16" })
        {
            foreach (string m in new[] { "fft", "hft" })
                Assert.That(text, Does.Match($@"\| {m} \| {p} \| [\d.]+ \| [\d.]+ \| 0\.500 \| [\d,]+ \| [\d,]+ \| [\d,]+ \| [\d,]+ \| 0\.250 \|"));
        }
        Assert.That(text, Does.Contain("| fft | bf16-pure (PyTorch only) | | 12.5 |"));
        Assert.That(text, Does.Match(@"\| b2 t512 h4 d64 causal \| fp32 \| [\d.]+ \| [\d.]+ \| 0\.500 \| [\d.]+ \| [\d.]+ \| 0\.250 \|"), "our attention beside PyTorch's");
        Assert.That(text, Does.Contain("| bf16 | n/a | failed: RuntimeError: no kernel |"), "a CPU run has no bf16 attention; PyTorch's failure is shown");
        Assert.That(text, Does.Match(@"\| fp32 \| \d\.\d{3} \| 0\.900 \|"));
        Assert.That(text, Does.Contain("| bf16-pure | n/a | 0.700 |"));
    }

    /// <summary>
    /// Step entries that name their bf16 GEMM kernel (a CUDA run times bf16 with both) get their own label, ratio and
    /// rows, compared with PyTorch's bf16.
    /// </summary>
    [Test]
    public void StepsOfTheOtherBf16GemmKernelAreLabelledApart()
    {
        var report = _report.DeepClone().AsObject();
        var steps = report["step"]!.AsArray();
        foreach (var s in steps.Where(s => s!["precision"]!.GetValue<string>() == "bf16").ToList())
        {
            var fast = s!.DeepClone().AsObject();
            fast["bf16_gemm"] = "fast";
            fast["ms"] = s["ms"]!.GetValue<double>() / 4;
            steps.Add(fast);
        }
        Assert.That(Benchmarks.StepLabel(steps.Last()), Is.EqualTo("bf16 fast-gemm"));
        Assert.That(Benchmarks.StepLabel(steps.First()), Is.EqualTo("fp32"));
        string markdown = BenchReport.Markdown(report);
        Assert.That(markdown, Does.Contain("| fft | bf16 fast-gemm |").And.Contain("| hft | bf16 fast-gemm |").And.Contain("| fft | bf16 |"));
        string text = BenchReport.Compare(report, TorchLike(sameFrozen: true));
        Assert.That(text, Does.Match(@"\| fft \| bf16 fast-gemm \| [\d.]+ \| [\d.]+ \| 0\.125 \|"), "a quarter of our bf16 time against twice it");
    }

    /// <summary>
    /// A CUDA report's other bf16 GEMM kernels (a wgmma entry here) are compared with torch-bf16 like ours-bf16, a
    /// failed one shows its error, and the wgmma status is printed.
    /// </summary>
    [Test]
    public void EveryBf16GemmKernelIsComparedAndTheWgmmaStatusShown()
    {
        var report = _report.DeepClone().AsObject();
        var gemm = report["gemm"]!.AsArray();
        var bf16 = gemm.First(g => g!["impl"]!.GetValue<string>() == "ours-bf16")!;
        var wgmma = bf16.DeepClone().AsObject();
        wgmma["impl"] = "ours-bf16-wgmma";
        wgmma["tflops"] = bf16["tflops"]!.GetValue<double>() * 2;
        gemm.Add(wgmma);
        gemm.Add(new JsonObject { ["impl"] = "ours-bf16-fast", ["m"] = 256, ["n"] = 256, ["k"] = 256, ["error"] = "boom" });
        report["wgmma"] = "NT checked; NN failed: element (0, 1) is 2, the simple kernel gives 1; TN unchecked";
        string text = BenchReport.Compare(report, TorchLike(sameFrozen: true));
        Assert.That(text, Does.Match(@"\| ours-bf16-wgmma \| 256 \| [\d.]+ \| torch-bf16 \| [\d.]+ \| 4\.000 \|"));
        Assert.That(text, Does.Contain("| ours-bf16-fast | 256 | failed: boom | torch-bf16 |"));
        Assert.That(BenchReport.Markdown(report), Does.Contain("wgmma kernel: NT checked; NN failed: element (0, 1) is 2, the simple kernel gives 1; TN unchecked."));
    }

    /// <summary>
    /// The products of a step of the 134M model: each projection's three forms, the equal shapes once (q, k, v and o
    /// are all 768 × 768), the head in chunks of its loss rows.
    /// </summary>
    [Test]
    public void TrainingGemmsAreTheStepsDistinctProducts()
    {
        var (config, batch, seq) = Benchmarks.StepModel("base");
        var list = Benchmarks.TrainingGemms(config, batch, seq);
        int rows = LlamaModelOptions.DefaultLossChunkRows(batch, seq, config.VocabSize);
        Assert.That(rows, Is.EqualTo(2048));
        var shapes = list.Select(g => $"{g.Product} {g.Form} {g.M}x{g.N}x{g.K}").ToArray();
        Assert.That(shapes, Is.EqualTo(new[]
        {
            "x·W_qᵀ NT 8192x768x768", "x·W_gateᵀ NT 8192x2048x768", "x·W_downᵀ NT 8192x768x2048", "x·W_headᵀ NT 2048x32000x768",
            "dy·W_q NN 8192x768x768", "dy·W_gate NN 8192x768x2048", "dy·W_down NN 8192x2048x768", "dy·W_head NN 2048x768x32000",
            "dW_q TN 768x768x8192", "dW_gate TN 2048x768x8192", "dW_down TN 768x2048x8192", "dW_head TN 32000x768x2048",
            "dq·W_q + dk·W_k + dv·W_v NN 8192x768x2304", "dgate·W_gate + dup·W_up NN 8192x768x4096",
        }));
        Assert.That(list[^2].Parts, Is.EqualTo(new[] { 768, 768, 768 }));
        Assert.That(list[^1].Parts, Is.EqualTo(new[] { 2048, 2048 }));
    }

    /// <summary>tools/pytorch_baseline.py times the same products as hft bench's gemm_training (its own copy of the list, in Python).</summary>
    [TestCase("base")]
    [TestCase("small")]
    public void ThePyTorchBaselineTimesTheSameTrainingProducts(string model)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-c", "import sys; sys.path.insert(0, sys.argv[1]); import pytorch_baseline as p; " +
            "print('\\n'.join(f'{g[0]} {g[1]} {g[2]}x{g[3]}x{g[4]}' for g in p.training_gemms(sys.argv[2])))", Path.Combine(HftRuntime.Tests.Library.PackagingTests.RepositoryRoot(), "tools"), model })
            psi.ArgumentList.Add(a);
        System.Diagnostics.Process p;
        try { p = System.Diagnostics.Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception) { Assert.Inconclusive("no python3"); return; }
        using (p)
        {
            var stderr = p.StandardError.ReadToEndAsync();
            string[] python = p.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            p.WaitForExit();
            Assert.That(p.ExitCode, Is.Zero, stderr.Result);
            var (config, batch, seq) = Benchmarks.StepModel(model);
            Assert.That(python, Is.EqualTo(Benchmarks.TrainingGemms(config, batch, seq).Select(g => $"{g.Product} {g.Form} {g.M}x{g.N}x{g.K}").ToArray()));
        }
    }

    /// <summary>gemm_training is a table of kernels by product, in the summary and, with PyTorch's column, in the comparison.</summary>
    [Test]
    public void TrainingGemmsAreTabledByProductAndKernel()
    {
        var report = _report.DeepClone().AsObject();
        JsonObject Entry(string impl, string product, string form, int m, int n, int k, double? tflops) => new()
        {
            ["impl"] = impl, ["product"] = product, ["form"] = form, ["m"] = m, ["n"] = n, ["k"] = k,
            ["tflops"] = tflops is double t ? t : null, ["error"] = tflops is null ? "boom" : null,
        };
        report["gemm_training"] = new JsonArray(Entry("ours-bf16", "x·W_qᵀ", "NT", 8192, 768, 768, 61.5), Entry("ours-bf16-wgmma", "x·W_qᵀ", "NT", 8192, 768, 768, 402.5),
            Entry("ours-bf16", "dW_q", "TN", 768, 768, 8192, 50), Entry("ours-bf16-wgmma", "dW_q", "TN", 768, 768, 8192, null));
        Assert.That(BenchReport.Markdown(report), Does.Contain("| product | form m×n×k | ours-bf16 | ours-bf16-wgmma |")
            .And.Contain("| x·W_qᵀ | NT 8192x768x768 | 61.5 | 402.5 |").And.Contain("| dW_q | TN 768x768x8192 | 50.0 | error |"));
        var torch = TorchLike(sameFrozen: true);
        torch["gemm_training"] = new JsonArray(Entry("torch-bf16", "x·W_qᵀ", "NT", 8192, 768, 768, 500));
        Assert.That(BenchReport.Compare(report, torch), Does.Contain("| ours-bf16 | ours-bf16-wgmma | torch-bf16 |")
            .And.Contain("| x·W_qᵀ | NT 8192x768x768 | 61.5 | 402.5 | 500.0 |").And.Contain("| dW_q | TN 768x768x8192 | 50.0 | error |  |"));
    }

    [Test]
    public void CompareNotesADifferentModelOrFrozenSet()
    {
        var torch = TorchLike(sameFrozen: false);
        torch["model"]!["config"]!["hidden_size"] = 768;
        torch["model"]!["batch"] = 8;
        string text = BenchReport.Compare(_report, torch);
        Assert.That(text, Does.Contain("Note: config \"hidden_size\" is 256 here and 768 in the PyTorch run"));
        Assert.That(text, Does.Contain("Note: batch 4 × 256 here, 8 × 256 in the PyTorch run"));
        Assert.That(text, Does.Contain("1 only here, 0 only there"));
    }

    [Test]
    public void CliComparesAnEarlierReportWithoutMeasuring()
    {
        string torchPath = Path.Combine(_dir, "torch.json");
        File.WriteAllText(torchPath, TorchLike(sameFrozen: true).ToJsonString());
        var (code, output, err) = HftCli.Run("bench", "--from", _json, "--compare", torchPath);
        Assert.That(code, Is.EqualTo(Program.ExitOk), output + err);
        Assert.That(output, Does.Contain("### hft bench on "));
        Assert.That(output, Does.Contain("against PyTorch 2.test (transformers 4.test) on test card"));
        Assert.That(output, Does.Contain("time ours/torch"));
    }

    [Test]
    public void AFailedMeasurementFailsTheCommand()
    {
        var broken = _report.DeepClone().AsObject();
        broken["step"]!.AsArray()[3] = new JsonObject { ["method"] = "hft", ["precision"] = "bf16", ["error"] = "NotSupportedException: test" };
        broken["hft_fft_ratio"]!.AsObject().Remove("bf16");
        string path = Path.Combine(_dir, "broken.json");
        File.WriteAllText(path, broken.ToJsonString());
        var (code, output, _) = HftCli.Run("bench", "--from", path);
        Assert.That(code, Is.EqualTo(Program.ExitCheckFailed));
        Assert.That(output, Does.Contain("| hft | bf16 | failed: NotSupportedException: test |"));
        Assert.That(output, Does.Contain("failed: step hft bf16: NotSupportedException: test"));
        Assert.That(Benchmarks.Errors(broken), Has.Count.EqualTo(1));
    }

    [Test]
    public void ARunStoppedEarlyLeavesWhatItMeasured()
    {
        // What a checkpoint holds before the steps: complete false, no step figures yet.
        var partial = _report.DeepClone().AsObject();
        partial["complete"] = false;
        foreach (string key in new[] { "copy_gbps", "adamw_gbps", "attention", "step", "hft_fft_ratio" }) partial.Remove(key);
        string path = Path.Combine(_dir, "partial.json");
        File.WriteAllText(path, partial.ToJsonString());
        var (code, output, _) = HftCli.Run("bench", "--from", path);
        Assert.That(code, Is.EqualTo(Program.ExitCheckFailed));
        Assert.That(output, Does.Contain("Incomplete: the run stopped before the end"));
        Assert.That(output, Does.Contain("| ours-bf16 | 256 |"));
        Assert.That(output, Does.Not.Contain("Training step"));
    }

    [Test]
    public void CheckpointsGrowToTheFinalReport()
    {
        using var cpu = new HftRuntime.Kernels.Cpu.CpuBackend(2);
        var seen = new List<(bool Complete, int Steps)>();
        var report = Benchmarks.Run(cpu, new BenchOptions("small", Quick: true), checkpoint: r =>
            seen.Add((r["complete"]!.GetValue<bool>(), (r["step"] as JsonArray)?.Count ?? -1)));
        Assert.That(report["complete"]!.GetValue<bool>(), Is.True);
        // After the GEMMs and attention (no steps yet), after each of the four steps, and the final report.
        Assert.That(seen, Is.EqualTo(new[] { (false, -1), (false, -1), (false, 1), (false, 2), (false, 3), (false, 4), (true, 4) }));
    }

    [Test]
    public void AMissingComparisonFileIsBadInput()
    {
        var (code, _, err) = HftCli.Run("bench", "--from", _json, "--compare", Path.Combine(_dir, "missing.json"));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("missing.json"));
    }

    /// <summary>--only measures just the parts named (here the GEMMs and attention: no bandwidth, no steps); an unknown part is bad input.</summary>
    [Test]
    public void OnlyMeasuresThePartsNamed()
    {
        string json = Path.Combine(_dir, "only.json");
        var (code, output, err) = HftCli.Run("bench", "--device", "cpu", "--threads", "2", "--quick", "--model", "small", "--only", "gemm, attention", "--json", json);
        Assert.That(code, Is.EqualTo(Program.ExitOk), output + err);
        var report = JsonNode.Parse(File.ReadAllText(json))!.AsObject();
        Assert.That(report["gemm"], Is.Not.Null);
        Assert.That(report["attention"], Is.Not.Null);
        Assert.That(report["copy_gbps"], Is.Null);
        Assert.That(report["step"], Is.Null);
        Assert.That(report["complete"]!.GetValue<bool>(), Is.True);
        Assert.That(output, Does.Contain("| ours-fp32 |").And.Not.Contain("Training step"));
        var (bad, _, badErr) = HftCli.Run("bench", "--device", "cpu", "--only", "gemm,steps");
        Assert.That(bad, Is.EqualTo(Program.ExitBadInput));
        Assert.That(badErr, Does.Contain("'steps'"));
    }
}
