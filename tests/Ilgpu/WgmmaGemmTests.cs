using System.Text.RegularExpressions;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// The wgmma GEMM's PTX (sm_90a, no GPU here): run through <see cref="PtxInterpreter"/> against float64 for each form,
/// with k steps fewer than, equal to and more than the pipeline's stages, split k and accumulation; its shape; and the
/// dispatch where no sm_90 device is (the simple kernel, still right).
/// </summary>
[TestFixture]
public class WgmmaGemmTests : IlgpuFixture
{
    [TestCase(false, true, 128, 256, 384, false, 1, TestName = "NT, 6 k steps (the stage ring wraps)")]
    [TestCase(false, true, 256, 512, 64, true, 1, TestName = "NT, 4 tiles, 1 k step, accumulate")]
    [TestCase(false, false, 256, 256, 128, true, 1, TestName = "NN, 2 tiles, 2 k steps, accumulate")]
    [TestCase(false, false, 128, 512, 320, false, 1, TestName = "NN, 5 k steps")]
    [TestCase(true, false, 128, 256, 448, false, 1, TestName = "TN, 7 k steps")]
    [TestCase(true, false, 256, 256, 320, false, 2, TestName = "TN, split k into 192 + 128")]
    public void MatchesFloat64(bool transA, bool transB, int m, int n, int k, bool accumulate, int splits)
    {
        Assert.That(WorstError(transA, transB, m, n, k, accumulate, splits, swapped: false, out string where), Is.LessThanOrEqualTo(1.0), where);
        // The other extreme of asynchrony (copies land at once, wgmma read at their wait) in the other thread order.
        Assert.That(WorstError(transA, transB, m, n, k, accumulate, splits, swapped: false, out where, lateWgmma: true), Is.LessThanOrEqualTo(1.0), "late wgmma: " + where);
    }

    /// <summary>Bands of 2 tile rows over 3 (a ragged last band) × 2 tile columns × 2 k slices: every tile of every slice, once.</summary>
    [Test]
    public void RaggedBandsOfTheTileOrderCoverEveryTile() =>
        Assert.That(WorstError(false, true, 384, 512, 128, true, 2, swapped: false, out string where, group: 2), Is.LessThanOrEqualTo(1.0), where);

    /// <summary>
    /// The descriptor bits are the launch's: with the MN-major byte offsets exchanged (the other reading that the
    /// back-end tries on a card), the forms with an MN-major operand come out wrong here, and NT (K-major only) does not change.
    /// </summary>
    [Test]
    public void ExchangedByteOffsetsReachTheMnMajorDescriptors()
    {
        Assert.That(WorstError(false, false, 128, 256, 128, false, 1, swapped: true, out _), Is.GreaterThan(1e3), "NN");
        Assert.That(WorstError(true, false, 128, 256, 128, false, 1, swapped: true, out _), Is.GreaterThan(1e3), "TN");
        Assert.That(WorstError(false, true, 128, 256, 128, false, 1, swapped: true, out string where), Is.LessThanOrEqualTo(1.0), where);
    }

