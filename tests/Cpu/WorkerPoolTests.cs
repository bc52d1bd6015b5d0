using HftRuntime.Kernels.Cpu;
using NUnit.Framework;

namespace HftRuntime.Tests.Cpu;

/// <summary>The worker pool's waits: a caller that must block for a slow worker allocates nothing, even the first time.</summary>
[TestFixture]
public sealed unsafe class WorkerPoolTests
{
    private static volatile int s_workerIn;

    // Chunk 0 (the caller's) waits until a worker holds chunk 1, which sleeps: the caller then has to block.
    private static void CallerBlocks(void* args, int start, int end)
    {
        if (start == 0) { while (s_workerIn == 0) Thread.SpinWait(20); return; }
        s_workerIn = 1;
        Thread.Sleep(30);
    }

    [Test]
    public void ABlockingWaitAllocatesNothingTheFirstTime()
    {
        using var pool = new WorkerPool(2);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 3; i++)
        {
            s_workerIn = 0;
            pool.For(2, 1, &CallerBlocks, null);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(allocated, Is.EqualTo(0), "bytes the caller allocated while waiting for a slow worker");
    }

    private static void Throws(void* args, int start, int end) => throw new InvalidOperationException($"chunk {start}");

    [Test]
    public void AChunkExceptionReachesTheCallerAndThePoolStaysUsable()
    {
        using var pool = new WorkerPool(2);
        Assert.Throws<InvalidOperationException>(() => pool.For(8, 1, &Throws, null));
        s_workerIn = 0;
        Assert.DoesNotThrow(() => pool.For(2, 1, &CallerBlocks, null));
    }
}
