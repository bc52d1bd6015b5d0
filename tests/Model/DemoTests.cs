using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>The README's main job, in its quick form.</summary>
[TestFixture]
public sealed class DemoTests
{
    [Test]
    public void QuickDemoVerifiesTrainsBothMethodsAndReports()
    {
        string o = Path.Combine(Fixtures.TempDirectory(), "demo");
        var (code, output, err) = HftCli.Run("demo", "--quick", "--device", "cpu", "--out", o);
        Assert.That(code, Is.EqualTo(Program.ExitOk), output + err);
        Assert.That(output, Does.Contain("llama-mha").And.Contain("llama-gqa-tied-hft").And.Contain("PASS"));
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(o, "report.json")))!;
        Assert.That(report["fft"]!["params_trainable"]!.GetValue<long>(), Is.GreaterThan(report["hft"]!["params_trainable"]!.GetValue<long>()));
        Assert.That(report["hft"]!["bytes_optimizer"]!.GetValue<long>(), Is.EqualTo(8 * report["hft"]!["params_trainable"]!.GetValue<long>()));
        Assert.That(report["cost_bound"]!.GetValue<double>(), Is.InRange(0.5, 0.99));
        foreach (var d in new[] { "base", "fft", "hft" }) Assert.That(File.Exists(Path.Combine(o, d, "model.safetensors")), d);
        Assert.That(File.Exists(Path.Combine(o, "report.md")));
    }
}