    /// <summary>Runs the entry of a form in the interpreter; the worst error against float64 as a multiple of the tolerance (1e-5 of Σ|a·b|).</summary>
    private static double WorstError(bool transA, bool transB, int m, int n, int k, bool accumulate, int splits, bool swapped, out string where,
        int group = WgmmaGemmPtx.Group, bool lateWgmma = false)
    {
        var rng = new Random(m * 7 + n * 3 + k + (transA ? 1 : 0) + (transB ? 2 : 0));
        ushort[] a = Bf16Gemm.RandomBf16(rng, m * k), b = Bf16Gemm.RandomBf16(rng, n * k);
        int kPer = splits == 1 ? k : (k / splits + 63) / 64 * 64;
        long cBytes = (long)splits * m * n * 4, aAt = Align(cBytes), bAt = Align(aAt + a.Length * 2L);
        var ptx = new PtxInterpreter(WgmmaGemmPtx.Module, WgmmaGemmPtx.EntryOf(transA, transB), WgmmaGemmPtx.Parameters, (int)Align(bAt + b.Length * 2L))
        {
            LateWgmmaEarlyCopies = lateWgmma,
            ReverseThreadOrder = lateWgmma,
        };
        var c0 = new float[splits * m * n];
        for (int i = 0; i < c0.Length; i++) c0[i] = accumulate ? (float)(rng.NextDouble() * 2 - 1) : float.NaN;
        Buffer.BlockCopy(c0, 0, ptx.Global, 0, (int)cBytes);
        Buffer.BlockCopy(a, 0, ptx.Global, (int)aAt, a.Length * 2);
        Buffer.BlockCopy(b, 0, ptx.Global, (int)bAt, b.Length * 2);
        int tilesM = m / WgmmaGemmPtx.TileM, tilesN = n / WgmmaGemmPtx.TileN;
        ulong g = PtxInterpreter.GlobalBase;
        var (aLo, aHi) = WgmmaGemmPtx.DescriptorBits(kMajor: !transA, swapped);
        var (bLo, bHi) = WgmmaGemmPtx.DescriptorBits(kMajor: transB, swapped);
        ptx.Run(tilesM * tilesN * splits, WgmmaGemmPtx.Threads, WgmmaGemmPtx.SharedBytes,
            [g, g + (ulong)aAt, g + (ulong)bAt, (ulong)m, (ulong)n, (ulong)k, accumulate ? 1UL : 0, (ulong)tilesM, (ulong)tilesN, (ulong)kPer, (ulong)(m * n),
             aLo, aHi, bLo, bHi, (ulong)group]);
        var got = new float[splits * m * n];
        Buffer.BlockCopy(ptx.Global, 0, got, 0, (int)cBytes);

        double worst = 0;
        where = "";
        for (int z = 0; z < splits; z++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    int at = z * m * n + i * n + j;
                    double sum = accumulate ? c0[at] : 0, scale = Math.Abs(sum);
                    for (int kk = z * kPer; kk < Math.Min(k, (z + 1) * kPer); kk++)
                    {
                        double x = Bf16Gemm.Bf(a[transA ? kk * m + i : i * k + kk]) * Bf16Gemm.Bf(b[transB ? j * k + kk : kk * n + j]);
                        sum += x;
                        scale += Math.Abs(x);
                    }
                    double ratio = Math.Abs(got[at] - sum) / (1e-5 * scale + 1e-30);
                    if (double.IsNaN(ratio)) ratio = double.PositiveInfinity;
                    if (ratio > worst) { worst = ratio; where = $"slice {z} ({i}, {j}): {got[at]} against {sum}"; }
                }
        return worst;
    }

    /// <summary>
    /// On a device that cannot run it (here ILGPU's CPU accelerator) the wgmma variant runs the simple kernel, right,
    /// and says why; the module is never launched.
    /// </summary>
    [Test]
    public void WithoutAnSm90DeviceTheSimpleKernelRuns()
    {
        var saved = Gpu.Bf16GemmVariant;
        Gpu.Bf16GemmVariant = Bf16GemmVariant.Wgmma;
        try
        {
            Bf16Gemm.Check(Gpu, 128, 256, 64, transA: false, transB: true, accumulate: false);
            Bf16Gemm.Check(Gpu, 128, 256, 64, transA: true, transB: false, accumulate: true);
            Assert.That(Gpu.WgmmaLaunches, Is.Zero);
            Assert.That(Gpu.WgmmaStatus, Is.EqualTo("unavailable: needs a CUDA device"));
        }
        finally { Gpu.Bf16GemmVariant = saved; }
    }

    private static long Align(long bytes) => (bytes + 255) / 256 * 256;

    /// <summary>Each form's entry has 4 wgmma of m64n256k16 per k step with the form's transposes, and 12 cp.async (4 of a, 8 of b) per load step.</summary>
    [Test]
    public void EachEntryHasTheExpectedInstructions()
    {
        string ptx = WgmmaGemmPtx.Module;
        Assert.That(ptx, Does.Contain(".target sm_90a"));
        foreach (var (name, ta, tb) in new[] { (WgmmaGemmPtx.EntryNT, 0, 0), (WgmmaGemmPtx.EntryNN, 0, 1), (WgmmaGemmPtx.EntryTN, 1, 1) })
        {
            string body = Regex.Match(ptx, @"\.entry " + name + @"\((?s:.*?)\n\}").Value;
            Assert.That(Regex.Matches(body, @"wgmma\.mma_async\.sync\.aligned\.m64n256k16\.f32\.bf16\.bf16 .*, 1, 1, " + ta + ", " + tb + ";").Count, Is.EqualTo(4), name);
            // Two prologue issues and one in the loop, 12 copies each.
            Assert.That(Regex.Matches(body, @"cp\.async\.cg\.shared\.global").Count, Is.EqualTo(3 * 12), name);
            Assert.That(Regex.Matches(body, @"st\.global\.v2\.f32").Count, Is.EqualTo(2 * 64), name);
        }
    }
}
