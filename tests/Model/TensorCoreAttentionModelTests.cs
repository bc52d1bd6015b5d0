using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Model;
using HftRuntime.Runtime;
using NUnit.Framework;
using static HftRuntime.Tests.Support.Numerics;

namespace HftRuntime.Tests.Model;

/// <summary>
/// A bf16 model whose heads are 64 wide runs attention on the tensor-core kernels of the ILGPU back-end (here on
/// ILGPU's CPU accelerator, through their emulated twin): its loss and every gradient stay within the bf16 verify
/// tolerances of the CPU back-end's (fp32 attention), packed documents included; and its layers keep q, k, v and
/// the attention output in bf16 alone.
/// </summary>
[TestFixture]
public sealed class TensorCoreAttentionModelTests
{
    [Test]
    public void Bf16LossAndGradientsMatchTheCpuBackend()
    {
        // Two layers, heads of 64 (2 query heads on 1 kv head), 2 × 70 tokens: the 64-row query and key tiles
        // both end ragged.
        var config = new LlamaConfig { VocabSize = 96, HiddenSize = 128, IntermediateSize = 192, NumHiddenLayers = 2, NumAttentionHeads = 2, NumKeyValueHeads = 1, MaxPositionEmbeddings = 128 };
        const int batch = 2, seq = 70;
        var rng = new Random(5);
        var ids = new int[batch * seq];
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(config.VocabSize);
        var inputs = ModelInputs.FromLabels(ids, ids, batch, seq);
        for (int t = 30; t < seq; t++) inputs.DocStart[seq + t] = 30; // sequence 1 packs two documents

        (float Loss, Dictionary<string, float[]> Grads, long Activations) Run(Backend be, bool checkpoint = false)
        {
            using var model = LlamaModel.Create(be, config, new LlamaModelOptions(batch, seq, new HashSet<string> { "model.layers.0.self_attn.o_proj.weight" },
                Optimizer: false, CheckpointActivations: checkpoint, Precision: Precision.Bf16));
            model.InitializeWeights(7);
            Assert.That(model.AttentionPrecision, Is.EqualTo(be is IlgpuBackend ? "bf16" : "fp32"));
            model.SetInputs(inputs);
            model.ZeroGradients();
            model.Forward();
            float loss = model.Loss();
            model.Backward();
            return (loss, model.Parameters.All.Where(p => p.Trainable).ToDictionary(p => p.Name, p => model.DownloadGradient(p.Name)), model.ActivationBytes);
        }

        using var cpu = new CpuBackend(threads: 2);
        using var ilgpu = IlgpuBackend.CreateCpu();
        var want = Run(cpu);
        var got = Run(ilgpu);
        TestContext.Out.WriteLine($"loss cpu {want.Loss:F6} ilgpu {got.Loss:F6}");
        Assert.That(Math.Abs(got.Loss - want.Loss) / want.Loss, Is.LessThan(1e-2));
        double worst = 0;
        foreach (var (name, g) in want.Grads)
        {
            double err = RelErr(got.Grads[name], D(g));
            worst = Math.Max(worst, err);
            Assert.That(err, Is.LessThan(3e-2), name);
        }
        TestContext.Out.WriteLine($"largest gradient relative error {worst:e2}");

        // Each layer keeps q, k, v and the attention output in bf16 instead of fp32 (the products store q, k, v in bf16,
        // and the fused backward pass writes the gradients of q, k, v in bf16: no fp32 q, k, v or their gradients at
        // all); layer 0, whose o projection is frozen, now keeps the bf16 output for the attention backward; the o
        // projection's input gradient (the attention backward's dO) is stored in bf16.
        long n = batch * seq, qkv = n * (config.NumAttentionHeads + 2 * config.NumKeyValueHeads) * config.HeadDim, o = n * config.NumAttentionHeads * config.HeadDim;
        long saved = config.NumHiddenLayers * (qkv * 4 + o * 4 - qkv * 2) - o * 2 + qkv * 4 + o * 2;
        TestContext.Out.WriteLine($"activations cpu {want.Activations:N0} ilgpu {got.Activations:N0} bytes");
        Assert.That(want.Activations - got.Activations, Is.InRange(saved - 8192, saved + 8192));

        // Activation checkpointing recomputes the same bf16 operands (up to the order of the embedding gradient's atomics).
        var again = Run(ilgpu, checkpoint: true);
        Assert.That(again.Loss, Is.EqualTo(got.Loss));
        foreach (var (name, g) in got.Grads) Assert.That(RelErr(again.Grads[name], D(g)), Is.LessThan(1e-6), $"checkpointed {name}");
        Assert.That(again.Activations, Is.LessThan(got.Activations));
    }
}
