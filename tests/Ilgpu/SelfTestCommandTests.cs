using HftRuntime.Cli;
using HftRuntime.Kernels.Ilgpu;
using NUnit.Framework;

namespace HftRuntime.Tests.Ilgpu;

/// <summary><c>hft selftest</c> and <c>--device cuda</c> from the command line.</summary>
[TestFixture]
public sealed class SelfTestCommandTests
{
    /// <summary>The small self-test passes on the ILGPU CPU accelerator and prints its table.</summary>
    [Test]
    public void SelfTestOnIlgpuCpuPasses()
    {
        var stdout = new StringWriter(); var stderr = new StringWriter();
        int rc = Program.Run(["selftest", "--device", "ilgpu-cpu"], stdout, stderr);
        Assert.That(rc, Is.EqualTo(Program.ExitOk), stdout + "\n" + stderr);
        string text = stdout.ToString();
        Assert.That(text, Does.Contain("attention backward").And.Contain("matmul").And.Contain("PASS:"));
        Assert.That(text, Does.Not.Contain("FAIL"));
    }

    /// <summary>--only narrows the cases, --skip (repeatable) leaves some out; a selection of nothing is bad input.</summary>
    [Test]
    public void OnlySelectsCases()
    {
        var stdout = new StringWriter(); var stderr = new StringWriter();
        Assert.That(Program.Run(["selftest", "--device", "ilgpu-cpu", "--only", "rope"], stdout, stderr), Is.EqualTo(Program.ExitOk));
        Assert.That(stdout.ToString(), Does.Contain("rope inverse").And.Not.Contain("matmul"));
        Assert.That(Program.Run(["selftest", "--device", "ilgpu-cpu", "--only", "nothing-like-this"], new StringWriter(), stderr), Is.EqualTo(Program.ExitBadInput));
        stdout = new StringWriter();
        Assert.That(Program.Run(["selftest", "--device", "cpu", "--only", "matmul", "--skip", "bf16", "--skip", "acc"], stdout, stderr), Is.EqualTo(Program.ExitOk));
        Assert.That(stdout.ToString(), Does.Contain("matmul ").And.Contain(" NT ").And.Not.Contain("bf16").And.Not.Contain(" acc "));
        Assert.That(Program.Run(["selftest", "--device", "cpu", "--only", "rope", "--skip", "rope"], new StringWriter(), stderr), Is.EqualTo(Program.ExitBadInput));
    }

    /// <summary>
    /// A PTX kernel's status line (and a failed first-use check failing the run) belongs to its own cases, the summed,
    /// SwiGLU and rotated launches included, so that gpu-check's probe of one of those alone still fails on it.
    /// </summary>
    [TestCase("matmul bf16 wgmma-ws", "wgmma-ws", true)]
    [TestCase("matmul bf16 wgmma-ws sum", "wgmma-ws", true)]
    [TestCase("matmul bf16 wgmma-ws swiglu", "wgmma-ws", true)]
    [TestCase("matmul bf16 wgmma-ws rotated", "wgmma-ws", true)]
    [TestCase("matmul bf16 wgmma sum", "wgmma", true)]
    [TestCase("matmul bf16 wgmma-ws sum", "wgmma", false)]
    [TestCase("matmul bf16 wgmma-tma", "wgmma", false)]
    [TestCase("matmul bf16 sum", "wgmma-ws", false)]
    [TestCase("matmul bf16 → bf16", "mma", false)]
    public void StatusLineBelongsToTheKernelsCases(string operation, string kernel, bool own) =>
        Assert.That(HftRuntime.Runtime.Diagnostics.SelfTest.IsCaseOf(operation, kernel), Is.EqualTo(own));

    /// <summary>Without a GPU, asking for CUDA is bad input with a clear message (exit code 2), for every command.</summary>
    [TestCase("selftest")]
    [TestCase("verify")]
    public void CudaWithoutGpuIsBadInput(string command)
    {
        using (var cuda = IlgpuBackend.TryCreateCuda())
            Assume.That(cuda, Is.Null, "this machine has a CUDA GPU");
        var stdout = new StringWriter(); var stderr = new StringWriter();
        string[] args = command == "verify"
            ? ["verify", "--golden", Path.Combine(TestContext.CurrentContext.TestDirectory, "fixtures", "llama-mha"), "--device", "cuda"]
            : ["selftest", "--device", "cuda"];
        int rc = Program.Run(args, stdout, stderr);
        Assert.That(rc, Is.EqualTo(Program.ExitBadInput), stdout + "\n" + stderr);
        Assert.That(stderr.ToString(), Does.Contain("no CUDA device found"));
    }
}
