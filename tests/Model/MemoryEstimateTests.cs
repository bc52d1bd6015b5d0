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

    /// <summary>
    /// bf16 needs less memory than fp32 for the 134M benchmark model at 8 × 1024 under FFT and HFT: on the CPU
    /// back-end (bf16 SwiGLU inputs; the bf16 copies of trainable weights cost more than frozen matrices save), and
    /// less again where the back-end takes bf16 attention operands (ILGPU at head dimension 64).
    /// </summary>
    [Test]
    public void Bf16NeedsLessMemoryThanFp32ForTheBenchmarkModel()
    {
        var (config, batch, seq) = HftRuntime.Model.Diagnostics.Benchmarks.StepModel("base");
        var hft = FreezePolicy.Hft(1).SelectFrozen(LlamaModel.TensorNames(config));
        using var cpu = new CpuBackend(1);
        using var ilgpu = HftRuntime.Kernels.Ilgpu.IlgpuBackend.CreateCpu();
        foreach (var frozen in new[] { new HashSet<string>(), hft.ToHashSet() })
        {
            long Total(HftRuntime.Kernels.Backend be, Precision p) => LlamaModel.EstimateMemory(be, config, new LlamaModelOptions(batch, seq, frozen, Precision: p,
                LossChunkRows: LlamaModelOptions.DefaultLossChunkRows(batch, seq, config.VocabSize))).Total;
            long fp32 = Total(cpu, Precision.Fp32), bf16 = Total(cpu, Precision.Bf16), bf16Attention = Total(ilgpu, Precision.Bf16);
            TestContext.Out.WriteLine($"{(frozen.Count == 0 ? "fft" : "hft")}: fp32 {fp32 >> 20} MiB, bf16 {bf16 >> 20} MiB, bf16 with bf16 attention {bf16Attention >> 20} MiB");
            Assert.That(bf16, Is.LessThan(fp32 * 0.95));
            Assert.That(bf16Attention, Is.LessThan(bf16 - (500L << 20)));
            Assert.That(Total(ilgpu, Precision.Fp32), Is.EqualTo(fp32));
        }
    }
}
