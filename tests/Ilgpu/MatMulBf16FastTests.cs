using System.Text.RegularExpressions;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;
using ILGPU;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// The fast bf16 GEMM (<see cref="Bf16GemmVariant.Fast"/>) on ILGPU's CPU accelerator, where its mma are emulated with
/// the PTX fragment layout: full-tile NT, NN and TN shapes against a float64 product of the same bf16 values, with and
/// without accumulation, and with split k; the automatic split's plan; the dispatch (what it refuses goes to the simple kernel, and is still right); the variant's default;
/// and the kernels' PTX for sm_90.
/// </summary>
[TestFixture]
public sealed class MatMulBf16FastTests : IlgpuFixture
{
    /// <summary>Selects the fast variant for each test.</summary>
    [SetUp]
    public void SelectFast() => Gpu.Bf16GemmVariant = Bf16GemmVariant.Fast;

    /// <summary>Checks c (+)= op(a)·op(b) against float64 (<see cref="Bf16Gemm.Check"/>); returns whether the fast kernel ran (its launch counter moved).</summary>
    private bool Check(int m, int n, int k, bool transA, bool transB, bool accumulate, int offsetA = 0, int offsetB = 0, int seed = 1)
    {
        long before = Gpu.Bf16FastLaunches;
        Bf16Gemm.Check(Gpu, m, n, k, transA, transB, accumulate, offsetA, offsetB, seed);
        return Gpu.Bf16FastLaunches != before;
    }

