using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>Activations that only a frozen matrix's weight gradient would read are not kept.</summary>
[TestFixture]
public sealed class ActivationMemoryTests
{
    private static readonly LlamaConfig Config = new()
    {
        VocabSize = 100, HiddenSize = 64, IntermediateSize = 160, NumHiddenLayers = 3, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    };

    private static long Bytes(params string[] frozen)
    {
        using var be = new CpuBackend(1);
        using var m = LlamaModel.Create(be, Config, new LlamaModelOptions(2, 16, frozen.ToHashSet()));
        return m.ActivationBytes;
    }

    [Test]
    public void FrozenDownProjectionsKeepNoSwiGluOutput()
    {
        long rows = 2 * 16, aligned = (rows * 160 * 4 + 255) / 256 * 256;
        var downs = Enumerable.Range(0, 3).Select(l => $"model.layers.{l}.mlp.down_proj.weight").ToArray();
        Assert.That(Bytes() - Bytes(downs), Is.EqualTo(3 * aligned));
    }

    [Test]
    public void FrozenGateAndUpKeepNoNormedInputButOneFrozenDoesNotSave()
    {
        long aligned = (2L * 16 * 64 * 4 + 255) / 256 * 256;
        Assert.That(Bytes() - Bytes("model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight"), Is.EqualTo(aligned));
        Assert.That(Bytes("model.layers.1.mlp.gate_proj.weight"), Is.EqualTo(Bytes()));
        Assert.That(Bytes() - Bytes("model.layers.2.self_attn.q_proj.weight", "model.layers.2.self_attn.k_proj.weight",
            "model.layers.2.self_attn.v_proj.weight"), Is.EqualTo(aligned));
    }

    [Test]
    public void InferenceSharesOneSetOfLayerBuffers()
    {
        using var be = new CpuBackend(1);
        using var train = LlamaModel.Create(be, Config, new LlamaModelOptions(2, 16));
        using var infer = LlamaModel.Create(be, Config, new LlamaModelOptions(2, 16, Training: false));
        Assert.That(infer.ActivationBytes, Is.LessThan(train.ActivationBytes / 2));
    }
}

/// <summary>Activation checkpointing: the same gradients, bit for bit, for a fraction of the activation memory.</summary>
[TestFixture]
public sealed class ActivationCheckpointingTests
{
    [TestCase(HftRuntime.Runtime.Precision.Fp32)]
    [TestCase(HftRuntime.Runtime.Precision.Bf16)]
    public void GradientsAreBitIdenticalAndMemoryShrinks(HftRuntime.Runtime.Precision precision)
    {
        using var be = new CpuBackend(2);
        string dir = HftRuntime.Tests.Support.Fixtures.Case("llama-gqa-tied-hft");
        var golden = HftRuntime.Model.Diagnostics.GoldenCase.Load(dir);
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        var frozen = golden.Frozen.ToHashSet();
        float[] Grads(bool checkpoint, out long activationBytes)
        {
            using var m = LlamaModel.Create(be, config, new LlamaModelOptions(golden.Batch, golden.Seq, frozen, CheckpointActivations: checkpoint, Precision: precision));
            using (var w = HftRuntime.Runtime.SafeTensors.SafeTensorsCheckpoint.Open(dir)) m.LoadWeights(w);
            m.SetInputs(HftRuntime.Runtime.ModelInputs.FromLabels(golden.InputIds, golden.Labels, golden.Batch, golden.Seq));
            m.ZeroGradients();
            m.Forward(writeGradient: true);
            m.Backward();
            activationBytes = m.ActivationBytes;
            return be.ToArray<float>(m.Parameters.Grads);
        }
        var plain = Grads(false, out long plainBytes);
        var recomputed = Grads(true, out long checkpointBytes);
        Assert.That(recomputed, Is.EqualTo(plain));
        Assert.That(checkpointBytes, Is.LessThan(plainBytes));
    }
}
