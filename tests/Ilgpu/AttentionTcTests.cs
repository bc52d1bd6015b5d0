using System.Text.RegularExpressions;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Tests.Support;
using ILGPU;
using NUnit.Framework;
using static HftRuntime.Tests.Support.Numerics;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// The tensor-core attention (bf16 products, head dimension 64): which calls take it, how far it is from fp32, and
/// its PTX for sm_90. Its accuracy on ragged tiles, GQA and documents is checked by the self-test's "bf16" attention
/// cases in <see cref="IlgpuParityTests"/>.
/// </summary>
[TestFixture]
public sealed class AttentionTcTests : IlgpuFixture
{
    /// <summary>Output and gradients of one attention forward and backward (b1, 2 heads on 1 kv head).</summary>
    private static float[][] Run(Backend be, int seq, int hd, bool bf16)
    {
        const int heads = 2, kvHeads = 1;
        var rng = new Random(11);
        int nq = seq * heads * hd, nk = seq * kvHeads * hd;
        var q = Randn(rng, nq); var k = Randn(rng, nk); var v = Randn(rng, nk); var dO = Randn(rng, nq);
        using var h = new OpHarness(be);
        var tq = h.Input(q); var tk = h.Input(k); var tv = h.Input(v); var tdo = h.Input(dO);
        var o = h.Output(nq); var lse = h.Output(heads * seq); var dq = h.Output(nq); var dk = h.Output(nk); var dv = h.Output(nk);
        h.Commit();
        float scale = 1f / MathF.Sqrt(hd);
        be.AttentionForward(o, lse, tq, tk, tv, default, 1, seq, heads, kvHeads, hd, scale, bf16);
        be.AttentionBackward(dq, dk, dv, tdo, o, lse, tq, tk, tv, default, 1, seq, heads, kvHeads, hd, scale, bf16);
        return [h.Read(o), h.Read(lse), h.Read(dq), h.Read(dk), h.Read(dv)];
    }

    /// <summary>
    /// bf16 at head dimension 64 takes the tensor-core kernels: every output differs from fp32 by bf16 rounding (more
    /// than 1e-4 relative, within the self-test's 1e-2 and 2e-2); without bf16, or at another head dimension, the fp32
    /// kernels answer (within 1e-5). The CPU back-end ignores bf16.
    /// </summary>
    [Test]
    public void Bf16AtHeadDimension64TakesTheTensorCores()
    {
        var want = Run(Cpu, 90, 64, bf16: false);
        var tc = Run(Gpu, 90, 64, bf16: true);
        string[] names = ["o", "lse", "dq", "dk", "dv"];
        for (int i = 0; i < names.Length; i++)
        {
            double err = RelErr(tc[i], want[i]);
            TestContext.Out.WriteLine($"{names[i]}: bf16 relative error {err:e2}");
            if (names[i] != "lse") Assert.That(err, Is.GreaterThan(1e-4), $"{names[i]}: no bf16 rounding, so not the tensor-core path");
            Assert.That(err, Is.LessThan(i < 2 ? 1e-2 : 2e-2), names[i]);
        }
        var fp32 = Run(Gpu, 90, 64, bf16: false);
        for (int i = 0; i < names.Length; i++) Assert.That(RelErr(fp32[i], want[i]), Is.LessThan(1e-5), $"fp32 {names[i]}");
        var other = Run(Gpu, 40, 32, bf16: true);
        var otherWant = Run(Cpu, 40, 32, bf16: true);
        for (int i = 0; i < names.Length; i++) Assert.That(RelErr(other[i], otherWant[i]), Is.LessThan(1e-5), $"head dimension 32 {names[i]}");
        Assert.That(Gpu.UsesTensorCoreAttention(true, 64) && !Gpu.UsesTensorCoreAttention(true, 128) && !Gpu.UsesTensorCoreAttention(false, 64));
    }

    /// <summary>
    /// Tiles wholly below the diagonal skip the mask (forward and dQ: a 64-key tile before a warp's first query; dK/dV:
    /// a 64-query tile after a warp's last key). At 150 tokens each kernel has both kinds of tile and ragged ones, and
    /// every output still matches fp32 within the bf16 tolerances: a mask skipped where it matters lets queries see
    /// later keys, far outside them.
    /// </summary>
    [TestCase(150)]
    [TestCase(192)]
    public void TilesBelowTheDiagonalSkipTheMask(int seq)
    {
        var want = Run(Cpu, seq, 64, bf16: false);
        var tc = Run(Gpu, seq, 64, bf16: true);
        string[] names = ["o", "lse", "dq", "dk", "dv"];
        for (int i = 0; i < names.Length; i++)
            Assert.That(RelErr(tc[i], want[i]), Is.LessThan(i < 2 ? 1e-2 : 2e-2), names[i]);
    }

