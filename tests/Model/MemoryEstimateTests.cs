using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using HftRuntime.Runtime;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>The memory estimate before a run, and refusing a run that cannot fit.</summary>
[TestFixture]
public sealed class MemoryEstimateTests
{
    private static readonly LlamaConfig Tiny = new()
    {
        VocabSize = 258, HiddenSize = 64, IntermediateSize = 176, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    };

    [Test]
    public void EstimateCountsEachKind()
    {
        using var be = new CpuBackend(1);
        var frozen = FreezePolicy.Hft(1).SelectFrozen(LlamaModel.TensorNames(Tiny));
        var e = LlamaModel.EstimateMemory(be, Tiny, new LlamaModelOptions(4, 32, frozen));
        long total = LlamaModel.ParameterSpecs(Tiny).Sum(p => p.Count);
        long trainable = LlamaModel.ParameterSpecs(Tiny).Where(p => !frozen.Contains(p.Name)).Sum(p => p.Count);
        Assert.That(e.Weights, Is.EqualTo(4 * total));
        Assert.That(e.Gradients, Is.EqualTo(4 * trainable));
        Assert.That(e.Optimizer, Is.EqualTo(8 * trainable));
        Assert.That(e.Total, Is.GreaterThanOrEqualTo(e.Weights + e.Gradients + e.Optimizer + e.Activations));
        using var model = LlamaModel.Create(be, Tiny, new LlamaModelOptions(4, 32, frozen));
        Assert.That(model.Memory, Is.EqualTo(e));
        Assert.That(model.Arena.ReservedBytes, Is.EqualTo(e.Total));
    }

    [Test]
    public void ARunThatCannotFitIsRefusedBeforeAllocating()
    {
        using var be = new CpuBackend(1);
        var layout = new LlamaModelOptions(4096, 1024);
        var e = LlamaModel.EstimateMemory(be, Tiny, layout);
        Assume.That(e.Fits, Is.False, "this machine has more memory than the test's layout needs");
        var ex = Assert.Throws<InvalidInputException>(() => LlamaModel.Create(be, Tiny, layout));
        Assert.That(ex!.Message, Does.Contain("MiB").And.Contain("activations").And.Contain("available").And.Contain("reduce --batch"));
    }
}
