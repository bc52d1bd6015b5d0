using HftRuntime.Cli;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>The model against Hugging Face's float64 reference cases (llm.c's test_gpt2, for us).</summary>
[TestFixture]
public sealed class GoldenVerifyTests
{
    [TestCaseSource(typeof(Fixtures), nameof(Fixtures.Cases))]
    public void EveryQuantityIsWithinTolerance(string name)
    {
        using var backend = new CpuBackend(2);
        var report = GoldenVerifier.Run(Fixtures.Case(name), backend);
        var failed = report.Rows.Where(r => !r.Pass).Select(r => $"{r.Quantity}: {r.RelativeError:E2}").ToList();
        Assert.That(failed, Is.Empty);
        // Every parameter's gradient and post-AdamW value was compared (nothing skipped silently).
        int parameters = report.Rows.Count(r => r.Quantity.StartsWith("grad.", StringComparison.Ordinal));
        Assert.That(report.Rows.Count(r => r.Quantity.StartsWith("after.", StringComparison.Ordinal) || r.Quantity.StartsWith("frozen.", StringComparison.Ordinal)),
            Is.EqualTo(parameters));
        Assert.That(parameters, Is.GreaterThan(10));
        if (name == "llama-mha")
            Assert.That(report.Rows.Count(r => r.Quantity.StartsWith("dpo.grad.", StringComparison.Ordinal)), Is.EqualTo(parameters));
        else
            Assert.That(report.Rows.Count(r => r.Quantity.StartsWith("frozen.", StringComparison.Ordinal)), Is.EqualTo(13));
    }

    [Test]
    public void CliVerifyPassesBothCases()
    {
        var (code, output, _) = HftCli.Run("verify", "--device", "cpu", "--golden", Fixtures.Case("llama-mha"), Fixtures.Case("llama-gqa-tied-hft"));
        Assert.That(code, Is.EqualTo(Program.ExitOk), output);
        Assert.That(output, Does.Contain("PASS: 70 quantities"));
        Assert.That(output, Does.Contain("PASS: 64 quantities"));
    }

    [Test]
    public void VerifyFailsWhenTheWeightsAreSlightlyWrong()
    {
        // A perturbation of one weight tensor by 1e-3 relative must be caught by the logits check.
        string dir = Fixtures.CopyCase("llama-mha");
        string path = Path.Combine(dir, "model.safetensors");
        var entries = new List<SafeTensorsWriter.Entry>();
        using (var file = SafeTensorsFile.Open(path))
            foreach (var name in file.Names)
            {
                var values = file.ReadFloat32(name);
                if (name == "model.layers.1.mlp.up_proj.weight")
                    for (int i = 0; i < values.Length; i++) values[i] *= 1.001f;
                entries.Add(SafeTensorsWriter.Entry.FromFloat32(name, values, file.Get(name).Shape));
            }
        SafeTensorsWriter.Write(path, entries);
        var (code, output, _) = HftCli.Run("verify", "--device", "cpu", "--golden", dir);
        Assert.That(code, Is.EqualTo(Program.ExitCheckFailed), output);
        Assert.That(output, Does.Contain("FAIL"));
        Assert.That(output, Does.Match(@"\nlogits\s+\S+\s+\S+\s+\S+\s+FAIL"));
    }
}
