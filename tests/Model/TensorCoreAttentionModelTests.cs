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
/// tolerances of the CPU back-end's (fp32 attention), packed documents included.
/// </summary>
[TestFixture]
public sealed class TensorCoreAttentionModelTests
{
    [Test]
    public void Bf16LossAndGradientsMatchTheCpuBackend()
    {
        // Two layers, heads of 64 (4 query heads on 2 kv heads), 2 × 70 tokens: the 64-row query and key tiles
        // both end ragged.
        var config = new LlamaConfig { VocabSize = 96, HiddenSize = 256, IntermediateSize = 320, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 128 };
        Assert.That(IlgpuBackend.UsesTensorCoreAttention(true, config.HeadDim));
        const int batch = 2, seq = 70;
        var rng = new Random(5);
        var ids = new int[batch * seq];
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(config.VocabSize);
        var inputs = ModelInputs.FromLabels(ids, ids, batch, seq);
        for (int t = 30; t < seq; t++) inputs.DocStart[seq + t] = 30; // sequence 1 packs two documents

        (float Loss, Dictionary<string, float[]> Grads) Run(Backend be)
        {
            using var model = LlamaModel.Create(be, config, new LlamaModelOptions(batch, seq, new HashSet<string> { "model.layers.0.self_attn.o_proj.weight" },
                Optimizer: false, Precision: Precision.Bf16));
            model.InitializeWeights(7);
            model.SetInputs(inputs);
            model.ZeroGradients();
            model.Forward();
            float loss = model.Loss();
            model.Backward();
            return (loss, model.Parameters.All.Where(p => p.Trainable).ToDictionary(p => p.Name, p => model.DownloadGradient(p.Name)));
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
    }
}
