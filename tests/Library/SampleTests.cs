using System.Diagnostics;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Library;

/// <summary>The sample under samples/ fine-tunes with HFT through the public API and answers a prompt.</summary>
[TestFixture]
public sealed class SampleTests
{
    [Test]
    public void SampleFineTunesAndAnswers()
    {
        string model = TestData.TinyModel();
        string work = Fixtures.TempDirectory();
        string data = TestData.WriteSft(work, 300);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Path.Combine(TestContext.CurrentContext.TestDirectory, "HftSample.dll"), model, data, Path.Combine(work, "out"), "Upper: whale" })
            psi.ArgumentList.Add(a);
        psi.Environment["HFT_THREADS"] = "2";
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0), stdout + stderr);
        Assert.That(stdout, Does.Contain("step 30: loss").And.Contain("tensors frozen").And.Contain("Upper: whale -> "));
        Assert.That(File.Exists(Path.Combine(work, "out", "model.safetensors")));
        Assert.That(File.ReadAllLines(Path.Combine(PackagingTests.RepositoryRoot(), "samples", "HftSample", "Program.cs")).Length, Is.LessThanOrEqualTo(40),
            "the sample stays about 30 lines");
    }
}
