using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>The README's main job, in its quick form: the report's fields, and both methods changed the weights.</summary>
[TestFixture]
public sealed class DemoTests
{
    [Test]
    public void QuickDemoReportsForgettingForBothMethods()
    {
        string o = Path.Combine(Fixtures.TempDirectory(), "demo");
        var (code, output, err) = HftCli.Run("demo", "--quick", "--device", "cpu", "--quiet", "--out", o);
        Assert.That(code, Is.EqualTo(Program.ExitOk), output + err);
        var r = JsonNode.Parse(File.ReadAllText(Path.Combine(o, "report.json")))!;
        Assert.That(JsonNumbers.ToDouble(r["base_ppl_before"]), Is.GreaterThan(1));
        Assert.That((string?)r["precision"], Is.EqualTo("fp32"), "auto is fp32 on the CPU back-end");
        Assert.That((string?)r["pretrain"]!["precision"], Is.EqualTo("fp32"));
        foreach (var m in new[] { "fft", "hft" })
            foreach (var key in new[] { "base_ppl_after", "task_loss", "task_exact_match", "step_ms_median", "tokens_per_s", "bytes_optimizer" })
                Assert.That(double.IsFinite(JsonNumbers.ToDouble(r[m]![key])), $"{m}.{key}");
        Assert.That(JsonNumbers.ToDouble(r["hft"]!["bytes_optimizer"]), Is.LessThan(JsonNumbers.ToDouble(r["fft"]!["bytes_optimizer"])));
        if (r["forgetting_ratio"] is JsonNode ratio)
        {
            double before = JsonNumbers.ToDouble(r["base_ppl_before"]);
            Assert.That(JsonNumbers.ToDouble(ratio), Is.EqualTo((JsonNumbers.ToDouble(r["hft"]!["base_ppl_after"]) - before) /
                (JsonNumbers.ToDouble(r["fft"]!["base_ppl_after"]) - before)).Within(1e-12));
        }
        else Assert.That(r["warning"], Is.Not.Null);
        foreach (var f in new[] { "report.md", "demo.png" }) Assert.That(new FileInfo(Path.Combine(o, f)).Length, Is.GreaterThan(1000), f);
        Assert.That(output, Does.Contain("forgetting_ratio"));

        using var baseWeights = SafeTensorsCheckpoint.Open(Path.Combine(o, "base"));
        foreach (var m in new[] { "fft", "hft" })
        {
            using var tuned = SafeTensorsCheckpoint.Open(Path.Combine(o, m));
            int changed = baseWeights.Names.Count(n => !baseWeights.ReadFloat32(n).AsSpan().SequenceEqual(tuned.ReadFloat32(n)));
            Assert.That(changed, Is.GreaterThan(0), $"{m} changed the weights");
            if (m == "fft") Assert.That(changed, Is.EqualTo(baseWeights.Names.Count), "full fine-tuning changes every tensor");
            else Assert.That(changed, Is.LessThan(baseWeights.Names.Count), "HFT leaves its frozen half untouched");
        }
    }

    [Test]
    public void Bf16DemoWithTwoSeedsPretrainsAndFineTunesInBf16AndVerifiesBothPrecisions()
    {
        string o = Path.Combine(Fixtures.TempDirectory(), "demo-bf16");
        string? saved = Environment.GetEnvironmentVariable("HFT_DEMO_SCALE");
        try
        {
            // A tiny model fine-tuned hard enough (lr 1e-2) that full fine-tuning raises the perplexity on A for both seeds.
            Environment.SetEnvironmentVariable("HFT_DEMO_SCALE", "32,1,2,64,40,4,32,1e-2,12,4,32,1e-2,2");
            var (code, output, err) = HftCli.Run("demo", "--device", "cpu", "--threads", "2", "--precision", "bf16", "--seeds", "2", "--out", o);
            Assert.That(code, Is.EqualTo(Program.ExitOk), output + err);
            foreach (var p in new[] { "fp32", "bf16" })
                Assert.That(output, Does.Match($@"llama-mha +{p} PASS"), $"the reference cases checked in {p}");
            Assert.That(output, Does.Contain("tokens, bf16)"), "the pretraining says its precision");
            var r = JsonNode.Parse(File.ReadAllText(Path.Combine(o, "report.json")))!;
            Assert.That((string?)r["precision"], Is.EqualTo("bf16"));
            Assert.That((string?)r["pretrain"]!["precision"], Is.EqualTo("bf16"));
            Assert.That((string?)r["scale"], Is.EqualTo("custom"));
            var each = r["forgetting_ratio_seeds"]!.AsArray();
            Assert.That(each, Has.Count.EqualTo(2), "each seed's ratio");
            Assert.That(each, Has.All.Not.Null, "full fine-tuning raised the perplexity with both seeds");
            double a = JsonNumbers.ToDouble(each[0]), b = JsonNumbers.ToDouble(each[1]);
            Assert.That(JsonNumbers.ToDouble(r["forgetting_ratio"]), Is.EqualTo((a + b) / 2).Within(1e-12));
            Assert.That(JsonNumbers.ToDouble(r["forgetting_ratio_std"]), Is.EqualTo(Math.Abs(a - b) / Math.Sqrt(2)).Within(1e-9));
            Assert.That(output, Does.Contain($"(seeds: {a.ToString("F3", System.Globalization.CultureInfo.InvariantCulture)}, "));
            foreach (var m in new[] { "fft-seed1", "fft-seed2", "hft-seed1", "hft-seed2" })
                Assert.That(File.Exists(Path.Combine(o, m, "model.safetensors")), m);
        }
        finally { Environment.SetEnvironmentVariable("HFT_DEMO_SCALE", saved); }
    }

    [Test]
    public void DemoRejectsAnUnknownPrecisionNamingTheChoices()
    {
        var (code, output, err) = HftCli.Run("demo", "--precision", "fp16", "--out", Path.Combine(Fixtures.TempDirectory(), "never"));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("error: unknown precision 'fp16': expected fp32, bf16 or auto"));
    }
}
