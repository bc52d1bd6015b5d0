using System.Diagnostics;
using System.Globalization;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Kernels.Ilgpu;

namespace HftRuntime.Runtime.Diagnostics;

/// <summary>One checked operation of a self-test.</summary>
/// <param name="Operation">What ran (for example "matmul" or "attention backward").</param>
/// <param name="Shape">The shape in words (for example "65x31x129 TN acc").</param>
/// <param name="RelativeError">Largest ‖device − cpu‖ / ‖cpu‖ over the operation's outputs (+∞ for a NaN).</param>
/// <param name="Tolerance">Largest relative error accepted.</param>
/// <param name="Pass">Whether the error is within the tolerance.</param>
/// <param name="Milliseconds">Device time per call when timed, else null.</param>
/// <param name="Gflops">Achieved GFLOP/s for the matrix products when timed, else null.</param>
public sealed record SelfTestRow(string Operation, string Shape, double RelativeError, double Tolerance, bool Pass, double? Milliseconds, double? Gflops);

/// <summary>
/// One self-test case: an operation (or a forward/backward pair) on fixed random inputs, run on the device under test
/// and on the CPU back-end (the reference). Outputs are poisoned with NaN before each run, so an element the device
/// forgets to write fails the comparison.
/// </summary>
public sealed class SelfTestCase
{
    private readonly Func<Random, Func<SelfTest.Context, SelfTest.Step[]>> _build;
    private readonly Action<Backend>? _prepare;
    private readonly Action<Backend>? _restore;

    internal SelfTestCase(string operation, string shape, bool large, int seed, Func<Random, Func<SelfTest.Context, SelfTest.Step[]>> build,
        Action<Backend>? prepare = null, Action<Backend>? restore = null)
    {
        Operation = operation;
        Shape = shape;
        Large = large;
        Seed = seed;
        _build = build;
        _prepare = prepare;
        _restore = restore;
    }

    /// <summary>The operation family.</summary>
    public string Operation { get; }

    /// <summary>The shape in words.</summary>
    public string Shape { get; }

    /// <summary>Unique name: operation and shape.</summary>
    public string Name => $"{Operation} {Shape}";

    /// <summary>True for the realistic (GPU-sized) shapes.</summary>
    public bool Large { get; }

    /// <summary>Seed of the random inputs.</summary>
    public int Seed { get; }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>
    /// Runs the case on <paramref name="device"/> and on <paramref name="reference"/> with identical inputs and
    /// compares every output; with <paramref name="timings"/>, also times each step on the device.
    /// </summary>
    public IReadOnlyList<SelfTestRow> Run(Backend device, Backend reference, bool timings)
    {
        var bind = _build(new Random(Seed));
        float[][][] got;
        double?[] ms;
        using (var ctx = new SelfTest.Context(device))
        {
            var steps = bind(ctx);
            ctx.Commit();
            _prepare?.Invoke(device);
            try
            {
                foreach (var s in steps) s.Run();
                got = ReadAll(ctx, steps);
                ms = new double?[steps.Length];
                if (timings)
                    for (int i = 0; i < steps.Length; i++) ms[i] = Time(device, steps[i].Run);
            }
            finally
            {
                _restore?.Invoke(device);
            }
        }
        float[][][] want;
        SelfTest.Step[] refSteps;
        using (var ctx = new SelfTest.Context(reference))
        {
            refSteps = bind(ctx);
            ctx.Commit();
            foreach (var s in refSteps) s.Run();
            want = ReadAll(ctx, refSteps);
        }
        var rows = new List<SelfTestRow>(refSteps.Length);
        for (int i = 0; i < refSteps.Length; i++)
        {
            var step = refSteps[i];
            double err = 0;
            if (step.Combined)
                err = SelfTest.RelativeError(got[i].SelectMany(x => x).ToArray(), want[i].SelectMany(x => x).ToArray());
            else
                for (int o = 0; o < want[i].Length; o++) err = Math.Max(err, SelfTest.RelativeError(got[i][o], want[i][o]));
            double? gflops = ms[i] is { } t && step.Flops > 0 ? step.Flops / (t * 1e6) : null;
            rows.Add(new SelfTestRow(step.Operation, Shape, err, step.Tolerance, err <= step.Tolerance, ms[i], gflops));
        }
        return rows;
    }

