using HftRuntime.Runtime;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

/// <summary>Precision names, and "auto": bf16 on CUDA only.</summary>
[TestFixture]
public sealed class PrecisionNamesTests
{
    [TestCase("fp32", "cpu", Precision.Fp32)]
    [TestCase("BF16", "cpu", Precision.Bf16)]
    [TestCase(" float32 ", "cuda", Precision.Fp32)]
    [TestCase("auto", "cuda", Precision.Bf16)]
    [TestCase(" Auto ", "cpu", Precision.Fp32)]
    [TestCase("auto", "ilgpu-cpu", Precision.Fp32)]
    public void ResolvesForTheBackEnd(string text, string backend, Precision expected) =>
        Assert.That(PrecisionNames.Resolve(text, backend), Is.EqualTo(expected));

    [Test]
    public void AutoIsNotAPrecisionOutsideResolve()
    {
        Assert.That(() => PrecisionNames.Parse("auto"), Throws.ArgumentException.With.Message.Contains("auto"));
        Assert.That(() => PrecisionNames.Resolve("fp16", "cuda"), Throws.ArgumentException.With.Message.Contains("fp16"));
    }
}
