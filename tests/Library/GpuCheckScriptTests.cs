using System.Diagnostics;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Library;

/// <summary>
/// tools/gpu-check.sh's probes with a stand-in for hft that fails the self-test cases of one "faulty" launch: one
/// faulty refinement of the warp-specialized GEMM turns off that refinement alone for the later steps, not the kernel.
/// </summary>
[TestFixture, Platform(Exclude = "Win", Reason = "a bash script")]
public sealed class GpuCheckScriptTests
{
    // The stand-in logs each call (its arguments and the HFT_…=off switches it sees) and fails a self-test whose
    // selection (--only, --skip, as hft selftest selects by name) takes in the case STUB_FAULT, unless the switch
    // STUB_SWITCH is off.
    private const string Stub = """
        #!/usr/bin/env bash
        echo "$* |$(env | grep -E '^HFT_[A-Z0-9_]+=off$' | sort | tr '\n' ' ')" >> "$STUB_LOG"
        [ "$1" = selftest ] || exit 0
        [ "${!STUB_SWITCH:-}" != off ] || exit 0
        only=; skips=()
        while [ $# -gt 0 ]; do case $1 in --only) only=$2; shift;; --skip) skips+=("$2"); shift;; esac; shift; done
        [[ "$STUB_FAULT" == *"$only"* ]] || exit 0
        for s in "${skips[@]}"; do [[ "$STUB_FAULT" != *"$s"* ]] || exit 0; done
        echo "FAIL: $STUB_FAULT"; exit 1
        """;

    private static (int Code, string Output, string[] Calls) RunScript(string fault, string faultSwitch, string steps = "probes kernels")
    {
        string dir = Fixtures.TempDirectory(), hft = Path.Combine(dir, "hft"), log = Path.Combine(dir, "calls.log");
        File.WriteAllText(hft, Stub.Replace("\r", "") + "\n");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(hft, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(PackagingTests.RepositoryRoot(), "tools", "gpu-check.sh"));
        psi.Environment["HFT"] = hft;
        psi.Environment["STUB_LOG"] = log;
        psi.Environment["STUB_FAULT"] = fault;
        psi.Environment["STUB_SWITCH"] = faultSwitch;
        psi.Environment["GPU_CHECK_STEPS"] = steps;
        psi.Environment.Remove("OUT");
        foreach (var name in psi.Environment.Keys.Where(k => k.StartsWith("HFT_", StringComparison.Ordinal)).ToArray()) psi.Environment.Remove(name);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd() + stderr.Result;
        p.WaitForExit();
        return (p.ExitCode, output, File.ReadAllLines(log));
    }

    /// <summary>The call after the probes (the kernels step), with the switches it saw.</summary>
    private static string Later(string[] calls) => calls.Single(c => c.StartsWith("selftest --device cuda --skip matmul", StringComparison.Ordinal));

    [TestCase("matmul bf16 wgmma-ws sum", "HFT_GEMM_SUM")]
    [TestCase("matmul bf16 wgmma-ws swiglu", "HFT_GEMM_SWIGLU")]
    [TestCase("matmul bf16 wgmma-ws rotated", "HFT_GEMM_ROPE")]
    [TestCase("matmul bf16 wgmma-ws", "HFT_GEMM_PERSISTENT")]
    [TestCase("matmul bf16 wgmma-ws", "HFT_WGMMA_WS192")]
    public void AFaultyRefinementTurnsOffThatRefinementAlone(string fault, string faultSwitch)
    {
        var (code, output, calls) = RunScript(fault, faultSwitch);
        Assert.That(code, Is.EqualTo(1), output);
        Assert.That(Later(calls), Does.Contain(faultSwitch + "=off").And.Not.Contain("HFT_WGMMA_WS=off"), output);
        Assert.That(Later(calls).Split('|')[1].Trim().Split(' '), Has.Length.EqualTo(1), output);
        Assert.That(output, Does.Contain($"== {faultSwitch}=off from here"));
    }

    [Test]
    public void AFaultInThePlainProductsTurnsOffTheKernel()
    {
        var (code, output, calls) = RunScript("matmul bf16 wgmma-ws", "HFT_WGMMA_WS");
        Assert.That(code, Is.EqualTo(1), output);
        Assert.That(Later(calls).Split('|')[1].Trim(), Is.EqualTo("HFT_WGMMA_WS=off"), output);
        Assert.That(calls.Count(c => c.Contains("wgmma-ws", StringComparison.Ordinal)), Is.EqualTo(3), "whole, tiles, tiles-256: then no more");
    }

    /// <summary>A fallback kernel whose probe fails is turned off alone; the default kernel's probe runs first.</summary>
    [TestCase("matmul bf16 wgmma-tma 4096x768x768 NT", "HFT_WGMMA_TMA")]
    [TestCase("matmul bf16 wgmma 4096x768x768 NT", "HFT_WGMMA")]
    [TestCase("matmul bf16 mma 4096x768x768 NT", "HFT_MMA")]
    public void AFaultyFallbackKernelIsTurnedOffAlone(string fault, string faultSwitch)
    {
        var (code, output, calls) = RunScript(fault, faultSwitch);
        Assert.That(code, Is.EqualTo(1), output);
        Assert.That(Later(calls).Split('|')[1].Trim(), Is.EqualTo(faultSwitch + "=off"), output);
        Assert.That(calls[0], Does.StartWith("selftest --device cuda --only bf16 wgmma-ws |"), output);
        Assert.That(output, Does.Match(@"== mma: exit \d+ after \d+ s"), "each step's exit status and seconds are logged");
    }

    /// <summary>The demo steps run hft demo on the card: --quick by default, the GPU scale as the step "demo".</summary>
    [Test]
    public void DemoStepsRunTheDemoOnTheCard()
    {
        var (code, output, calls) = RunScript("none", "HFT_NONE", "demo-quick demo");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(calls.Select(c => c.Split('|')[0].Trim()), Is.EqualTo(new[]
        {
            "demo --device cuda --out /tmp/hft-demo-quick --quick",
            "demo --device cuda --out /tmp/hft-demo --seeds 3",
        }), output);
    }

    [Test]
    public void PassingProbesTurnNothingOff()
    {
        var (code, output, calls) = RunScript("matmul bf16 nothing", "HFT_NONE");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(calls, Has.Length.EqualTo(5), "four probes and the kernels step");
        Assert.That(Later(calls).Split('|')[1].Trim(), Is.Empty);
    }
}
