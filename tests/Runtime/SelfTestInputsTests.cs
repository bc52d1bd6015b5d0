using HftRuntime.Runtime.Diagnostics;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

/// <summary>The self-test's random inputs: filled in parallel, yet the same for the same seed, and normal.</summary>
[TestFixture]
public sealed class SelfTestInputsTests
{
    [Test]
    public void RandnIsTheSameForTheSameSeedAndNormal()
    {
        const long count = 3 * 65536 + 7; // several chunks, the last one ragged and odd
        var a = SelfTest.Randn(new Random(5), count, scale: 2.0);
        var b = SelfTest.Randn(new Random(5), count, scale: 2.0);
        var c = SelfTest.Randn(new Random(6), count, scale: 2.0);
        Assert.That(a, Is.EqualTo(b));
        Assert.That(c, Is.Not.EqualTo(a));
        double mean = a.Average(x => (double)x), variance = a.Average(x => ((double)x - mean) * ((double)x - mean));
        Assert.That(a.All(float.IsFinite), Is.True);
        Assert.That(mean, Is.EqualTo(0).Within(0.02));
        Assert.That(variance, Is.EqualTo(4).Within(0.05), "scale 2: variance 4");
        // Both samples of a Box–Muller pair are used: neighbours are uncorrelated.
        double pairs = 0;
        for (long i = 0; i + 1 < count; i += 2) pairs += (double)a[i] * a[i + 1];
        Assert.That(pairs / (count / 2) / variance, Is.EqualTo(0).Within(0.02));
    }
}
