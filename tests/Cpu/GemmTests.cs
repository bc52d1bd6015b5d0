using System.Numerics.Tensors;
using HftRuntime.Kernels.Cpu;
using NUnit.Framework;

namespace HftRuntime.Tests.Cpu;

/// <summary>
/// <see cref="CpuGemm"/> against a float64 reference: every SIMD path, all transpose forms, odd sizes, padded
/// leading dimensions, alpha, accumulation; determinism across thread counts; no allocation once warm.
/// </summary>
[TestFixture]
public sealed unsafe class GemmTests
{
    private const float Poison = -7777.25f;
    private const double Tolerance = 1e-5;

    private static readonly int[] SmallSizes = [1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33];
    private static readonly int[] AllSizes = [1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 65, 100, 129, 257];

    private WorkerPool _pool2 = null!;

    /// <summary>Creates the shared two-thread pool.</summary>
    [OneTimeSetUp]
    public void SetUp() => _pool2 = new WorkerPool(2);

    /// <summary>Stops the shared pool.</summary>
    [OneTimeTearDown]
    public void TearDown() => _pool2.Dispose();

    /// <summary>Every small shape combination, one vector path and one transpose form per case.</summary>
    [Test]
    public void SmallShapes([Values(512, 256, 128, 32)] int bits, [Values] bool transA, [Values] bool transB)
    {
        using var force = Force(bits);
        var rng = new Random(1000 * bits + (transA ? 10 : 0) + (transB ? 1 : 0));
        int count = 0;
        foreach (int m in SmallSizes)
            foreach (int n in SmallSizes)
                foreach (int k in SmallSizes)
                {
                    bool accumulate = (count++ & 1) == 1;
                    Check(null, m, n, k, transA, transB, accumulate, rng);
                }
    }

    /// <summary>Random combinations of all sizes (blocking edges, several tasks on a pool), per path and transpose form.</summary>
    [Test]
    public void MixedShapes([Values(512, 256, 128, 32)] int bits, [Values] bool transA, [Values] bool transB)
    {
        using var force = Force(bits);
        var rng = new Random(7000 + bits + (transA ? 20 : 0) + (transB ? 2 : 0));
        for (int t = 0; t < 24; t++)
        {
            int m = AllSizes[rng.Next(AllSizes.Length)];
            int n = AllSizes[rng.Next(AllSizes.Length)];
            int k = AllSizes[rng.Next(AllSizes.Length)];
            Check((t & 1) == 0 ? null : _pool2, m, n, k, transA, transB, (t & 2) != 0, rng);
        }
        // Several depth blocks, row blocks and column panels, serial and on the pool.
        Check(null, 20, 2100, 300, transA, transB, false, rng);
        Check(_pool2, 257, 129, 600, transA, transB, true, rng);
        Check(_pool2, 300, 257, 100, transA, transB, false, rng);
    }