    private static float[][][] ReadAll(SelfTest.Context ctx, SelfTest.Step[] steps)
    {
        ctx.Backend.Synchronize();
        var r = new float[steps.Length][][];
        for (int i = 0; i < steps.Length; i++)
            r[i] = steps[i].Outputs.Select(ctx.Read).ToArray();
        return r;
    }

    /// <summary>Milliseconds per call: one call to estimate, then enough calls for about 50 ms (at most 20).</summary>
    private static double Time(Backend device, Action run)
    {
        device.Synchronize();
        var sw = Stopwatch.StartNew();
        run();
        device.Synchronize();
        double one = sw.Elapsed.TotalMilliseconds;
        int reps = (int)Math.Clamp(Math.Ceiling(50 / Math.Max(one, 1e-3)), 1, 20);
        sw.Restart();
        for (int i = 0; i < reps; i++) run();
        device.Synchronize();
        return sw.Elapsed.TotalMilliseconds / reps;
    }
}

/// <summary>
/// Parity checks of a back-end's operations against the CPU back-end (the reference that passes the Hugging Face
/// checks): every operation on small odd shapes (sizes that are no multiple of any tile, GEMMs in every transpose
/// form with and without accumulation, attention with one token, GQA and packed documents, attention against a
/// key/value cache in decode steps and prefills with the cache rows past the keys poisoned), plus, for a GPU, the
/// training shapes of a 134M-parameter Llama (d 768, 12 heads of 64, FFN 2048, vocabulary 32000, 4 × 1024 tokens)
/// and its generation shapes (8 decode steps against 1023 cached keys, a 1024-token prefill) with timings. <c>hft selftest</c> prints the rows; the test suite runs the small cases on ILGPU's CPU accelerator.
/// </summary>
public static partial class SelfTest
{
    /// <summary>
    /// Whether a self-test operation forces the PTX kernel named <paramref name="kernel"/>: its plain products
    /// ("matmul bf16 wgmma-ws") and its summed, SwiGLU and rotated launches ("matmul bf16 wgmma-ws sum"), not another
    /// kernel's whose name starts the same ("matmul bf16 wgmma-tma" is not wgmma's).
    /// </summary>
    public static bool IsCaseOf(string operation, string kernel)
    {
        string own = "matmul bf16 " + kernel;
        return operation == own || operation.StartsWith(own + " ", StringComparison.Ordinal);
    }

    /// <summary>Every case; the large ones only with <paramref name="large"/>.</summary>
    public static IReadOnlyList<SelfTestCase> Cases(bool large) => AllCases.Where(c => large || !c.Large).ToArray();

    /// <summary>
    /// Runs the cases on <paramref name="device"/> against a new CPU back-end with <paramref name="threads"/> threads
    /// (0: all cores) and returns one row per checked operation; <paramref name="onRow"/> sees each row as it is ready.
    /// </summary>
    public static IReadOnlyList<SelfTestRow> Run(Backend device, bool large, bool timings, int threads = 0, Action<SelfTestRow>? onRow = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        using var reference = new CpuBackend(threads);
        var rows = new List<SelfTestRow>();
        foreach (var c in Cases(large))
            foreach (var row in c.Run(device, reference, timings))
            {
                rows.Add(row);
                onRow?.Invoke(row);
            }
        return rows;
    }

    /// <summary>‖a − b‖ / ‖b‖ in double; +∞ when a holds a NaN or an infinity; the absolute norm when b is zero.</summary>
    public static double RelativeError(float[] a, float[] b)
    {
        if (a.Length != b.Length) return double.PositiveInfinity;
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (!float.IsFinite(a[i])) return double.PositiveInfinity;
            double d = (double)a[i] - b[i];
            num += d * d;
            den += (double)b[i] * b[i];
        }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    // ------------------------------------------------------------------ case machinery

    /// <summary>One timed and compared call (or short sequence of calls) of a case.</summary>
    /// <remarks>
    /// Each output is compared on its own, unless <paramref name="Combined"/>: then all outputs are compared as one
    /// vector (for outputs that are zero in exact arithmetic, such as dq and dk of attention over a single token).
    /// </remarks>
    internal sealed record Step(string Operation, Action Run, Tensor[] Outputs, double Tolerance, double Flops = 0, bool Combined = false);

    /// <summary>Tensors of one case on one back-end: inputs are uploaded and outputs poisoned with NaN at commit.</summary>
    internal sealed class Context : IDisposable
    {
        private readonly DeviceArena _arena;
        private readonly List<Action> _afterCommit = new();