    /// <summary>
    /// A 128×256×32 NT product with accumulation into C starting <paramref name="offsetC"/> floats into its buffer,
    /// against float64; returns whether the fast kernel ran. The floats before C must stay as they were.
    /// </summary>
    private bool CheckCOffset(int offsetC)
    {
        const int m = 128, n = 256, k = 32;
        var rng = new Random(offsetC);
        ushort[] a = Bf16Gemm.RandomBf16(rng, m * k), b = Bf16Gemm.RandomBf16(rng, k * n);
        float[] c0 = new float[m * n + offsetC];
        for (int i = 0; i < c0.Length; i++) c0[i] = (float)(rng.NextDouble() * 2 - 1);
        using var arena = Gpu.CreateArena();
        var ta = arena.Reserve("a", m * k, DType.BF16);
        var tb = arena.Reserve("b", k * n, DType.BF16);
        var tcAll = arena.Reserve("c", m * n + offsetC);
        arena.Commit();
        Gpu.Upload<ushort>(ta, a);
        Gpu.Upload<ushort>(tb, b);
        Gpu.Upload<float>(tcAll, c0);
        long before = Gpu.Bf16FastLaunches;
        Gpu.MatMul(tcAll.Slice(offsetC, m * n), ta, tb, m, n, k, transA: false, transB: true, accumulate: true);
        Gpu.Synchronize();
        var got = Gpu.ToArray<float>(tcAll);
        for (int i = 0; i < offsetC; i++) Assert.That(got[i], Is.EqualTo(c0[i]), $"float {i} before C");
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = c0[offsetC + i * n + j], scale = Math.Abs(sum);
                for (int kk = 0; kk < k; kk++)
                {
                    double x = Bf16Gemm.Bf(a[i * k + kk]) * Bf16Gemm.Bf(b[j * k + kk]);
                    sum += x;
                    scale += Math.Abs(x);
                }
                Assert.That(Math.Abs(got[offsetC + i * n + j] - sum), Is.LessThanOrEqualTo(1e-5 * scale), $"C offset {offsetC}: ({i}, {j})");
            }
        }
        return Gpu.Bf16FastLaunches != before;
    }

    /// <summary>Full tiles in the NT form (one tile, several tiles in m and n, several k steps) run the fast kernel and match float64.</summary>
    [TestCase(128, 256, 32)]
    [TestCase(256, 256, 64)]
    [TestCase(128, 512, 96)]
    public void FullTilesMatchFloat64(int m, int n, int k)
    {
        Assert.That(Check(m, n, k, transA: false, transB: true, accumulate: false), Is.True, "the fast kernel should take this shape");
        Assert.That(Check(m, n, k, transA: false, transB: true, accumulate: true, seed: 2), Is.True, "the fast kernel should take this shape");
    }

    /// <summary>Full tiles in the NN form (a [m, k], b [k, n]: B transposed in registers) run the fast kernel and match float64.</summary>
    [TestCase(128, 256, 32)]
    [TestCase(256, 512, 96)]
    public void NnFullTilesMatchFloat64(int m, int n, int k)
    {
        Assert.That(Check(m, n, k, transA: false, transB: false, accumulate: false), Is.True, "the fast kernel should take this shape");
        Assert.That(Check(m, n, k, transA: false, transB: false, accumulate: true, seed: 2), Is.True, "the fast kernel should take this shape");
    }

    /// <summary>Full tiles in the TN form (a [k, m], b [k, n]: both transposed in registers) run the fast kernel and match float64.</summary>
    [TestCase(128, 256, 32)]
    [TestCase(256, 512, 96)]
    public void TnFullTilesMatchFloat64(int m, int n, int k)
    {
        Assert.That(Check(m, n, k, transA: true, transB: false, accumulate: false), Is.True, "the fast kernel should take this shape");
        Assert.That(Check(m, n, k, transA: true, transB: false, accumulate: true, seed: 2), Is.True, "the fast kernel should take this shape");
    }

    /// <summary>
    /// Split k in the fast kernel (slices of a multiple of 32, partials into scratch, summed in slice order): forced
    /// through <see cref="IlgpuBackend.ForceSplitK"/> (the CPU accelerator never splits by itself), into even slices
    /// and into uneven ones (k = 160 in 3: slices of 64, 64, 32), in every form, with and without accumulation.
    /// </summary>
    [TestCase(false, true, 2, 128)]
    [TestCase(false, false, 3, 160)]
    [TestCase(true, false, 2, 128)]
    [TestCase(true, false, 3, 160)]
    [TestCase(true, false, 16, 96)]
    public void SplitKMatchesFloat64(bool transA, bool transB, int splits, int k)
    {
        Gpu.ForceSplitK = splits;
        try
        {
            Assert.That(Check(128, 256, k, transA, transB, accumulate: false), Is.True, "the fast kernel should take this shape");
            Assert.That(Check(128, 256, k, transA, transB, accumulate: true, seed: 3), Is.True, "the fast kernel should take this shape");
        }
        finally { Gpu.ForceSplitK = 0; }
    }

    /// <summary>
    /// The automatic split (what <see cref="IlgpuBackend.SplitPlanFor"/> picks on a GPU, which the CPU accelerator never
    /// does) for the training's dW shapes on 132 SMs: few output tiles are split until about two tiles per SM, the
    /// lm_head's many are not; the slices are multiples of 32 and cover k.
    /// </summary>
    [TestCase(768, 768, 8192, 18, 15)]
    [TestCase(2048, 768, 8192, 48, 6)]
    [TestCase(768, 2048, 8192, 48, 6)]
    [TestCase(32000, 768, 8192, 750, 1)]
    public void AutomaticSplitFillsTheGpu(int m, int n, int k, long tiles, int expected)
    {
        Assert.That((long)(m / 128) * (n / 256), Is.EqualTo(tiles));
        var (splits, kPer) = IlgpuBackend.SplitPlanFor(tiles, (long)m * n, k, 32, forced: 0, cpu: false, multiprocessors: 132);
        Assert.That(splits, Is.EqualTo(expected));
        Assert.That(kPer % 32, Is.Zero);
        Assert.That((long)splits * kPer, Is.GreaterThanOrEqualTo(k));
        Assert.That((long)(splits - 1) * kPer, Is.LessThan(k), "no empty slice");
        Assert.That(IlgpuBackend.SplitPlanFor(tiles, (long)m * n, k, 32, forced: 0, cpu: true, multiprocessors: 132).Splits, Is.EqualTo(1), "the CPU accelerator does not split");
    }

    /// <summary>
    /// The PTX GEMMs' split (<see cref="IlgpuBackend.PtxSplitPlanFor"/>, one 128×256 block per SM) on the products of
    /// the 134M model's training step on 132 SMs: none for the 8192-row products (one more wave costs less than the
    /// partials), one wave of slices for the weight gradients, none for the head's; slices of 64 that cover k.
    /// </summary>
    [TestCase(8192, 768, 2048, 1)]
    [TestCase(8192, 768, 768, 1)]
    [TestCase(8192, 2048, 768, 1)]
    [TestCase(768, 768, 8192, 7)]
    [TestCase(2048, 768, 8192, 2)]
    [TestCase(768, 2048, 8192, 2)]
    [TestCase(32000, 768, 2048, 1)]
    [TestCase(4096, 4096, 4096, 1)]
    public void PtxSplitWeighsWavesAgainstPartials(int m, int n, int k, int expected)
    {
        long tiles = (long)((m + 127) / 128) * ((n + 255) / 256);
        var (splits, kPer) = IlgpuBackend.PtxSplitPlanFor(tiles, (long)m * n, k, 132);
        Assert.That(splits, Is.EqualTo(expected));
        Assert.That(kPer % 64, Is.Zero);
        Assert.That((long)splits * kPer, Is.GreaterThanOrEqualTo(k));
        Assert.That((long)(splits - 1) * kPer, Is.LessThan(k), "no empty slice");
        Assert.That(tiles * splits, Is.LessThanOrEqualTo(Math.Max(tiles, 132)), "the slices fit one wave, or the tiles alone fill the card");
    }

    /// <summary>
    /// Where the warp-specialized kernel takes its 128 × 192 tiles on 132 SMs: the n = 768 products of the 134M model
    /// (192 tiles of 256 fill 1.45 waves, 256 of 192 fill 1.94), not those with n = 2048 or the head's 32000.
    /// </summary>
    [TestCase(8192, 768, true)]
    [TestCase(2048, 768, true)]
    [TestCase(8192, 2048, false)]
    [TestCase(2048, 32000, false)]
    [TestCase(4096, 4096, false)]
    [TestCase(128, 256, true)] // one wave either way: each of the two narrow blocks has three quarters of the wide one's work
    public void NarrowTilesWhereTheLastWaveOfWideOnesIsPartlyEmpty(int m, int n, bool narrow) =>
        Assert.That(IlgpuBackend.NarrowTilesPay(m, n, 132), Is.EqualTo(narrow));

    /// <summary>
    /// What the fast kernel refuses (the TT form, partial tiles, k not a multiple of 32, an operand not on 16 bytes)
    /// goes to the simple kernel and is still right; NN and TN full tiles, and forced splits, take the fast one.
    /// </summary>
    [Test]
    public void RefusedShapesFallBackToTheSimpleKernel()
    {
        Assert.That(Check(128, 256, 32, transA: false, transB: false, accumulate: false), Is.True, "NN");
        Assert.That(Check(128, 256, 32, transA: true, transB: false, accumulate: true), Is.True, "TN");
        Assert.That(Check(128, 256, 32, transA: true, transB: true, accumulate: false), Is.False, "TT");
        Assert.That(Check(64, 256, 32, transA: false, transB: true, accumulate: false), Is.False, "m not a multiple of 128");
        Assert.That(Check(128, 128, 32, transA: false, transB: true, accumulate: false), Is.False, "n not a multiple of 256");
        Assert.That(Check(128, 256, 40, transA: false, transB: true, accumulate: false), Is.False, "k not a multiple of 32");
        Assert.That(Check(64, 256, 32, transA: true, transB: false, accumulate: true), Is.False, "TN, m not a multiple of 128");
        Assert.That(Check(128, 128, 32, transA: false, transB: false, accumulate: false), Is.False, "NN, n not a multiple of 256");
        Assert.That(Check(128, 256, 40, transA: true, transB: false, accumulate: false), Is.False, "TN, k not a multiple of 32");
        Assert.That(Check(128, 256, 32, transA: false, transB: true, accumulate: false, offsetA: 4), Is.False, "A not on 16 bytes");
        Assert.That(Check(128, 256, 32, transA: false, transB: true, accumulate: true, offsetB: 2), Is.False, "B not on 16 bytes");
        Assert.That(Check(128, 256, 32, transA: true, transB: false, accumulate: false, offsetA: 4), Is.False, "TN, A not on 16 bytes");
        Assert.That(Check(128, 256, 32, transA: false, transB: false, accumulate: false, offsetB: 4), Is.False, "NN, B not on 16 bytes");
        Assert.That(Check(128, 256, 32, transA: false, transB: true, accumulate: false, offsetA: 8, offsetB: 16), Is.True, "operands on 16 bytes");
        Assert.That(CheckCOffset(1), Is.False, "C not on 8 bytes");
        Assert.That(CheckCOffset(2), Is.True, "C on 8 bytes");
        Gpu.ForceSplitK = 2;
        try
        {
            Assert.That(Check(128, 256, 64, transA: false, transB: true, accumulate: false), Is.True, "forced split k");
            Assert.That(Check(128, 128, 64, transA: true, transB: false, accumulate: true), Is.False, "forced split k, partial tile");
        }
        finally { Gpu.ForceSplitK = 0; }
        Gpu.Bf16GemmVariant = Bf16GemmVariant.Simple;
        Assert.That(Check(128, 256, 32, transA: false, transB: true, accumulate: false), Is.False, "the simple variant selected");
        Assert.That(Check(128, 256, 32, transA: true, transB: false, accumulate: false), Is.False, "the simple variant selected, TN");
    }

    /// <summary>The tuning variables (HFT_SPLIT_K, HFT_GEMM_GROUP, HFT_MMA_STAGES) take integers in their range and fall back otherwise.</summary>
    [TestCase(null, 7)]
    [TestCase("", 7)]
    [TestCase(" 3 ", 3)]
    [TestCase("4", 4)]
    [TestCase("5", 7)]
    [TestCase("0", 7)]
    [TestCase("two", 7)]
    public void TuningVariablesTakeIntegersInTheirRange(string? value, int expected)
    {
        string? saved = Environment.GetEnvironmentVariable("HFT_TEST_TUNING");
        try
        {
            Environment.SetEnvironmentVariable("HFT_TEST_TUNING", value);
            Assert.That(IlgpuBackend.EnvInt("HFT_TEST_TUNING", 1, 4, 7), Is.EqualTo(expected));
        }
        finally { Environment.SetEnvironmentVariable("HFT_TEST_TUNING", saved); }
    }

    /// <summary>
    /// "auto" (and unset or empty) picks by device: the warp-specialized wgmma on compute capability 9.0, mma on other
    /// CUDA devices of 8.0 or later, the simple kernel on older ones and off CUDA.
    /// </summary>
    [TestCase(" Auto", true, 9, 0, Bf16GemmVariant.WgmmaWs)]
    [TestCase(null, true, 9, 0, Bf16GemmVariant.WgmmaWs)]
    [TestCase("", true, 9, 0, Bf16GemmVariant.WgmmaWs)]
    [TestCase("auto", true, 8, 0, Bf16GemmVariant.Mma)]
    [TestCase(null, true, 8, 9, Bf16GemmVariant.Mma)]
    [TestCase("auto", true, 10, 0, Bf16GemmVariant.Mma)]
    [TestCase(null, true, 7, 5, Bf16GemmVariant.Simple)]
    [TestCase("auto", false, 0, 0, Bf16GemmVariant.Simple)]
    [TestCase("simple", true, 9, 0, Bf16GemmVariant.Simple)]
    public void AutoPicksTheKernelByDevice(string? setting, bool cuda, int major, int minor, Bf16GemmVariant expected) =>
        Assert.That(IlgpuBackend.Bf16GemmVariantFor(setting, cuda, major, minor), Is.EqualTo(expected));

    /// <summary>A setting that names no kernel is refused, with the choices in the message.</summary>
    [Test]
    public void UnknownSettingIsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => IlgpuBackend.Bf16GemmVariantFor("wgma", true, 9, 0))!;
        Assert.That(e.Message, Does.Contain("HFT_BF16_GEMM='wgma'").And.Contain("wgmma-ws"));
    }

    /// <summary>The variant's default follows HFT_BF16_GEMM: auto (the simple kernel without a device) unless it names a kernel.</summary>
    [Test]
    public void DefaultVariantFollowsTheEnvironment()
    {
        string? saved = Environment.GetEnvironmentVariable("HFT_BF16_GEMM");
        try
        {
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", null);
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.Simple));
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", "Fast");
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.Fast));
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", " WGMMA ");
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.Wgmma));
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", "mma");
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.Mma));
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", "wgmma-tma");
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.WgmmaTma));
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", "wgmma-ws");
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.WgmmaWs));
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", "auto");
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.Simple), "auto without a device");
            Environment.SetEnvironmentVariable("HFT_BF16_GEMM", "simple");
            Assert.That(IlgpuBackend.DefaultBf16GemmVariant, Is.EqualTo(Bf16GemmVariant.Simple));
        }
        finally { Environment.SetEnvironmentVariable("HFT_BF16_GEMM", saved); }
    }

    /// <summary>
    /// The kernels' PTX for sm_90 at both optimisation levels: the CUDA branch alone (no emulation barriers, no dynamic
    /// shared memory), 2 × 32 mma.sync per 32-wide k step, 48 KiB of static shared memory, no f64, 16-byte shared
    /// loads for the fragments (16 per k step) and 16-byte global loads (6 per k step, twice: first step and loop);
    /// the shared stores per form: 16-byte chunks where k-contiguous, 4-byte pairs into A's fragments and 8-byte
    /// halves into B's rows where transposed in registers.
    /// </summary>
    [TestCase(nameof(IlgpuBackend.MatMulBf16FastKernel), OptimizationLevel.O2, 12, 0, 0)]
    [TestCase(nameof(IlgpuBackend.MatMulBf16FastKernel), OptimizationLevel.O1, 12, 0, 0)]
    [TestCase(nameof(IlgpuBackend.MatMulBf16FastNNKernel), OptimizationLevel.O2, 4, 0, 16)]
    [TestCase(nameof(IlgpuBackend.MatMulBf16FastNNKernel), OptimizationLevel.O1, 4, 0, 16)]
    [TestCase(nameof(IlgpuBackend.MatMulBf16FastTNKernel), OptimizationLevel.O2, 0, 16, 16)]
    [TestCase(nameof(IlgpuBackend.MatMulBf16FastTNKernel), OptimizationLevel.O1, 0, 16, 16)]
    public void PtxHoldsTheTensorCorePathAlone(string kernel, OptimizationLevel level, int v4Stores, int b32Stores, int v2Stores)
    {
        string ptx = Bf16Gemm.CompilePtx(kernel, level);
        int mmas = Regex.Matches(ptx, @"\bmma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32\b").Count;
        Assert.That(mmas, Is.EqualTo(64), "2 × 32 mma per 32-wide k step");
        Assert.That(ptx, Does.Not.Contain("bar.warp.sync"), "the emulation branch must be compiled out on CUDA");
        Assert.That(ptx, Does.Not.Contain(".extern .shared"), "no dynamic shared memory on CUDA");
        Assert.That(ptx, Does.Not.Match(@"\.f64\b"), "no double precision");
        var shared = Regex.Matches(ptx, @"\.shared\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\];").Sum(x => int.Parse(x.Groups[1].Value));
        Assert.That(shared, Is.EqualTo(2 * (128 + 256) * 64), "static shared memory: two stages of A and of B");
        int v4Shared = Regex.Matches(ptx, @"\bld\.shared\.v4\.[bu]32\b").Count;
        int v4Global = Regex.Matches(ptx, @"\bld\.(global\.)?v4\.").Count; // O1: generic ld.v4
        int stV4 = Regex.Matches(ptx, @"\bst\.shared\.v4\.[bu]32\b").Count;
        int stV2 = Regex.Matches(ptx, @"\bst\.shared\.v2\.[bu]32\b").Count;
        int st32 = Regex.Matches(ptx, @"\bst\.shared\.[bu]32\b").Count;
        TestContext.Out.WriteLine($"{kernel} {level}: mma.sync {mmas}, ld.shared.v4 {v4Shared}, ld.global.v4 {v4Global}, st.shared v4/v2/32 {stV4}/{stV2}/{st32}, PTX {ptx.Length} chars");
        Assert.That(v4Shared, Is.EqualTo(16), "8 + 8 16-byte fragment loads per k step");
        Assert.That(v4Global, Is.EqualTo(12), "2 + 4 16-byte global loads per k step, first step and loop");
        Assert.That((stV4, st32, stV2), Is.EqualTo((v4Stores, b32Stores, v2Stores)), "shared stores (16-, 4-, 8-byte), first step and loop");
    }
}
