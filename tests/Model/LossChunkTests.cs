using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using static HftRuntime.Tests.Support.Numerics;

namespace HftRuntime.Tests.Model;

/// <summary>
/// The head and loss over chunks of rows (<see cref="LlamaModelOptions.LossChunkRows"/>) give the losses and every
/// gradient of the whole-batch computation, whether the forward pass writes the gradient or the backward pass forms
/// it later, in fp32 and bf16, and hold only one chunk of logits.
/// </summary>
[TestFixture]
public sealed class LossChunkTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp] public void SetUp() => _cpu = new CpuBackend(threads: 2);
    [OneTimeTearDown] public void TearDown() => _cpu.Dispose();

    [TestCase(Precision.Fp32, true)]
    [TestCase(Precision.Fp32, false)]
    [TestCase(Precision.Bf16, true)]
    [TestCase(Precision.Bf16, false)]
    public void ChunkedLossGivesTheWholeBatchLossesAndGradients(Precision precision, bool gradientInForward)
    {
        string dir = Fixtures.Case("llama-gqa-tied-hft");
        var golden = GoldenCase.Load(dir);
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        int n = golden.Batch * golden.Seq;
        var frozen = golden.Frozen.ToHashSet();
        var inputs = ModelInputs.FromLabels(golden.InputIds, golden.Labels, golden.Batch, golden.Seq);
        (float[] Losses, Dictionary<string, float[]> Grads, long Activations) Run(int chunk)
        {
            using var model = LlamaModel.Create(_cpu, config, new LlamaModelOptions(golden.Batch, golden.Seq, frozen, Optimizer: false, Precision: precision, LossChunkRows: chunk));
            using (var w = SafeTensorsCheckpoint.Open(dir)) model.LoadWeights(w);
            model.SetInputs(inputs);
            model.ZeroGradients();
            model.Forward(writeGradient: gradientInForward);
            var losses = _cpu.ToArray<float>(model.RowLosses.Slice(0, n));
            model.Backward();
            return (losses, model.Parameters.All.Where(p => p.Trainable).ToDictionary(p => p.Name, p => model.DownloadGradient(p.Name)), model.ActivationBytes);
        }
        var whole = Run(0);
        var chunked = Run(3); // n is no multiple of 3: the last chunk is shorter
        Assert.That(n % 3, Is.Not.Zero);
        Assert.That(RelErr(chunked.Losses, D(whole.Losses)), Is.LessThan(1e-6));
        foreach (var (name, g) in whole.Grads)
            Assert.That(RelErr(chunked.Grads[name], D(g)), Is.LessThan(1e-5), name);
        long logitBytes = (long)(n - 3) * config.VocabSize * (precision == Precision.Bf16 ? 6 : 4);
        Assert.That(whole.Activations - chunked.Activations, Is.InRange(logitBytes - 1024, logitBytes + 1024), "only one chunk of logits is held");
    }

    [Test]
    public void AChunkedModelHasNoFullLogitsAndTheDefaultChunkKeepsThemSmall()
    {
        string dir = Fixtures.Case("llama-mha");
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        using var model = LlamaModel.Create(_cpu, config, new LlamaModelOptions(2, 8, LossChunkRows: 5));
        Assert.That(() => model.Logits, Throws.InvalidOperationException.With.Message.Contains("chunks of 5 rows"));
        using var whole = LlamaModel.Create(_cpu, config, new LlamaModelOptions(2, 8, LossChunkRows: 16));
        Assert.That(whole.Logits.Count, Is.EqualTo(16 * config.VocabSize), "a chunk of the whole batch is the whole batch");
        Assert.That(LlamaModelOptions.DefaultLossChunkRows(8, 1024, 32000), Is.EqualTo(2048), "64 Mi floats, whole 128-row tiles");
        Assert.That(LlamaModelOptions.DefaultLossChunkRows(16, 64, 3000), Is.Zero, "small logits: the whole batch");
        Assert.That(LlamaModelOptions.DefaultLossChunkRows(1, 4096, 1_000_000), Is.EqualTo(67), "a huge vocabulary: fewer rows than a tile");
        Assert.Throws<ArgumentOutOfRangeException>(() => LlamaModel.Create(_cpu, config, new LlamaModelOptions(2, 8, LossChunkRows: -1)));
    }
}