    /// <summary>
    /// With <see cref="IlgpuBackend.TensorCoreAttention"/> off (HFT_BF16_ATTENTION=fp32) bf16 attention at head
    /// dimension 64 runs on the fp32 kernels, BF16 operands are refused, and a bf16 model keeps fp32 attention.
    /// </summary>
    [Test]
    public void TheTensorCoreAttentionCanBeTurnedOff()
    {
        Assert.That(Gpu.TensorCoreAttention, Is.EqualTo(IlgpuBackend.DefaultTensorCoreAttention));
        string? saved = Environment.GetEnvironmentVariable("HFT_BF16_ATTENTION");
        try
        {
            Environment.SetEnvironmentVariable("HFT_BF16_ATTENTION", " FP32 ");
            Assert.That(IlgpuBackend.DefaultTensorCoreAttention, Is.False);
            Environment.SetEnvironmentVariable("HFT_BF16_ATTENTION", null);
            Assert.That(IlgpuBackend.DefaultTensorCoreAttention, Is.True);
        }
        finally { Environment.SetEnvironmentVariable("HFT_BF16_ATTENTION", saved); }

        bool before = Gpu.TensorCoreAttention;
        Gpu.TensorCoreAttention = false;
        try
        {
            var want = Run(Cpu, 70, 64, bf16: false);
            var got = Run(Gpu, 70, 64, bf16: true);
            for (int i = 0; i < want.Length; i++) Assert.That(RelErr(got[i], want[i]), Is.LessThan(1e-5), $"output {i} in fp32");
            Assert.That(Gpu.TakesBf16AttentionInputs(64), Is.False);
            var config = new HftRuntime.Model.LlamaConfig { VocabSize = 32, HiddenSize = 128, IntermediateSize = 64, NumHiddenLayers = 1, NumAttentionHeads = 2 };
            using var model = HftRuntime.Model.LlamaModel.Create(Gpu, config, new HftRuntime.Model.LlamaModelOptions(1, 8, Precision: HftRuntime.Runtime.Precision.Bf16));
            Assert.That(model.AttentionPrecision, Is.EqualTo("fp32"));
        }
        finally { Gpu.TensorCoreAttention = before; }
    }

    /// <summary>
    /// BF16 operands (q, k, v, dO, o) are read as they are: the results are bit-identical to those from F32 operands,
    /// which the back-end rounds to bf16 first, and a BF16 output is the fp32 output rounded. The CPU back-end takes
    /// no BF16 operand, and says so.
    /// </summary>
    [Test]
    public void Bf16OperandsGiveTheBitsOfRoundedF32Ones()
    {
        const int seq = 77, heads = 4, kvHeads = 2, hd = 64;
        var rng = new Random(12);
        int nq = seq * heads * hd, nk = seq * kvHeads * hd;
        var q = Randn(rng, nq); var k = Randn(rng, nk); var v = Randn(rng, nk); var dO = Randn(rng, nq);
        var doc = new int[seq];
        for (int t = 40; t < seq; t++) doc[t] = 40;
        float scale = 0.125f;
        using var h = new OpHarness(Gpu);
        var tq = h.Input(q); var tk = h.Input(k); var tv = h.Input(v); var tdo = h.Input(dO); var td = h.Input(doc);
        var bq = h.InputBf16(Array.ConvertAll(q, Bf16.FromFloat)); var bk = h.InputBf16(Array.ConvertAll(k, Bf16.FromFloat));
        var bv = h.InputBf16(Array.ConvertAll(v, Bf16.FromFloat)); var bdo = h.InputBf16(Array.ConvertAll(dO, Bf16.FromFloat));
        var o = h.Output(nq); var lse = h.Output(heads * seq); var o16 = h.OutputBf16(nq); var lse16 = h.Output(heads * seq);
        var dq = h.Output(nq); var dk = h.Output(nk); var dv = h.Output(nk);
        var dq16 = h.Output(nq); var dk16 = h.Output(nk); var dv16 = h.Output(nk); var o16Wide = h.Output(nq);
        h.Commit();
        Gpu.AttentionForward(o, lse, tq, tk, tv, td, 1, seq, heads, kvHeads, hd, scale, bf16: true);
        Gpu.AttentionForward(o16, lse16, bq, bk, bv, td, 1, seq, heads, kvHeads, hd, scale);
        Assert.That(h.ReadBf16(o16), Is.EqualTo(Array.ConvertAll(h.Read(o), Bf16.FromFloat)), "a BF16 output is the F32 one rounded");
        Assert.That(h.Read(lse16), Is.EqualTo(h.Read(lse)));
        // The backward pass from o16 (BF16) and from o16 widened (F32, rounded again: the same bits).
        Gpu.Upload<float>(o16Wide, Array.ConvertAll(h.ReadBf16(o16), Bf16.ToFloat));
        Gpu.AttentionBackward(dq, dk, dv, tdo, o16Wide, lse, tq, tk, tv, td, 1, seq, heads, kvHeads, hd, scale, bf16: true);
        Gpu.AttentionBackward(dq16, dk16, dv16, bdo, o16, lse16, bq, bk, bv, td, 1, seq, heads, kvHeads, hd, scale);
        Assert.That(h.Read(dq16), Is.EqualTo(h.Read(dq)));
        Assert.That(h.Read(dk16), Is.EqualTo(h.Read(dk)));
        Assert.That(h.Read(dv16), Is.EqualTo(h.Read(dv)));

        Assert.That(Gpu.TakesBf16AttentionInputs(64) && !Gpu.TakesBf16AttentionInputs(32) && !Cpu.TakesBf16AttentionInputs(64));
        using var c = new OpHarness(Cpu);
        var cq = c.InputBf16(new ushort[nq], "q16"); var ck = c.Input(k); var cv = c.Input(v); var co = c.Output(nq); var cl = c.Output(heads * seq);
        c.Commit();
        Assert.That(() => Cpu.AttentionForward(co, cl, cq, ck, cv, default, 1, seq, heads, kvHeads, hd, scale, bf16: true),
            Throws.ArgumentException.With.Message.Contains("q 'q16' must be F32, is BF16"));
    }