        public Context(Backend backend)
        {
            Backend = backend;
            _arena = backend.CreateArena();
        }

        public Backend Backend { get; }

        public Tensor In(float[] data)
        {
            var t = _arena.Reserve("in", data.Length);
            _afterCommit.Add(() => Backend.Upload<float>(t, data));
            return t;
        }

        public Tensor In(int[] data)
        {
            var t = _arena.Reserve("in", data.Length, DType.I32);
            _afterCommit.Add(() => Backend.Upload<int>(t, data));
            return t;
        }

        public Tensor Out(long count)
        {
            var t = _arena.Reserve("out", count);
            _afterCommit.Add(() => Backend.Fill(t, float.NaN));
            return t;
        }

        /// <summary>A BF16 tensor holding <paramref name="data"/> rounded to bfloat16.</summary>
        public Tensor InBf16(float[] data)
        {
            var t = _arena.Reserve("in.bf16", data.Length, DType.BF16);
            _afterCommit.Add(() => Backend.Upload<ushort>(t, ConvertInParallel(data, Bf16.FromFloat)));
            return t;
        }

        /// <summary>A BF16 output, poisoned with NaN.</summary>
        public Tensor OutBf16(long count)
        {
            var t = _arena.Reserve("out.bf16", count, DType.BF16);
            _afterCommit.Add(() =>
            {
                var nan = new ushort[count];
                Array.Fill(nan, (ushort)0x7FC0);
                Backend.Upload<ushort>(t, nan);
            });
            return t;
        }

        public void Commit()
        {
            _arena.Commit();
            foreach (var a in _afterCommit) a();
        }

        public float[] Read(Tensor t) => t.Type == DType.BF16
            ? ConvertInParallel(Backend.ToArray<ushort>(t), Bf16.ToFloat)
            : Backend.ToArray<float>(t);

        /// <summary><see cref="Array.ConvertAll"/> over chunks in parallel (inputs of the training shapes hold up to 131M elements).</summary>
        private static TOut[] ConvertInParallel<TIn, TOut>(TIn[] source, Func<TIn, TOut> convert)
        {
            var result = new TOut[source.Length];
            Parallel.For(0, (source.Length + RandnChunk - 1) / RandnChunk, c =>
            {
                int end = Math.Min(source.Length, (c + 1) * RandnChunk);
                for (int i = c * RandnChunk; i < end; i++) result[i] = convert(source[i]);
            });
            return result;
        }

        public void Dispose() => _arena.Dispose();
    }

    /// <summary>Elements per independently seeded chunk of <see cref="Randn"/> (and per task of the parallel conversions).</summary>
    private const int RandnChunk = 1 << 16;

    /// <summary>
    /// <paramref name="count"/> normal samples times <paramref name="scale"/>: the same for the same state of
    /// <paramref name="rng"/> on any machine and thread count. A seed per chunk of 64K elements is drawn from
    /// <paramref name="rng"/> in order, and the chunks are filled in parallel, each Box–Muller pair giving two samples.
    /// (The training shapes need up to 131M samples per input: one thread took several seconds a case on the GPU machine.)
    /// </summary>
    internal static float[] Randn(Random rng, long count, double scale = 1.0)
    {
        var a = new float[count];
        long chunks = (count + RandnChunk - 1) / RandnChunk;
        var seeds = new int[chunks];
        for (long c = 0; c < chunks; c++) seeds[c] = rng.Next();
        Parallel.For(0L, chunks, c =>
        {
            var r = new Random(seeds[c]);
            long start = c * RandnChunk, end = Math.Min(count, start + RandnChunk);
            for (long i = start; i < end; i += 2)
            {
                double radius = scale * Math.Sqrt(-2 * Math.Log(1.0 - r.NextDouble())), angle = 2 * Math.PI * r.NextDouble();
                a[i] = (float)(radius * Math.Cos(angle));
                if (i + 1 < end) a[i + 1] = (float)(radius * Math.Sin(angle));
            }
        });
        return a;
    }

    private static int[] RandInt(Random rng, long count, int max)
    {
        var a = new int[count];
        for (long i = 0; i < count; i++) a[i] = rng.Next(max);
        return a;
    }

    private static string S(FormattableString f) => f.ToString(CultureInfo.InvariantCulture);
}
