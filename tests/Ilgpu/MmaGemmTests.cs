using System.Text.RegularExpressions;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// The mma.sync GEMM's PTX (sm_80; no GPU here) through <see cref="PtxInterpreter"/> against float64: each form with
/// 2, 3 and 4 stages, k steps fewer and more than the stages, split k and accumulation, in both extremes of
/// asynchrony; the stage count per shared-memory limit; and the instructions of its entries.
/// </summary>
[TestFixture]
public class MmaGemmTests
{
    private static PtxGemmCheck Mma(int stages) => new(MmaGemmPtx.Module(stages), MmaGemmPtx.EntryOf, MmaGemmPtx.SharedBytes(stages));

    [TestCase(false, true, 128, 256, 320, false, 1, 3, TestName = "NT, 5 k steps, 3 stages")]
    [TestCase(false, true, 256, 256, 64, true, 1, 4, TestName = "NT, 1 k step, 4 stages, accumulate")]
    [TestCase(false, false, 128, 512, 256, true, 1, 2, TestName = "NN, 4 k steps, 2 stages, accumulate")]
    [TestCase(false, false, 256, 256, 384, false, 1, 4, TestName = "NN, 6 k steps, 4 stages")]
    [TestCase(true, false, 128, 256, 448, false, 1, 3, TestName = "TN, 7 k steps, 3 stages")]
    [TestCase(true, false, 256, 256, 320, true, 2, 2, TestName = "TN, split k into 192 + 128, 2 stages, accumulate")]
    [TestCase(false, true, 130, 258, 200, true, 1, 3, TestName = "NT, ragged m, n and k, 3 stages, accumulate")]
    [TestCase(false, false, 200, 264, 136, false, 1, 4, TestName = "NN, ragged m, n and k, 4 stages")]
    [TestCase(true, false, 136, 264, 328, false, 2, 2, TestName = "TN, ragged m, n and k, split k into 192 + 136, 2 stages")]
    public void MatchesFloat64(bool transA, bool transB, int m, int n, int k, bool accumulate, int splits, int stages)
    {
        var mma = Mma(stages);
        Assert.That(mma.WorstError(transA, transB, m, n, k, accumulate, splits, out string where), Is.LessThanOrEqualTo(1.0), where);
        Assert.That(mma.WorstError(transA, transB, m, n, k, accumulate, splits, out where, late: true), Is.LessThanOrEqualTo(1.0), "copies landing at once: " + where);
    }

    /// <summary>Stores in bf16: every element the fp32 store's value rounded to nearest even (whole and ragged tiles).</summary>
    [TestCase(false, true, 128, 256, 128)]
    [TestCase(false, false, 130, 264, 136)]
    [TestCase(true, false, 136, 264, 200)]
    public void Bf16StoresAreTheFp32StoresRounded(bool transA, bool transB, int m, int n, int k) =>
        Assert.That(Mma(3).Bf16StoresMismatch(transA, transB, m, n, k), Is.Null);

    /// <summary>As many stages as a block's shared memory allows: 4 on sm_90 (227 KiB), 3 on sm_80 (163 KiB), 2 on sm_86/89 (99 KiB), none below.</summary>
    [TestCase(232448, 4)]
    [TestCase(166912, 3)]
    [TestCase(101376, 2)]
    [TestCase(49152, 0)]
    public void StagesFitTheSharedMemory(int bytes, int stages) => Assert.That(MmaGemmPtx.StagesFor(bytes), Is.EqualTo(stages));

    /// <summary>
    /// Per entry, per 64-wide k step: 32 ldmatrix.x4 (transposed for an MN-major operand) and 128 mma.sync, 12 cp.async
    /// per issue (stages − 1 issues before the loop, one in it), and no wgmma.
    /// </summary>
    [TestCase(3)]
    public void EachEntryHasTheExpectedInstructions(int stages)
    {
        string ptx = MmaGemmPtx.Module(stages);
        Assert.That(ptx, Does.Contain(".target sm_80").And.Not.Contain("wgmma"));
        foreach (var (ta, tb) in new[] { (false, true), (false, false), (true, false) })
        {
            string name = MmaGemmPtx.EntryOf(ta, tb);
            string body = Regex.Match(ptx, @"\.entry " + name + @"\((?s:.*?)\n\}").Value;
            Assert.That(Regex.Matches(body, @"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32").Count, Is.EqualTo(128), name);
            Assert.That(Regex.Matches(body, @"ldmatrix\.sync\.aligned\.m8n8\.x4\.shared").Count, Is.EqualTo((ta ? 0 : 16) + (tb ? 16 : 0)), name);
            Assert.That(Regex.Matches(body, @"ldmatrix\.sync\.aligned\.m8n8\.x4\.trans\.shared").Count, Is.EqualTo((ta ? 16 : 0) + (tb ? 0 : 16)), name);
            Assert.That(Regex.Matches(body, @"cp\.async\.cg\.shared\.global").Count, Is.EqualTo(stages * 12), name);
        }
    }
}
