using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using HftRuntime.Kernels.Cpu;

namespace HftRuntime.Bench;

/// <summary>One product to time: c[M, N] = op(a) · op(b) with the given transposes.</summary>
/// <param name="Name">Label shown in the table.</param>
/// <param name="M">Rows of c.</param>
/// <param name="N">Columns of c.</param>
/// <param name="K">Depth.</param>
/// <param name="TransA">op(a) is the transpose of a stored [K, M].</param>
/// <param name="TransB">op(b) is the transpose of b stored [N, K].</param>
/// <param name="Serial">Run with no pool (on the calling thread), as attention does per head.</param>
public sealed record GemmShape(string Name, int M, int N, int K, bool TransA, bool TransB, bool Serial)
{
    /// <summary>Floating-point operations of one product (2·M·N·K).</summary>
    public double Flops => 2.0 * M * N * K;

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Name} {M}x{N}x{K} {(TransA ? 'T' : 'N')}{(TransB ? 'T' : 'N')}{(Serial ? " 1thr" : "")}";
}

/// <summary>
/// <see cref="CpuGemm.Gemm"/> on square cubes, the three products of a linear layer in training (forward x·Wᵀ,
/// input gradient dy·W, weight gradient dyᵀ·x) and attention-sized serial products, with a GFLOP/s column.
/// Run: <c>dotnet run -c Release --project bench -- --filter '*Gemm*'</c>.
/// </summary>
[Config(typeof(Config))]
[MemoryDiagnoser]
public unsafe class GemmBenchmark
{
    private WorkerPool? _pool;
    private float* _a, _b, _c;

    /// <summary>The shapes timed.</summary>
    public static IEnumerable<GemmShape> Shapes =>
    [
        new("cube", 512, 512, 512, false, false, false),
        new("cube", 1024, 1024, 1024, false, false, false),
        new("cube", 2048, 2048, 2048, false, false, false),
        // A linear layer 512 -> 1376 over 2048 tokens, weight stored [out, in] as in PyTorch.
        new("train-fwd", 2048, 1376, 512, false, true, false),
        new("train-dx", 2048, 512, 1376, false, false, false),
        new("train-dw", 1376, 512, 2048, true, false, false),
        // Attention per head: scores q·kᵀ and the value product p·v, on one thread.
        new("attn-qk", 256, 256, 64, false, true, true),
        new("attn-qk", 1024, 1024, 64, false, true, true),
        new("attn-pv", 128, 64, 128, false, false, true),
    ];

    /// <summary>The shape of this run.</summary>
    [ParamsSource(nameof(Shapes))]
    public GemmShape Shape { get; set; } = null!;

    /// <summary>Allocates and fills the operands and starts the pool.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var s = Shape;
        _a = Alloc((long)s.M * s.K);
        _b = Alloc((long)s.K * s.N);
        _c = Alloc((long)s.M * s.N);
        var rng = new Random(1);
        for (long i = 0; i < (long)s.M * s.K; i++) _a[i] = (float)(rng.NextDouble() - 0.5);
        for (long i = 0; i < (long)s.K * s.N; i++) _b[i] = (float)(rng.NextDouble() - 0.5);
        _pool = s.Serial ? null : new WorkerPool(WorkerPool.DefaultThreads);
    }

    /// <summary>Frees the operands and stops the pool.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
        // A one-thread pool has no workers to stop.
        if (_pool is { Threads: > 1 }) _pool.Dispose();
        _pool = null;
    }

    /// <summary>One product.</summary>
    [Benchmark]
    public void Gemm()
    {
        var s = Shape;
        CpuGemm.Gemm(_pool, s.M, s.N, s.K, 1f, _a, s.TransA ? s.M : s.K, s.TransA, _b, s.TransB ? s.K : s.N, s.TransB, _c, s.N, false);
    }

    private static float* Alloc(long count) => (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);

    /// <summary>A short job (few iterations) plus the GFLOP/s column.</summary>
    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddJob(BenchmarkDotNet.Jobs.Job.ShortRun);
            WithSummaryStyle(SummaryStyle.Default.WithMaxParameterColumnWidth(40));
            AddColumn(new GflopsColumn());
        }
    }

    /// <summary>2·M·N·K divided by the mean time of one product.</summary>
    private sealed class GflopsColumn : IColumn
    {
        public string Id => nameof(GflopsColumn);
        public string ColumnName => "GFLOP/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "Billions of floating-point operations per second (2·M·N·K / mean time)";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var report = summary[benchmarkCase];
            if (report?.ResultStatistics is not { } stats || benchmarkCase.Parameters["Shape"] is not GemmShape shape)
                return "-";
            return (shape.Flops / stats.Mean).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
        }
    }
}