    /// <summary>
    /// The kernels' PTX for sm_90 at both optimisation levels: the CUDA branch alone (no emulation barriers, no dynamic
    /// shared memory), 32 mma.sync per product of a 64-row tile (forward QKᵀ and PV: 64; dQ: 96; dK/dV: 128), the
    /// probabilities packed by cvt.rn.bf16x2, the static shared memory of their tiles, no f64, and the base-2
    /// exponential as the hardware's ex2.
    /// </summary>
    [TestCase(nameof(IlgpuBackend.AttentionTcForwardKernel), OptimizationLevel.O2, 64, 32, 2 * 64 * 40 * 4)]
    [TestCase(nameof(IlgpuBackend.AttentionTcForwardKernel), OptimizationLevel.O1, 64, 32, 2 * 64 * 40 * 4)]
    [TestCase(nameof(IlgpuBackend.AttentionTcDqKernel), OptimizationLevel.O2, 96, 32, 3 * 64 * 40 * 4)]
    [TestCase(nameof(IlgpuBackend.AttentionTcDkDvKernel), OptimizationLevel.O2, 128, 64, 4 * 64 * 40 * 4 + 3 * 64 * 4)]
    [TestCase(nameof(IlgpuBackend.AttentionTcDeltaKernel), OptimizationLevel.O2, 0, 0, 0)]
    public void PtxHoldsTheTensorCorePathAlone(string kernel, OptimizationLevel level, int mmas, int packs, int sharedBytes)
    {
        string ptx = Bf16Gemm.CompilePtx(kernel, level);
        int found = Regex.Matches(ptx, @"\bmma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32\b").Count;
        int cvt = Regex.Matches(ptx, @"\bcvt\.rn\.bf16x2\.f32\b").Count;
        TestContext.Out.WriteLine($"{kernel} {level}: mma.sync {found}, cvt.rn.bf16x2 {cvt}, ex2 {Regex.Matches(ptx, @"\bex2\.").Count}, PTX {ptx.Length} chars");
        Assert.That(found, Is.EqualTo(mmas));
        // P and dS (and the bf16 outputs: o; dq; dk and dv) become bf16 pairs in one instruction each: 16 pairs per 16 × 64 block.
        Assert.That(cvt, Is.EqualTo(packs));
        Assert.That(ptx, Does.Not.Contain("bar.warp.sync"), "the emulation branch must be compiled out on CUDA");
        Assert.That(ptx, Does.Not.Contain(".extern .shared"), "no dynamic shared memory on CUDA");
        Assert.That(ptx, Does.Not.Match(@"\.f64\b"), "no double precision");
        if (mmas > 0) Assert.That(ptx, Does.Match(@"\bex2\.approx"), "exponentials on the special-function unit");
        var shared = Regex.Matches(ptx, @"\.shared\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\];").Sum(x => int.Parse(x.Groups[1].Value));
        Assert.That(shared, Is.EqualTo(sharedBytes), "static shared memory: the 64 × (32 + 4)-uint tiles (and the query statistics)");
    }
}
