using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>
/// The CPU back-end allocates nothing inside a training step once warm. Measured on the calling thread, which runs
/// all orchestration (the whole-process counter also sees the test host's own background threads); the pool's
/// workers only run kernel bodies, which take their memory from the arena and per-thread scratch.
/// </summary>
[TestFixture]
public sealed class AllocationTests
{
    [Test]
    public void ATrainingStepAllocatesNothingOnceWarm()
    {
        using var be = new CpuBackend(2);
        string dir = Fixtures.Case("llama-gqa-tied-hft");
        var golden = HftRuntime.Model.Diagnostics.GoldenCase.Load(dir);
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        using var model = LlamaModel.Create(be, config, new LlamaModelOptions(golden.Batch, golden.Seq, golden.Frozen.ToHashSet()));
        using (var w = SafeTensorsCheckpoint.Open(dir)) model.LoadWeights(w);
        var step = new HftRuntime.Runtime.Training.OptimizerStep(model, new AdamWOptions(), clipNorm: 1f);
        var inputs = ModelInputs.FromLabels(golden.InputIds, golden.Labels, golden.Batch, golden.Seq);
        void Step()
        {
            step.Begin();
            float loss = step.ForwardBackward(inputs);
            step.Finish(1e-3f, loss);
        }
        for (int i = 0; i < 3; i++) Step();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 5; i++) Step();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(allocated, Is.EqualTo(0), "bytes allocated by 5 warm training steps");
    }
}
