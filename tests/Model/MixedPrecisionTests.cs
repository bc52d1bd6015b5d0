using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Runtime.Training;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>
/// bf16 mixed precision on the CPU back-end: Hugging Face's reference cases within the stated bf16 tolerances; frozen
/// matrices held in bf16 alone and saved as BF16; the bf16 compute copy of trainable tensors kept equal to the fp32
/// masters rounded, through every optimizer step; generation; and the memory it saves.
/// </summary>
[TestFixture]
public sealed class MixedPrecisionTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp] public void SetUp() => _cpu = new CpuBackend(threads: 2);
    [OneTimeTearDown] public void TearDown() => _cpu.Dispose();

    private static (LlamaConfig Config, GoldenCase Golden, string Dir) Case(string name)
    {
        string dir = Fixtures.Case(name);
        return (LlamaConfig.Load(Path.Combine(dir, "config.json")), GoldenCase.Load(dir), dir);
    }

    [TestCaseSource(typeof(Fixtures), nameof(Fixtures.Cases))]
    public void ReferenceCasesPassWithinTheBf16Tolerances(string name)
    {
        var report = GoldenVerifier.Run(Fixtures.Case(name), _cpu, Precision.Bf16);
        Assert.That(report.Rows.Where(r => !r.Pass).Select(r => $"{r.Quantity}: {r.RelativeError:E2}"), Is.Empty);
        Assert.That(report.Precision, Is.EqualTo(Precision.Bf16));
        // bf16 really ran: the logits differ from the fp32 reference by more than fp32 rounding would.
        var logits = report.Rows.Single(r => r.Quantity == "logits");
        Assert.That(logits.RelativeError, Is.GreaterThan(1e-4).And.LessThan(1e-2));
        if (name == "llama-gqa-tied-hft")
            Assert.That(report.Rows.Count(r => r.Quantity.EndsWith("(bf16)", StringComparison.Ordinal)), Is.GreaterThan(0), "frozen matrices are held in bf16");
    }

    [Test]
    public void FrozenMatricesAreHeldInBf16AloneAndTrainableOnesKeepAnFp32Master()
    {
        var (config, golden, _) = Case("llama-gqa-tied-hft");
        var frozen = golden.Frozen.ToHashSet();
        using var fp32 = LlamaModel.Create(_cpu, config, new LlamaModelOptions(golden.Batch, golden.Seq, frozen));
        using var bf16 = LlamaModel.Create(_cpu, config, new LlamaModelOptions(golden.Batch, golden.Seq, frozen, Precision: Precision.Bf16));
        var matrices = LlamaModel.MatrixNames(config);
        long frozenMatrix = 0, frozenOther = 0, trainable = 0;
        foreach (var p in bf16.Parameters.All)
        {
            if (p.Trainable)
            {
                trainable += p.Count;
                Assert.That(p.Value.Type, Is.EqualTo(DType.F32), p.Name);
                Assert.That(p.Compute.Type, Is.EqualTo(DType.BF16), p.Name);
            }
            else if (matrices.Contains(p.Name))
            {
                frozenMatrix += p.Count;
                Assert.That(p.Value.Type, Is.EqualTo(DType.BF16), p.Name);
            }
            else
            {
                frozenOther += p.Count;
                Assert.That(p.Value.Type, Is.EqualTo(DType.F32), p.Name);
            }
        }
        Assert.That(frozenMatrix, Is.GreaterThan(0));
        Assert.That(bf16.Parameters.WeightBytes, Is.InRange(trainable * 6 + frozenMatrix * 2 + frozenOther * 4, trainable * 6 + frozenMatrix * 2 + frozenOther * 4 + 1024));
        Assert.That(bf16.Memory.Weights, Is.EqualTo(bf16.Parameters.WeightBytes));
        Assert.That(bf16.Memory.Gradients, Is.EqualTo(fp32.Memory.Gradients));
        Assert.That(bf16.Memory.Optimizer, Is.EqualTo(fp32.Memory.Optimizer));
    }

    [Test]
    public void TheComputeCopyFollowsTheMastersThroughTrainingAndTheLossFalls()
    {
        var (config, golden, dir) = Case("llama-gqa-tied-hft");
        using var model = LlamaModel.Create(_cpu, config, new LlamaModelOptions(golden.Batch, golden.Seq, golden.Frozen.ToHashSet(), Precision: Precision.Bf16));
        using (var w = SafeTensorsCheckpoint.Open(dir)) model.LoadWeights(w);
        var s = model.Parameters;
        AssertCopyIsRoundedMasters(s);
        var step = new OptimizerStep(model, new AdamWOptions(), clipNorm: 1f);
        var inputs = ModelInputs.FromLabels(golden.InputIds, golden.Labels, golden.Batch, golden.Seq);
        float first = 0, last = 0;
        for (int i = 0; i < 6; i++)
        {
            step.Begin();
            float loss = step.ForwardBackward(inputs);
            step.Finish(3e-3f, loss);
            if (i == 0) first = loss;
            last = loss;
        }
        AssertCopyIsRoundedMasters(s);
        Assert.That(last, Is.LessThan(first * 0.98f), "six steps on one batch lower its loss");
        foreach (var p in s.All.Where(p => !p.Trainable && p.Value.Type == DType.BF16))
            using (var w = SafeTensorsCheckpoint.Open(dir))
                Assert.That(model.DownloadWeights(p.Name), Is.EqualTo(Array.ConvertAll(w.ReadFloat32(p.Name), Bf16.Round)), $"{p.Name} never changes");
    }

    private void AssertCopyIsRoundedMasters(ParameterStore s)
    {
        var masters = _cpu.ToArray<float>(s.TrainableValues);
        var copy = _cpu.ToArray<ushort>(s.TrainableBf16);
        Assert.That(copy, Is.EqualTo(Array.ConvertAll(masters, Bf16.FromFloat)));
    }

    [Test]
    public void SavedWeightsHoldFrozenMatricesAsBf16AndLoadBackUnchanged()
    {
        var (config, golden, dir) = Case("llama-gqa-tied-hft");
        var options = new LlamaModelOptions(golden.Batch, golden.Seq, golden.Frozen.ToHashSet(), Precision: Precision.Bf16);
        using var model = LlamaModel.Create(_cpu, config, options);
        using (var w = SafeTensorsCheckpoint.Open(dir)) model.LoadWeights(w);
        string path = Path.Combine(Fixtures.TempDirectory(), "model.safetensors");
        model.SaveWeights(path);
        using (var file = SafeTensorsFile.Open(path))
            foreach (var p in model.Parameters.All)
                Assert.That(file.Get(p.Name).DType, Is.EqualTo(p.Value.Type == DType.BF16 ? SafeTensorsDType.BF16 : SafeTensorsDType.F32), p.Name);
        using var again = LlamaModel.Create(_cpu, config, options);
        using (var file = SafeTensorsFile.Open(path)) again.LoadWeights(file);
        foreach (var p in model.Parameters.All)
            Assert.That(again.DownloadWeights(p.Name), Is.EqualTo(model.DownloadWeights(p.Name)), p.Name);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void GenerationWithTheCacheGivesTheTokensOfRecomputing(bool frozenMatrices)
    {
        var (config, _, dir) = Case("llama-gqa-tied-hft");
        var frozen = frozenMatrices ? LlamaModel.MatrixNames(config).ToHashSet() : new HashSet<string>();
        using var model = LlamaModel.Create(_cpu, config, new LlamaModelOptions(2, 16, frozen, Optimizer: false, Precision: Precision.Bf16));
        using (var w = SafeTensorsCheckpoint.Open(dir)) model.LoadWeights(w);
        using var generator = new LlamaGenerator(model, maxBatch: 2, maxLength: 16);
        int[][] prompts = [[5, 17, 3], [9, 2, 44, 6, 1]];
        var options = new GenerationOptions(8, 0f, 1f, Seed: 3, StopAtEos: false);
        var cached = generator.Generate(prompts, options);
        Assert.That(generator.Generate(prompts, options with { UseKvCache = false }), Is.EqualTo(cached));
    }
}
