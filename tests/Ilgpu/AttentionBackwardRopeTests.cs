using HftRuntime.Kernels;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using static HftRuntime.Tests.Support.Numerics;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// The attention backward pass fused with the inverse RoPE of dq and dk (the tensor-core kernels rotate and round the
/// gradients as they store them): bit for bit what AttentionBackward, Rope(inverse: true) and ToBf16 give in turn,
/// on ragged tiles, grouped heads, documents and positions outside the table.
/// </summary>
[TestFixture]
public sealed class AttentionBackwardRopeTests : IlgpuFixture
{
    private const int Batch = 2, Heads = 4, KvHeads = 2, Hd = 64;

    /// <summary>Positions 0 .. seq − 1 per sequence, with two outside the table (−1 and max + 3), and a table of maxPositions rows.</summary>
    private static int[] Positions(int seq, int max)
    {
        var p = new int[Batch * seq];
        for (int b = 0; b < Batch; b++)
            for (int t = 0; t < seq; t++) p[b * seq + t] = t % max;
        p[5] = -1;
        p[seq + 9] = max + 3;
        return p;
    }

    [TestCase(77, 80, false)]
    [TestCase(100, 100, true)]
    public void FusedGivesTheBitsOfTheSeparateSteps(int seq, int max, bool documents)
    {
        var rng = new Random(seq);
        int n = Batch * seq, nq = n * Heads * Hd, nk = n * KvHeads * Hd;
        var doc = new int[n];
        if (documents) for (int t = 50; t < seq; t++) doc[seq + t] = 50;
        using var h = new OpHarness(Gpu);
        var q = h.InputBf16(Bf16s(Randn(rng, nq)), "q"); var k = h.InputBf16(Bf16s(Randn(rng, nk)), "k"); var v = h.InputBf16(Bf16s(Randn(rng, nk)), "v");
        var dO = h.Input(Randn(rng, nq), "dO");
        var o = h.OutputBf16(nq, "o"); var lse = h.Output(Heads * n, "lse");
        var pos = h.Input(Positions(seq, max), "positions");
        var cos = h.Input(Randn(rng, max * Hd / 2), "cos"); var sin = h.Input(Randn(rng, max * Hd / 2), "sin");
        var td = h.Input(doc, "doc");
        var dq = h.Output(nq, "dq"); var dk = h.Output(nk, "dk"); var dv = h.Output(nk, "dv");
        var dq16 = h.OutputBf16(nq, "dq16"); var dk16 = h.OutputBf16(nk, "dk16"); var dv16 = h.OutputBf16(nk, "dv16");
        var fq = h.Output(nq, "fq"); var fk = h.Output(nk, "fk"); var fv = h.Output(nk, "fv");
        var fq16 = h.OutputBf16(nq, "fq16"); var fk16 = h.OutputBf16(nk, "fk16"); var fv16 = h.OutputBf16(nk, "fv16");
        h.Commit();
        float scale = 1f / MathF.Sqrt(Hd);
        Gpu.AttentionForward(o, lse, q, k, v, td, Batch, seq, Heads, KvHeads, Hd, scale);
        Gpu.AttentionBackward(dq, dk, dv, dO, o, lse, q, k, v, td, Batch, seq, Heads, KvHeads, Hd, scale, bf16: true);
        Gpu.Rope(dq, pos, cos, sin, n, Heads, Hd, max, inverse: true, xBf16: dq16);
        Gpu.Rope(dk, pos, cos, sin, n, KvHeads, Hd, max, inverse: true, xBf16: dk16);
        Gpu.ToBf16(dv16, dv);
        Gpu.AttentionBackwardRope(fq16, fk16, fv16, dO, o, lse, q, k, v, td, Batch, seq, Heads, KvHeads, Hd, scale, pos, cos, sin, max);
        Gpu.AttentionBackwardRope(fq, fk, fv, dO, o, lse, q, k, v, td, Batch, seq, Heads, KvHeads, Hd, scale, pos, cos, sin, max);

        Assert.That(h.ReadBf16(fq16), Is.EqualTo(h.ReadBf16(dq16)), "dq in bf16");
        Assert.That(h.ReadBf16(fk16), Is.EqualTo(h.ReadBf16(dk16)), "dk in bf16");
        Assert.That(h.ReadBf16(fv16), Is.EqualTo(h.ReadBf16(dv16)), "dv in bf16");
        Assert.That(h.Read(fq), Is.EqualTo(h.Read(dq)), "dq in fp32");
        Assert.That(h.Read(fk), Is.EqualTo(h.Read(dk)), "dk in fp32");
        Assert.That(h.Read(fv), Is.EqualTo(h.Read(dv)), "dv in fp32");
        // The rotation did something: the rotated gradient is not the attention's own.
        Gpu.AttentionBackward(dq, dk, dv, dO, o, lse, q, k, v, td, Batch, seq, Heads, KvHeads, Hd, scale, bf16: true);
        Assert.That(RelErr(h.Read(fq), h.Read(dq)), Is.GreaterThan(0.1));
    }

    [Test]
    public void BackEndsWithoutItAndMixedOutputsAreRefused()
    {
        Assert.That(Cpu.FusesAttentionBackwardRope(Hd), Is.False);
        Assert.That(Gpu.FusesAttentionBackwardRope(Hd), Is.True);
        Assert.That(Gpu.FusesAttentionBackwardRope(32), Is.False, "the tensor-core kernels are head dimension 64 only");
        const int seq = 8, n = Batch * seq, nq = n * Heads * Hd, nk = n * KvHeads * Hd;
        using var c = new OpHarness(Cpu);
        var cq = c.Input(new float[nq]); var ck = c.Input(new float[nk]); var cl = c.Output(Heads * n); var cp = c.Input(new int[n]); var ct = c.Input(new float[seq * Hd / 2]);
        var cdk = c.Output(nk);
        c.Commit();
        Assert.Throws<NotSupportedException>(() => Cpu.AttentionBackwardRope(cq, cdk, cdk, cq, cq, cl, cq, ck, ck, default,
            Batch, seq, Heads, KvHeads, Hd, 0.125f, cp, ct, ct, seq));
        using var g = new OpHarness(Gpu);
        var q = g.Input(new float[nq]); var k = g.Input(new float[nk]); var lse = g.Output(Heads * n); var p = g.Input(new int[n]); var t = g.Input(new float[seq * Hd / 2]);
        var dq16 = g.OutputBf16(nq); var dk = g.Output(nk); var dv = g.Output(nk);
        g.Commit();
        var e = Assert.Throws<ArgumentException>(() => Gpu.AttentionBackwardRope(dq16, dk, dv, q, q, lse, q, k, k, default,
            Batch, seq, Heads, KvHeads, Hd, 0.125f, p, t, t, seq));
        Assert.That(e!.Message, Does.Contain("one type"));
    }

    private static ushort[] Bf16s(float[] x) => x.Select(Bf16.FromFloat).ToArray();
}
