using HftRuntime.Runtime;
using NUnit.Framework;

namespace HftRuntime.Tests.Fuzz;

/// <summary>The fuzz harness itself: it must notice each kind of failure it is there to catch.</summary>
[TestFixture]
public sealed class FuzzRunTests
{
    private static FuzzRun Run(Action body, long bound = 1 << 20, int deadlineMs = 10_000)
    {
        var run = new FuzzRun("harness-self-test") { Deadline = TimeSpan.FromMilliseconds(deadlineMs) };
        run.Check(0, run.NewMutator(0), [1, 2, 3], ".bin", bound, "the-source", body);
        return run;
    }

    [Test]
    public void AcceptsSuccessAndDocumentedRejection()
    {
        Assert.That(Run(() => { }).Failures, Is.Empty);
        Assert.That(Run(() => throw new InvalidInputException("dir/the-source", "bad")).Failures, Is.Empty);
    }

    [Test]
    public void CatchesUndocumentedExceptions()
    {
        Assert.That(Run(() => throw new IndexOutOfRangeException()).Failures.Single(), Does.Contain("IndexOutOfRangeException escaped"));
        Assert.That(Run(() => throw new ArgumentException("from the data")).Failures.Single(), Does.Contain("ArgumentException escaped"));
        Assert.That(Run(() => throw new InvalidInputException("elsewhere", "bad")).Failures.Single(), Does.Contain("does not name"));
    }

    [Test]
    public void CatchesAllocationsOverTheBound()
    {
        Assert.That(Run(() => GC.KeepAlive(new byte[4 << 20]), bound: 1 << 20).Failures.Single(), Does.Contain("over the bound"));
        Assert.That(Run(() => GC.KeepAlive(new byte[4 << 20]), bound: 8 << 20).Failures, Is.Empty);
    }

    [Test]
    public void CatchesHangsAndStops()
    {
        var run = Run(() => Thread.Sleep(2000), deadlineMs: 100);
        Assert.That(run.Failures.Single(), Does.Contain("a hang"));
        Assert.That(run.Iterations(10), Is.Empty, "no input runs after a hang");
    }
}
