using System.Globalization;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using HftRuntime.Kernels;
using HftRuntime.Model;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Bench;

/// <summary>
/// One full training step (forward, backward, clipping, masked AdamW) of the same Llama with full fine-tuning and
/// with Half Fine-Tuning, in one process: the Ratio column is the HFT/FFT step-time ratio, printed next to the
/// analytic cost_bound of the HFT freeze. Device: HFT_BENCH_DEVICE (auto, cpu, cuda; default auto). Model:
/// HFT_BENCH_MODEL = small (d 256, 4 layers, FFN 688, vocabulary 2048, batch 4 x 256; the default) or base (the 134M
/// model: d 768, 12 layers, 12 heads, FFN 2048, vocabulary 32000, batch 8 x 1024), as <c>hft bench</c> defines them.
/// Run: <c>dotnet run -c Release --project bench -- --filter '*TrainingStep*'</c>.
/// </summary>
[Config(typeof(Config))]
public class TrainingStepBenchmark
{
    private Backend _backend = null!;
    private LlamaModel _fft = null!, _hft = null!;
    private OptimizerStep _fftStep = null!, _hftStep = null!;
    private ModelInputs _inputs = null!;

    /// <summary>The benchmark's model, batch and sequence length.</summary>
    public static (LlamaConfig Config, int Batch, int Seq) Setup() =>
        HftRuntime.Model.Diagnostics.Benchmarks.StepModel(Environment.GetEnvironmentVariable("HFT_BENCH_MODEL") is { Length: > 0 } m ? m : "small");

    /// <summary>The HFT freeze used (the paper's category draw, seed 1).</summary>
    public static IReadOnlySet<string> Frozen(LlamaConfig config) => FreezePolicy.Hft(1).SelectFrozen(LlamaModel.TensorNames(config));

    /// <summary>Builds both models with the same initial weights and one batch of random tokens.</summary>
    [GlobalSetup]
    public void GlobalSetup()
    {
        var (config, batch, seq) = Setup();
        _backend = Devices.Create(Environment.GetEnvironmentVariable("HFT_BENCH_DEVICE") ?? "auto");
        _fft = LlamaModel.Create(_backend, config, new LlamaModelOptions(batch, seq));
        _hft = LlamaModel.Create(_backend, config, new LlamaModelOptions(batch, seq, Frozen(config)));
        _fft.InitializeWeights(1);
        _hft.InitializeWeights(1);
        var rng = new Rng(2);
        var ids = new int[batch * seq];
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.NextInt(config.VocabSize);
        _inputs = ModelInputs.FromLabels(ids, ids, batch, seq);
        _fftStep = new OptimizerStep(_fft, new AdamWOptions(), 1f);
        _hftStep = new OptimizerStep(_hft, new AdamWOptions(), 1f);
    }

    /// <summary>Releases the models and the device.</summary>
    [GlobalCleanup]
    public void GlobalCleanup()
    {
        _fft.Dispose();
        _hft.Dispose();
        _backend.Dispose();
    }

    private static void Step(OptimizerStep step, ModelInputs inputs, Backend backend)
    {
        step.Begin();
        float loss = step.ForwardBackward(inputs);
        step.Finish(1e-4f, loss);
        backend.Synchronize();
    }

    /// <summary>Full fine-tuning: every tensor trainable.</summary>
    [Benchmark(Baseline = true)]
    public void Fft() => Step(_fftStep, _inputs, _backend);

    /// <summary>Half Fine-Tuning: the category-level freeze.</summary>
    [Benchmark]
    public void Hft() => Step(_hftStep, _inputs, _backend);

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            // Like hft itself, the benchmark process runs with tiered compilation off (see Directory.Build.props).
            AddJob(Job.Default.WithWarmupCount(3).WithIterationCount(15).WithInvocationCount(1).WithUnrollFactor(1)
                .WithEnvironmentVariables(new EnvironmentVariable("DOTNET_TieredCompilation", "0")));
            AddColumn(new CostBoundColumn());
            AddColumn(new TokensPerSecondColumn());
            SummaryStyle = BenchmarkDotNet.Reports.SummaryStyle.Default.WithRatioStyle(RatioStyle.Value);
        }
    }

    /// <summary>cost_bound of the row's freeze: 1 for FFT, the analytic HFT/FFT FLOP ratio for HFT.</summary>
    private sealed class CostBoundColumn : IColumn
    {
        public string Id => "CostBound";
        public string ColumnName => "cost_bound";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "FLOPs with the frozen set / FLOPs with nothing frozen (matrix products and attention)";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var (config, _, seq) = Setup();
            bool hft = benchmarkCase.Descriptor.WorkloadMethod.Name == nameof(Hft);
            return LlamaCostModel.CostBound(config, seq, hft ? Frozen(config) : new HashSet<string>()).ToString("F3", CultureInfo.InvariantCulture);
        }
    }

    /// <summary>Training tokens per second at the mean step time.</summary>
    private sealed class TokensPerSecondColumn : IColumn
    {
        public string Id => "TokensPerSecond";
        public string ColumnName => "tokens/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 1;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "batch x seq / mean step time";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var report = summary[benchmarkCase];
            if (report?.ResultStatistics is not { } stats) return "n/a";
            var (_, batch, seq) = Setup();
            return (batch * seq / (stats.Mean / 1e9)).ToString("N0", CultureInfo.InvariantCulture);
        }
    }
}