    /// <summary>k = 0: c becomes zero, or stays as it was when accumulating.</summary>
    [Test]
    public void EmptyDepth([Values] bool accumulate)
    {
        float[] c = Filled(3 * 5, new Random(3));
        float[] before = (float[])c.Clone();
        fixed (float* pc = c)
            CpuGemm.Gemm(_pool2, 3, 4, 0, 2f, null, 1, false, null, 4, false, pc, 5, accumulate);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++)
            {
                float expected = j < 4 && !accumulate ? 0f : before[i * 5 + j];
                Assert.That(c[i * 5 + j], Is.EqualTo(expected), $"c[{i},{j}]");
            }
    }

    /// <summary>The same product on 1, 2 and 3 threads (and with no pool) is bitwise the same.</summary>
    [Test]
    public void ThreadCountDoesNotChangeTheResult([Values(0, 512, 256, 128, 32)] int bits)
    {
        using var force = Force(bits);
        var pool1 = new WorkerPool(1); // no worker threads: nothing to stop
        using var pool3 = new WorkerPool(3);
        var rng = new Random(42);
        (int M, int N, int K)[] shapes = [(257, 263, 150), (700, 40, 129), (33, 1100, 65), (300, 300, 64)];
        foreach (var (m, n, k) in shapes)
            for (int form = 0; form < 4; form++)
            {
                bool ta = (form & 1) != 0, tb = (form & 2) != 0;
                float[] a = Filled(m * k, rng), b = Filled(k * n, rng), c0 = Filled(m * n, rng);
                float[]? first = null;
                foreach (var pool in new[] { null, pool1, _pool2, pool3 })
                {
                    float[] c = (float[])c0.Clone();
                    fixed (float* pa = a, pb = b, pc = c)
                        CpuGemm.Gemm(pool, m, n, k, 0.75f, pa, ta ? m : k, ta, pb, tb ? k : n, tb, pc, n, accumulate: true);
                    if (first is null) first = c;
                    else Assert.That(c, Is.EqualTo(first), $"{m}x{n}x{k} form {form} on {pool?.Threads} threads");
                }
            }
    }

    /// <summary>
    /// A warm call allocates nothing, serial or on the pool. The runtime itself may allocate a few bytes once
    /// while it re-compiles hot methods, so each check is repeated and must come out zero in some round (an
    /// allocation per call would show in every round).
    /// </summary>
    [Test]
    public void WarmCallsDoNotAllocate()
    {
        const int m = 300, n = 280, k = 270;
        float* a = (float*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)(m * k + k * n + m * n), sizeof(float));
        try
        {
            float* b = a + m * k, c = b + k * n;
            new Span<float>(a, m * k + k * n).Fill(0.5f);
            void Calls(WorkerPool? pool, int reps)
            {
                for (int rep = 0; rep < reps; rep++)
                    for (int form = 0; form < 4; form++)
                    {
                        bool ta = (form & 1) != 0, tb = (form & 2) != 0;
                        CpuGemm.Gemm(pool, m, n, k, 1f, a, ta ? m : k, ta, b, tb ? k : n, tb, c, n, pool != null);
                    }
            }
            Calls(null, 3);
            Calls(_pool2, 3);

            var serial = new List<long>();
            var pooled = new List<long>();
            for (int round = 0; round < 5; round++)
            {
                long thread0 = GC.GetAllocatedBytesForCurrentThread();
                Calls(null, 2);
                long thread1 = GC.GetAllocatedBytesForCurrentThread();
                long total0 = GC.GetTotalAllocatedBytes(true);
                Calls(_pool2, 2);
                long total1 = GC.GetTotalAllocatedBytes(true);
                serial.Add(thread1 - thread0);
                pooled.Add(total1 - total0);
                if (serial[^1] == 0 && pooled[^1] == 0) break;
            }
            Assert.That(serial, Has.Some.EqualTo(0L), "bytes allocated by serial calls (this thread), per round");
            Assert.That(pooled, Has.Some.EqualTo(0L), "bytes allocated by pooled calls (whole process), per round");
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(a);
        }
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Forces a vector path for this thread's calls, or ignores the test where the hardware lacks it.</summary>
    private static ForcedPath Force(int bits)
    {
        var force = new ForcedPath(bits);
        if (bits != 0 && CpuGemm.ActiveVectorBits != bits)
        {
            force.Dispose();
            Assert.Ignore($"{bits}-bit GEMM path is not accelerated on this machine");
        }
        return force;
    }

    private readonly struct ForcedPath : IDisposable
    {
        private readonly int _previous;

        public ForcedPath(int bits)
        {
            _previous = CpuGemm.ForcedVectorBits;
            CpuGemm.ForcedVectorBits = bits;
        }

        public void Dispose() => CpuGemm.ForcedVectorBits = _previous;
    }

    private static float[] Filled(int count, Random rng)
    {
        var x = new float[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>
    /// Runs one product with padded leading dimensions (padding holds NaN in a and b, a sentinel in c; c holds
    /// NaN where it is overwritten) and checks it against float64 by relative Frobenius error, and that nothing
    /// outside [m, n] of c changed.
    /// </summary>
    private static void Check(WorkerPool? pool, int m, int n, int k, bool transA, bool transB, bool accumulate, Random rng)
    {
        int lda = (transA ? m : k) + rng.Next(3), ldb = (transB ? k : n) + rng.Next(3), ldc = n + rng.Next(3);
        int aRows = transA ? k : m, aCols = transA ? m : k, bRows = transB ? n : k, bCols = transB ? k : n;
        // Entries and alpha are chosen so that no sum cancels (a relative bound then holds for every shape);
        // alpha is negative only when there is no old c to cancel against.
        float alpha = (float)(0.5 + rng.NextDouble()) * (accumulate || rng.Next(2) == 0 ? 1f : -1f);
        float[] a = Padded(aRows, aCols, lda, float.NaN, rng);
        float[] b = Padded(bRows, bCols, ldb, float.NaN, rng);
        const int guard = 17;
        float[] c = Padded(m, n, ldc, Poison, rng, guard);
        if (!accumulate)
            for (int i = 0; i < m; i++) c.AsSpan(i * ldc, n).Fill(float.NaN);
        float[] before = (float[])c.Clone();

        fixed (float* pa = a, pb = b, pc = c)
            CpuGemm.Gemm(pool, m, n, k, alpha, pa, lda, transA, pb, ldb, transB, pc, ldc, accumulate);

        // op(a) by rows and op(b) by columns in float64, so that each reference element is one dot product.
        var opA = new double[m * k];
        var opBt = new double[n * k];
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) opA[i * k + p] = transA ? a[p * lda + i] : a[i * lda + p];
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++) opBt[j * k + p] = transB ? b[j * ldb + p] : b[p * ldb + j];
        double err = 0, norm = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = TensorPrimitives.Dot<double>(opA.AsSpan(i * k, k), opBt.AsSpan(j * k, k));
                double expected = alpha * s + (accumulate ? before[i * ldc + j] : 0.0);
                double d = c[i * ldc + j] - expected;
                err += d * d;
                norm += expected * expected;
            }
        string what = $"{m}x{n}x{k} transA={transA} transB={transB} acc={accumulate} lda={lda} ldb={ldb} ldc={ldc} threads={pool?.Threads ?? 1} path={CpuGemm.ActiveVectorBits}";
        double rel = Math.Sqrt(err) / Math.Max(Math.Sqrt(norm), 1e-30);
        if (!(rel <= Tolerance)) Assert.Fail($"{what}: relative error {rel:E3}");

        for (int i = 0; i < m; i++)
            for (int j = n; j < ldc; j++)
                if (BitConverter.SingleToInt32Bits(c[i * ldc + j]) != BitConverter.SingleToInt32Bits(before[i * ldc + j]))
                    Assert.Fail($"{what}: padding c[{i},{j}] changed to {c[i * ldc + j]}");
        for (int x = m * ldc; x < c.Length; x++)
            if (BitConverter.SingleToInt32Bits(c[x]) != BitConverter.SingleToInt32Bits(before[x]))
                Assert.Fail($"{what}: guard element {x - m * ldc} past c changed");
    }

    private static float[] Padded(int rows, int cols, int ld, float pad, Random rng, int guard = 0)
    {
        var x = new float[rows * ld + guard];
        x.AsSpan().Fill(pad);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) x[i * ld + j] = (float)(0.25 + rng.NextDouble());
        return x;
    }
}
