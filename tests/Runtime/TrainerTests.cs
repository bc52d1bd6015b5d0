using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Runtime.Training;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

[TestFixture]
public sealed class TrainerTests
{
    /// <summary>Delegates to a real model but reports a NaN loss on chosen calls of <see cref="Loss"/>.</summary>
    private sealed class NanOnCalls(ILanguageModel inner, params int[] calls) : ILanguageModel
    {
        private int _call;
        public Backend Backend => inner.Backend;
        public ParameterStore Parameters => inner.Parameters;
        public int MaxBatch => inner.MaxBatch;
        public int MaxSeq => inner.MaxSeq;
        public int VocabSize => inner.VocabSize;
        public long ActivationBytes => inner.ActivationBytes;
        public Tensor RowLosses => inner.RowLosses;
        public Tensor Logits => inner.Logits;
        public void SetInputs(ModelInputs inputs) => inner.SetInputs(inputs);
        public void SetRowScale(ReadOnlySpan<float> rowScale) => inner.SetRowScale(rowScale);
        public void Forward(bool writeGradient = false) => inner.Forward(writeGradient);
        public void Backward() => inner.Backward();
        public void ZeroGradients() => inner.ZeroGradients();
        public float Loss() => calls.Contains(++_call) ? float.NaN : inner.Loss();
        public void Dispose() => inner.Dispose();
    }

    private static (LlamaModel Model, LmBatcher Data) Setup(CpuBackend be, out TrainingOptions options)
    {
        string dir = TestData.TinyModel();
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        var model = LlamaModel.Create(be, config, new LlamaModelOptions(2, 16));
        using (var w = SafeTensorsCheckpoint.Open(dir)) model.LoadWeights(w);
        var tokens = File.ReadAllBytes(TestData.WriteText(Fixtures.TempDirectory(), 8000)).Select(b => (int)b).ToArray();
        options = new TrainingOptions { Steps = 6, Batch = 2, Seq = 16, Lr = 1e-3f, LogEvery = 1 };
        return (model, new LmBatcher(tokens, 2, 16, 1, "test"));
    }

    [Test]
    public void ANonFiniteStepIsSkippedAndCounted()
    {
        using var be = new CpuBackend(2);
        var (model, data) = Setup(be, out var options);
        using var wrapped = new NanOnCalls(model, 3);
        var snapshot = be.ToArray<float>(model.Parameters.TrainableValues);
        var reports = new List<TrainingProgress>();
        var trainer = new Trainer(wrapped, new HftRuntime.Runtime.Objectives.TokenObjective("lm"), data, null, options, Fixtures.TempDirectory(), new JsonObject());
        var r = trainer.Run(progress: new InlineProgress<TrainingProgress>(reports.Add));
        Assert.That(r.SkippedSteps, Is.EqualTo(1));
        Assert.That(r.Losses[2], Is.Null);
        Assert.That(r.Losses.Count(l => l is not null), Is.EqualTo(5));
        Assert.That(reports.Single(p => p.Step == 3).Loss, Is.Null);
        Assert.That(be.ToArray<float>(model.Parameters.TrainableValues), Is.Not.EqualTo(snapshot));
    }

    [Test]
    public void ConsecutiveNonFiniteStepsStopTheRun()
    {
        using var be = new CpuBackend(2);
        var (model, data) = Setup(be, out var options);
        using var wrapped = new NanOnCalls(model, 2, 3, 4);
        var trainer = new Trainer(wrapped, new HftRuntime.Runtime.Objectives.TokenObjective("lm"), data, null, options with { MaxConsecutiveNanSteps = 3 }, Fixtures.TempDirectory(), new JsonObject());
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Run());
        Assert.That(e!.Message, Does.Contain("3 consecutive").And.Contain("step 4"));
    }

    [Test]
    public void CancellationMidRunSavesAndResumingMatchesAnUninterruptedRunBitForBit()
    {
        using var be = new CpuBackend(2);
        var (model, data) = Setup(be, out var options);
        options = options with { Steps = 10 };
        var snapshot = be.ToArray<float>(model.Parameters.TrainableValues);
        var objective = new HftRuntime.Runtime.Objectives.TokenObjective("lm");
        string whole = Fixtures.TempDirectory(), cut = Fixtures.TempDirectory();
        var full = new Trainer(model, objective, data, null, options, whole, new JsonObject()).Run();

        // Same start again, cancelled from the progress callback during step 5: the step finishes, a checkpoint is saved.
        be.Upload<float>(model.Parameters.TrainableValues, snapshot);
        data.Position = new DataPosition(0, 0);
        using var cts = new CancellationTokenSource();
        var first = new Trainer(model, objective, data, null, options, cut, new JsonObject())
            .Run(progress: new InlineProgress<TrainingProgress>(p => { if (p.Step == 5) cts.Cancel(); }), cancel: cts.Token);
        Assert.That(first.Cancelled, Is.True);
        Assert.That(first.StepsDone, Is.EqualTo(5));

        // A fresh trainer (scrambled weights, another data position) resumes from the checkpoint.
        be.Fill(model.Parameters.TrainableValues, 0.5f);
        data.Position = new DataPosition(3, 7);
        var rest = new Trainer(model, objective, data, null, options, cut, new JsonObject()).Run(resume: true);
        Assert.That(rest.ResumedFrom, Is.EqualTo(5));
        Assert.That(rest.Losses, Is.EqualTo(full.Losses), "same losses, bit for bit");
    }

    [Test]
    public void TheSameSeedGivesTheSameLossesBitForBit()
    {
        float?[] Run()
        {
            using var be = new CpuBackend(2);
            var (model, data) = Setup(be, out var options);
            using (model) return new Trainer(model, new HftRuntime.Runtime.Objectives.TokenObjective("lm"), data, null, options, Fixtures.TempDirectory(), new JsonObject()).Run().Losses.ToArray();
        }
        Assert.That(Run(), Is.EqualTo(Run()));
    }

    [Test]
    public void LearningRateWarmsUpThenDecaysByCosine()
    {
        var o = new TrainingOptions { Steps = 100, Lr = 1e-3f, MinLr = 1e-4f };
        Assert.That(o.EffectiveWarmup, Is.EqualTo(5));
        Assert.That(o.LearningRate(0), Is.EqualTo(2e-4f).Within(1e-9));
        Assert.That(o.LearningRate(4), Is.EqualTo(1e-3f).Within(1e-9));
        Assert.That(o.LearningRate(5), Is.EqualTo(1e-3f).Within(1e-9));
        Assert.That(o.LearningRate(52), Is.EqualTo(5.5e-4f).Within(1e-5));
        Assert.That(o.LearningRate(99), Is.GreaterThan(1e-4f).And.LessThan(1.01e-4f));
    }
}
