using HftRuntime.Kernels;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using static HftRuntime.Tests.Support.Numerics;

namespace HftRuntime.Tests.Ops;

/// <summary>
/// Every back-end operation against a float64 reference (forward) or central finite differences of the float64
/// reference (backward), on random inputs with odd sizes; outputs are poisoned with NaN before each run. A derived
/// fixture supplies the back-end.
/// </summary>
public abstract class BackendOpTests
{
    /// <summary>The back-end under test.</summary>
    protected Backend Backend { get; private set; } = null!;

    /// <summary>Creates the back-end under test.</summary>
    protected abstract Backend CreateBackend();

    /// <summary>Relative tolerance for forward results against float64.</summary>
    protected virtual double ForwardTolerance => 2e-6;

    /// <summary>Relative tolerance for gradients against float64 finite differences.</summary>
    protected virtual double GradientTolerance => 2e-5;

    [OneTimeSetUp] public void SetUpBackend() => Backend = CreateBackend();
    [OneTimeTearDown] public void TearDownBackend() => Backend.Dispose();

    private OpHarness H() => new(Backend);

    [TestCase(5, 7, 11)]
    [TestCase(33, 64, 50)]
    public void EmbeddingForwardGathersAndBackwardScatterAdds(int n, int dim, int vocab)
    {
        var rng = new Random(n);
        var table = Randn(rng, vocab * dim);
        var ids = RandInt(rng, n, vocab);
        ids[n - 1] = ids[0]; // a repeated id must accumulate twice
        var dy = Randn(rng, n * dim);
        var dTable0 = Randn(rng, vocab * dim);
        using var h = H();
        var tT = h.Input(table); var tIds = h.Input(ids); var y = h.Output(n * dim);
        var tDy = h.Input(dy); var tDTable = h.Input(dTable0);
        h.Commit();
        Backend.EmbeddingForward(y, tIds, tT, n, dim, vocab);
        Backend.EmbeddingBackward(tDTable, tIds, tDy, n, dim, vocab);
        var want = new double[n * dim];
        var wantD = D(dTable0);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < dim; j++)
            {
                want[i * dim + j] = table[ids[i] * dim + j];
                wantD[ids[i] * dim + j] += dy[i * dim + j];
            }
        Assert.That(RelErr(h.Read(y), want), Is.EqualTo(0));
        Assert.That(RelErr(h.Read(tDTable), wantD), Is.LessThan(ForwardTolerance));
    }

    [TestCase(3, 17, 1e-5)]
    [TestCase(9, 64, 1e-6)]
    [TestCase(5, 300, 1e-5)] // the GPU kernels' four-column steps (128 columns each) and their tail
    public void RmsNormMatchesReferenceAndFiniteDifferences(int n, int d, double eps)
    {
        var rng = new Random(d);
        var x = Randn(rng, n * d); var w = Randn(rng, d, 0.5); var r = Randn(rng, n * d);
        var dx0 = Randn(rng, n * d); var dw0 = Randn(rng, d);
        using var h = H();
        var tx = h.Input(x); var tw = h.Input(w); var y = h.Output(n * d); var rstd = h.Output(n);
        var tdy = h.Input(r); var tdx = h.Input(dx0); var tdw = h.Input(dw0); var tdx2 = h.Input(dx0); var tdx3 = h.Input(dx0);
        var dx16 = h.OutputBf16(n * d);
        h.Commit();
        Backend.RmsNormForward(y, rstd, tx, tw, n, d, (float)eps);
        Backend.RmsNormBackward(tdx, tdw, tdy, tx, tw, rstd, n, d);
        Backend.RmsNormBackward(tdx2, default, tdy, tx, tw, rstd, n, d);
        Backend.RmsNormBackward(tdx3, default, tdy, tx, tw, rstd, n, d, dxBf16: dx16);
        // The fused bf16 copy is the updated dx rounded, and dx itself is as without it.
        Assert.That(h.Read(tdx3), Is.EqualTo(h.Read(tdx2)));
        Assert.That(h.ReadBf16(dx16), Is.EqualTo(h.Read(tdx3).Select(Bf16.FromFloat).ToArray()));

        double[] xd = D(x), wd = D(w), rd = D(r);
        Assert.That(RelErr(h.Read(y), Reference.RmsNorm(xd, wd, n, d, eps)), Is.LessThan(ForwardTolerance));
        double Loss() => Dot(Reference.RmsNorm(xd, wd, n, d, eps), rd);
        var gx = FiniteDifference(xd, Loss); var gw = FiniteDifference(wd, Loss);
        Assert.That(RelErr(Minus(h.Read(tdx), dx0), gx), Is.LessThan(GradientTolerance));
        Assert.That(RelErr(Minus(h.Read(tdw), dw0), gw), Is.LessThan(GradientTolerance));
        Assert.That(RelErr(Minus(h.Read(tdx2), dx0), gx), Is.LessThan(GradientTolerance), "frozen weight: same dx");
    }

    [TestCase(3, 17)]
    [TestCase(9, 64)]
    [TestCase(5, 300)]
    public void FusedRmsNormAddsTheResidualAndWritesBf16InOnePass(int n, int d)
    {
        var rng = new Random(d + 1);
        var x = Randn(rng, n * d); var res = Randn(rng, n * d); var w = Randn(rng, d, 0.5);
        using var h = H();
        var tx = h.Input(x); var tres = h.Input(res); var tw = h.Input(w); var y = h.Output(n * d); var rstd = h.Output(n);
        var y16 = h.OutputBf16(n * d); var tx2 = h.Input(x); var only16 = h.OutputBf16(n * d); var rstd2 = h.Output(n);
        h.Commit();
        Backend.RmsNormForward(y, rstd, tx, tw, n, d, 1e-5f, residual: tres, yBf16: y16);
        Backend.RmsNormForward(default, rstd2, tx2, tw, n, d, 1e-5f, yBf16: only16);
        var sum = x.Select((v, i) => v + res[i]).ToArray();
        Assert.That(h.Read(tx), Is.EqualTo(sum), "x += residual, in place");
        var got = h.Read(y);
        Assert.That(RelErr(got, Reference.RmsNorm(D(sum), D(w), n, d, 1e-5)), Is.LessThan(ForwardTolerance));
        Assert.That(h.ReadBf16(y16), Is.EqualTo(got.Select(Bf16.FromFloat).ToArray()), "the bf16 copy is y rounded");
        var want16 = Reference.RmsNorm(D(x), D(w), n, d, 1e-5);
        Assert.That(RelErr(h.ReadBf16(only16).Select(Bf16.ToFloat).ToArray(), want16), Is.LessThan(4e-3), "bf16 output alone");
        Assert.That(h.Read(tx2), Is.EqualTo(x), "no residual: x untouched");
        Assert.Throws<ArgumentException>(() => Backend.RmsNormForward(default, rstd, tx, tw, n, d, 1e-5f), "no output at all");
    }

    [TestCase(5003)]
    [TestCase(5004)] // whole quads: the GPU back-end's quad kernel
    public void FusedSwiGluWritesBf16WithOrWithoutTheFloatOutput(int count)
    {
        var rng = new Random(9);
        var g = Randn(rng, count, 2); var u = Randn(rng, count);
        using var h = H();
        var tg = h.Input(g); var tu = h.Input(u); var both = h.Output(count); var both16 = h.OutputBf16(count); var only16 = h.OutputBf16(count);
        h.Commit();
        Backend.SwiGluForward(both, tg, tu, both16);
        Backend.SwiGluForward(default, tg, tu, only16);
        var got = h.Read(both);
        Assert.That(RelErr(got, Reference.SwiGlu(D(g), D(u))), Is.LessThan(ForwardTolerance));
        Assert.That(h.ReadBf16(both16), Is.EqualTo(got.Select(Bf16.FromFloat).ToArray()));
        Assert.That(h.ReadBf16(only16), Is.EqualTo(h.ReadBf16(both16)));
    }

    /// <summary>
    /// bf16 SwiGLU: the forward pass also writes gate and up rounded; the backward pass from those bf16 inputs writes
    /// bf16 gradients over them (in place, as the model does) that are the fp32 backward pass on the rounded inputs,
    /// rounded. Mixed types are refused.
    /// </summary>
    [TestCase(4099)]
    [TestCase(4100)]
    public void SwiGluInBf16KeepsRoundedInputsAndWritesRoundedGradients(int count)
    {
        // An odd count takes the GPU back-end's one-element kernels, an even one its bf16-pair backward kernel (and
        // 4100, whole quads, its quad forward kernel).
        var rng = new Random(10);
        var g = Randn(rng, count, 2); var u = Randn(rng, count); var r = Randn(rng, count);
        var gr = g.Select(Bf16.Round).ToArray(); var ur = u.Select(Bf16.Round).ToArray();
        using var h = H();
        var tg = h.Input(g); var tu = h.Input(u); var tr = h.Input(r); var h16 = h.OutputBf16(count);
        var g16 = h.OutputBf16(count); var u16 = h.OutputBf16(count);
        var tgr = h.Input(gr); var tur = h.Input(ur);
        h.Commit();
        Backend.SwiGluForward(default, tg, tu, h16, g16, u16);
        Assert.That(h.ReadBf16(g16), Is.EqualTo(g.Select(Bf16.FromFloat).ToArray()));
        Assert.That(h.ReadBf16(u16), Is.EqualTo(u.Select(Bf16.FromFloat).ToArray()));
        Backend.SwiGluBackward(g16, u16, tr, g16, u16);
        Backend.SwiGluBackward(tgr, tur, tr, tgr, tur);
        var wantG = h.Read(tgr); var wantU = h.Read(tur);
        Assert.That(h.ReadBf16(g16), Is.EqualTo(wantG.Select(Bf16.FromFloat).ToArray()), "dGate");
        Assert.That(h.ReadBf16(u16), Is.EqualTo(wantU.Select(Bf16.FromFloat).ToArray()), "dUp");
        Assert.That(() => Backend.SwiGluBackward(g16, tu, tr, g16, tu), Throws.ArgumentException.With.Message.Contains("must be BF16 like"));
        Assert.That(() => Backend.SwiGluForward(default, tg, tu, h16, g16, default), Throws.ArgumentException.With.Message.Contains("go together"));
    }

    /// <summary>
    /// SwiGLU from the products' bf16 outputs: the forward pass from bf16 gate and up, and the backward pass from a bf16
    /// dh, are the fp32 passes on the same (widened) values, rounded, bit for bit; inconsistent types are refused.
    /// </summary>
    [TestCase(4099)]
    [TestCase(4100)]
    [TestCase(4104)] // whole octets: the GPU back-end's 16-byte kernels
    public void SwiGluFromBf16GateUpAndDhIsTheFp32PassRounded(int count)
    {
        var rng = new Random(11);
        ushort[] g = Randn(rng, count, 2).Select(Bf16.FromFloat).ToArray(), u = Randn(rng, count).Select(Bf16.FromFloat).ToArray();
        ushort[] r = Randn(rng, count).Select(Bf16.FromFloat).ToArray();
        float[] W(ushort[] x) => x.Select(Bf16.ToFloat).ToArray();
        using var h = H();
        var g16 = h.InputBf16(g); var u16 = h.InputBf16(u); var r16 = h.InputBf16(r);
        var gw = h.Input(W(g)); var uw = h.Input(W(u)); var rw = h.Input(W(r));
        var h16 = h.OutputBf16(count); var hf = h.Output(count); var h16b = h.OutputBf16(count); var wantH = h.Output(count); var wantH16 = h.OutputBf16(count);
        var dg16 = h.OutputBf16(count); var du16 = h.OutputBf16(count);
        h.Commit();
        Backend.SwiGluForward(default, g16, u16, h16);
        Backend.SwiGluForward(hf, g16, u16, h16b);
        Backend.SwiGluForward(wantH, gw, uw, wantH16);
        Assert.That(h.ReadBf16(h16), Is.EqualTo(h.ReadBf16(wantH16)), "h in bf16");
        Assert.That(h.Read(hf), Is.EqualTo(h.Read(wantH)), "h in fp32");
        Assert.That(h.ReadBf16(h16b), Is.EqualTo(h.ReadBf16(wantH16)), "h in bf16 beside fp32");
        Backend.SwiGluBackward(dg16, du16, r16, g16, u16);
        Backend.SwiGluBackward(gw, uw, rw, gw, uw);
        Assert.That(h.ReadBf16(dg16), Is.EqualTo(h.Read(gw).Select(Bf16.FromFloat).ToArray()), "dGate");
        Assert.That(h.ReadBf16(du16), Is.EqualTo(h.Read(uw).Select(Bf16.FromFloat).ToArray()), "dUp");
        // In place over the inputs, as the model runs it.
        Backend.SwiGluBackward(g16, u16, r16, g16, u16);
        Assert.That(h.ReadBf16(g16), Is.EqualTo(h.ReadBf16(dg16)), "dGate over gate");
        Assert.That(h.ReadBf16(u16), Is.EqualTo(h.ReadBf16(du16)), "dUp over up");
        Assert.That(() => Backend.SwiGluBackward(hf, wantH, r16, hf, wantH), Throws.ArgumentException.With.Message.Contains("BF16 with BF16 gate"));
        Assert.That(() => Backend.SwiGluForward(default, g16, u16, h16, dg16, du16), Throws.ArgumentException.With.Message.Contains("BF16 already"));
        Assert.That(() => Backend.SwiGluForward(default, g16, uw, h16), Throws.ArgumentException.With.Message.Contains("must be BF16 like"));
    }

    [TestCase(7, 3, 8, 10000.0)]
    [TestCase(5, 2, 16, 500000.0)]
    [TestCase(4, 3, 6, 10000.0)]
    [TestCase(150, 2, 8, 10000.0)]
    public void RopeRotatesHalvesAndItsInverseIsTheGradient(int n, int heads, int hd, double theta)
    {
        var rng = new Random(hd);
        int maxPos = 13;
        var (cos, sin) = Reference.RopeTables(maxPos, hd, theta);
        var x = Randn(rng, n * heads * hd); var r = Randn(rng, n * heads * hd);
        var pos = RandInt(rng, n, maxPos);
        using var h = H();
        var tx = h.Input(x); var tr = h.Input(r); var tp = h.Input(pos); var tc = h.Input(cos); var ts = h.Input(sin);
        var x16 = h.OutputBf16(n * heads * hd); var r16 = h.OutputBf16(n * heads * hd);
        var tk = h.Input(x); var k16 = h.OutputBf16(n * heads * hd);
        h.Commit();
        // writeX false: the rotation goes to the bf16 copy alone, x stays as it was.
        Backend.Rope(tk, tp, tc, ts, n, heads, hd, maxPos, inverse: false, xBf16: k16, writeX: false);
        Assert.That(h.Read(tk), Is.EqualTo(x));
        Assert.Throws<ArgumentException>(() => Backend.Rope(tk, tp, tc, ts, n, heads, hd, maxPos, inverse: false, writeX: false));
        Backend.Rope(tx, tp, tc, ts, n, heads, hd, maxPos, inverse: false, xBf16: x16);
        Assert.That(h.ReadBf16(k16), Is.EqualTo(h.ReadBf16(x16)));
        Backend.Rope(tr, tp, tc, ts, n, heads, hd, maxPos, inverse: true, xBf16: r16);
        double[] xd = D(x), cd = D(cos), sd = D(sin), rd = D(r);
        Assert.That(RelErr(h.Read(tx), Reference.Rope(xd, pos, cd, sd, n, heads, hd)), Is.LessThan(ForwardTolerance));
        var g = FiniteDifference(xd, () => Dot(Reference.Rope(xd, pos, cd, sd, n, heads, hd), rd));
        Assert.That(RelErr(h.Read(tr), g), Is.LessThan(GradientTolerance));
        // The fused bf16 copies are the rotated values rounded.
        Assert.That(h.ReadBf16(x16), Is.EqualTo(h.Read(tx).Select(Bf16.FromFloat).ToArray()));
        Assert.That(h.ReadBf16(r16), Is.EqualTo(h.Read(tr).Select(Bf16.FromFloat).ToArray()));
    }

    /// <summary>
    /// RoPE on a BF16 x (the q and k products' bf16 outputs), in place, forward and inverse: the fp32 rotation of the
    /// same (widened) values, rounded, bit for bit; a BF16 x takes no separate bf16 copy.
    /// </summary>
    [TestCase(7, 3, 8)]
    [TestCase(5, 2, 6)] // halves of 3: the GPU back-end's one-pair kernel
    [TestCase(150, 2, 16)]
    public void RopeOnBf16RotatesInPlaceAsFp32Rounded(int n, int heads, int hd)
    {
        var rng = new Random(hd + 1);
        int maxPos = 13, count = n * heads * hd;
        var (cos, sin) = Reference.RopeTables(maxPos, hd, 10000.0);
        var x16 = Randn(rng, count).Select(Bf16.FromFloat).ToArray();
        var pos = RandInt(rng, n, maxPos);
        using var h = H();
        var tx16 = h.InputBf16(x16); var tr16 = h.InputBf16(x16); var tx = h.Input(x16.Select(Bf16.ToFloat).ToArray()); var tr = h.Input(x16.Select(Bf16.ToFloat).ToArray());
        var tp = h.Input(pos); var tc = h.Input(cos); var ts = h.Input(sin); var other = h.OutputBf16(count);
        h.Commit();
        Backend.Rope(tx16, tp, tc, ts, n, heads, hd, maxPos, inverse: false);
        Backend.Rope(tr16, tp, tc, ts, n, heads, hd, maxPos, inverse: true);
        Backend.Rope(tx, tp, tc, ts, n, heads, hd, maxPos, inverse: false);
        Backend.Rope(tr, tp, tc, ts, n, heads, hd, maxPos, inverse: true);
        Assert.That(h.ReadBf16(tx16), Is.EqualTo(h.Read(tx).Select(Bf16.FromFloat).ToArray()), "forward");
        Assert.That(h.ReadBf16(tr16), Is.EqualTo(h.Read(tr).Select(Bf16.FromFloat).ToArray()), "inverse");
        Assert.That(() => Backend.Rope(tx16, tp, tc, ts, n, heads, hd, maxPos, inverse: false, xBf16: other), Throws.ArgumentException.With.Message.Contains("rotated in place"));
    }

    [TestCase(2, 7, 4, 2, 6, false)]
    [TestCase(1, 70, 2, 1, 8, false)]
    [TestCase(2, 9, 3, 3, 4, true)]
    [TestCase(1, 67, 4, 2, 4, true)]
    public void AttentionMatchesReferenceAndFiniteDifferences(int batch, int seq, int heads, int kvHeads, int hd, bool packed)
    {
        var rng = new Random(seq * 31 + heads);
        int nq = batch * seq * heads * hd, nk = batch * seq * kvHeads * hd;
        var q = Randn(rng, nq); var k = Randn(rng, nk); var v = Randn(rng, nk); var r = Randn(rng, nq);
        int[]? doc = null;
        if (packed)
        {
            doc = new int[batch * seq];
            for (int b = 0; b < batch; b++)
            {
                int start = 0;
                for (int t = 0; t < seq; t++)
                {
                    if (t > 0 && rng.Next(5) == 0) start = t;
                    doc[b * seq + t] = start;
                }
            }
        }
        float scale = 1f / MathF.Sqrt(hd);
        using var h = H();
        var tq = h.Input(q); var tk = h.Input(k); var tv = h.Input(v); var tdo = h.Input(r);
        var tdoc = doc is null ? default : h.Input(doc);
        var o = h.Output(nq); var lse = h.Output(batch * heads * seq);
        var dq = h.Output(nq); var dk = h.Output(nk); var dv = h.Output(nk);
        h.Commit();
        Backend.AttentionForward(o, lse, tq, tk, tv, tdoc, batch, seq, heads, kvHeads, hd, scale);
        Backend.AttentionBackward(dq, dk, dv, tdo, o, lse, tq, tk, tv, tdoc, batch, seq, heads, kvHeads, hd, scale);

        double[] qd = D(q), kd = D(k), vd = D(v), rd = D(r);
        var (wantO, wantLse) = Reference.Attention(qd, kd, vd, doc, batch, seq, heads, kvHeads, hd, scale);
        Assert.That(RelErr(h.Read(o), wantO), Is.LessThan(ForwardTolerance * 5));
        Assert.That(RelErr(h.Read(lse), wantLse), Is.LessThan(ForwardTolerance * 5));
        double Loss() => Dot(Reference.Attention(qd, kd, vd, doc, batch, seq, heads, kvHeads, hd, scale).O, rd);
        Assert.That(RelErr(h.Read(dq), FiniteDifference(qd, Loss)), Is.LessThan(GradientTolerance), "dq");
        Assert.That(RelErr(h.Read(dk), FiniteDifference(kd, Loss)), Is.LessThan(GradientTolerance), "dk");
        Assert.That(RelErr(h.Read(dv), FiniteDifference(vd, Loss)), Is.LessThan(GradientTolerance), "dv");
    }

    [TestCase(2, 1, 9, 12, 4, 2, 6)]    // a decode step, GQA, cache rows past the keys poisoned
    [TestCase(1, 1, 1, 3, 2, 2, 8)]     // the first position: one key
    [TestCase(3, 1, 5, 5, 3, 1, 4)]     // multi-query (one kv head), a full cache
    [TestCase(3, 7, 7, 10, 3, 1, 4)]    // a prefill: queries = keys
    [TestCase(2, 3, 11, 13, 6, 2, 4)]   // a few queries after cached keys
    [TestCase(1, 70, 70, 71, 2, 1, 8)]  // a prefill over more than one query block
    [TestCase(1, 66, 80, 83, 4, 2, 6)]  // several blocks after cached keys
    public void AttentionDecodeMatchesReference(int batch, int queries, int keys, int cacheRows, int heads, int kvHeads, int hd)
    {
        var rng = new Random(queries * 131 + keys * 7 + heads);
        int nq = batch * queries * heads * hd, nk = batch * cacheRows * kvHeads * hd, kvd = kvHeads * hd;
        var q = Randn(rng, nq); var k = Randn(rng, nk); var v = Randn(rng, nk);
        for (int b = 0; b < batch; b++)
            for (int j = keys; j < cacheRows; j++)
                for (int x = 0; x < kvd; x++)
                {
                    k[(b * cacheRows + j) * kvd + x] = float.NaN; // never written by a generator: must never be read
                    v[(b * cacheRows + j) * kvd + x] = float.NaN;
                }
        float scale = 1f / MathF.Sqrt(hd);
        using var h = H();
        var tq = h.Input(q); var tk = h.Input(k); var tv = h.Input(v); var o = h.Output(nq);
        h.Commit();
        Backend.AttentionDecode(o, tq, tk, tv, batch, queries, keys, cacheRows, heads, kvHeads, hd, scale);
        var want = DecodeReference(D(q), D(k), D(v), batch, queries, keys, cacheRows, heads, kvHeads, hd, scale);
        Assert.That(RelErr(h.Read(o), want), Is.LessThan(ForwardTolerance * 5));
    }

    [Test]
    public void AttentionDecodeEqualsAttentionForwardOnAFullPrefill()
    {
        int batch = 2, seq = 9, heads = 4, kvHeads = 2, hd = 6;
        var rng = new Random(9);
        var q = Randn(rng, batch * seq * heads * hd); var k = Randn(rng, batch * seq * kvHeads * hd); var v = Randn(rng, batch * seq * kvHeads * hd);
        using var h = H();
        var tq = h.Input(q); var tk = h.Input(k); var tv = h.Input(v);
        var o = h.Output(q.Length); var lse = h.Output(batch * heads * seq); var od = h.Output(q.Length);
        h.Commit();
        Backend.AttentionForward(o, lse, tq, tk, tv, default, batch, seq, heads, kvHeads, hd, 0.4f);
        Backend.AttentionDecode(od, tq, tk, tv, batch, seq, seq, seq, heads, kvHeads, hd, 0.4f);
        Assert.That(RelErr(h.Read(od), h.Read(o)), Is.LessThan(ForwardTolerance * 5));
    }

    [Test]
    public void AttentionDecodeRejectsInconsistentShapes()
    {
        using var h = H();
        var q = h.Output(2 * 8); var o = h.Output(2 * 8); var kc = h.Output(4 * 8); var vc = h.Output(4 * 8);
        h.Commit();
        Assert.Throws<ArgumentOutOfRangeException>(() => Backend.AttentionDecode(o, q, kc, vc, 1, 2, 1, 4, 2, 2, 4, 1f), "queries > keys");
        Assert.Throws<ArgumentOutOfRangeException>(() => Backend.AttentionDecode(o, q, kc, vc, 1, 1, 5, 4, 2, 2, 4, 1f), "keys > cache rows");
        Assert.Throws<ArgumentException>(() => Backend.AttentionDecode(o, q, kc, vc, 1, 1, 2, 4, 3, 2, 4, 1f), "heads not a multiple of kv heads");
        Assert.Throws<ArgumentException>(() => Backend.AttentionDecode(o, q, kc, vc, 2, 1, 2, 4, 2, 2, 4, 1f), "cache too small for two sequences");
        Assert.Throws<ArgumentOutOfRangeException>(() => Backend.AttentionDecode(o, q, kc, vc, 1, 0, 2, 4, 2, 2, 4, 1f), "no queries");
    }

    /// <summary>Float64 attention of the last <paramref name="queries"/> positions against a cache of <paramref name="keys"/> rows.</summary>
    private static double[] DecodeReference(double[] q, double[] k, double[] v, int batch, int queries, int keys, int cacheRows,
        int heads, int kvHeads, int hd, double scale)
    {
        var o = new double[batch * queries * heads * hd];
        int group = heads / kvHeads, past = keys - queries;
        var s = new double[keys];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < queries; i++)
                {
                    int g = h / group, limit = past + i;
                    double max = double.NegativeInfinity;
                    for (int j = 0; j <= limit; j++)
                    {
                        double dot = 0;
                        for (int x = 0; x < hd; x++)
                            dot += q[((b * queries + i) * heads + h) * hd + x] * k[((b * cacheRows + j) * kvHeads + g) * hd + x];
                        s[j] = dot * scale;
                        max = Math.Max(max, s[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j <= limit; j++) sum += Math.Exp(s[j] - max);
                    for (int x = 0; x < hd; x++)
                    {
                        double acc = 0;
                        for (int j = 0; j <= limit; j++) acc += Math.Exp(s[j] - max) / sum * v[((b * cacheRows + j) * kvHeads + g) * hd + x];
                        o[((b * queries + i) * heads + h) * hd + x] = acc;
                    }
                }
        return o;
    }

    [TestCase(1)]
    [TestCase(37)]
    [TestCase(5000)]
    public void SwiGluMatchesReferenceAndFiniteDifferencesInPlace(int count)
    {
        var rng = new Random(count);
        var g = Randn(rng, count, 2); var u = Randn(rng, count); var r = Randn(rng, count);
        using var h = H();
        var tg = h.Input(g); var tu = h.Input(u); var tr = h.Input(r); var hOut = h.Output(count);
        h.Commit();
        Backend.SwiGluForward(hOut, tg, tu);
        Backend.SwiGluBackward(tg, tu, tr, tg, tu); // in place, as the model does
        double[] gd = D(g), ud = D(u), rd = D(r);
        Assert.That(RelErr(h.Read(hOut), Reference.SwiGlu(gd, ud)), Is.LessThan(ForwardTolerance));
        double Loss() => Dot(Reference.SwiGlu(gd, ud), rd);
        Assert.That(RelErr(h.Read(tg), FiniteDifference(gd, Loss)), Is.LessThan(GradientTolerance));
        Assert.That(RelErr(h.Read(tu), FiniteDifference(ud, Loss)), Is.LessThan(GradientTolerance));
    }

    [TestCase(false, false)]
    [TestCase(false, true)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void MatMulAllTransposesAndAccumulation(bool transA, bool transB)
    {
        int m = 19, n = 23, k = 37;
        var rng = new Random(m + (transA ? 1 : 0) + (transB ? 2 : 0));
        var a = Randn(rng, m * k); var b = Randn(rng, k * n); var c0 = Randn(rng, m * n);
        using var h = H();
        var ta = h.Input(a); var tb = h.Input(b); var c = h.Output(m * n); var cacc = h.Input(c0);
        h.Commit();
        Backend.MatMul(c, ta, tb, m, n, k, transA, transB, accumulate: false);
        Backend.MatMul(cacc, ta, tb, m, n, k, transA, transB, accumulate: true);
        var want = Reference.MatMul(D(a), D(b), m, n, k, transA, transB);
        Assert.That(RelErr(h.Read(c), want), Is.LessThan(ForwardTolerance * 5));
        var wantAcc = want.Select((x, i) => x + c0[i]).ToArray();
        Assert.That(RelErr(h.Read(cacc), wantAcc), Is.LessThan(ForwardTolerance * 5));
    }

    [TestCase(false, false)]
    [TestCase(false, true)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void MatMulOfBf16OperandsIsExactProductsSummedInFloat(bool transA, bool transB)
    {
        int m = 21, n = 19, k = 45;
        var rng = new Random(100 + (transA ? 1 : 0) + (transB ? 2 : 0));
        var a = Randn(rng, m * k).Select(Bf16.FromFloat).ToArray();
        var b = Randn(rng, k * n).Select(Bf16.FromFloat).ToArray();
        var c0 = Randn(rng, m * n);
        using var h = H();
        var ta = h.InputBf16(a); var tb = h.InputBf16(b); var c = h.Output(m * n); var cacc = h.Input(c0);
        var tf = h.Output(k * n);
        h.Commit();
        Backend.MatMul(c, ta, tb, m, n, k, transA, transB, accumulate: false);
        Backend.MatMul(cacc, ta, tb, m, n, k, transA, transB, accumulate: true);
        var want = Reference.MatMul(a.Select(x => (double)Bf16.ToFloat(x)).ToArray(), b.Select(x => (double)Bf16.ToFloat(x)).ToArray(), m, n, k, transA, transB);
        Assert.That(RelErr(h.Read(c), want), Is.LessThan(ForwardTolerance * 5));
        Assert.That(RelErr(h.Read(cacc), want.Select((x, i) => x + c0[i]).ToArray()), Is.LessThan(ForwardTolerance * 5));
        Assert.Throws<ArgumentException>(() => Backend.MatMul(c, ta, tf, m, n, k, transA, transB, false), "mixed operand types");
    }

    /// <summary>
    /// A BF16 output holds the F32 output of the same product rounded to nearest even, bit for bit, for fp32 and bf16
    /// operands and every transpose form; it is never accumulated into, and other output types are refused.
    /// </summary>
    [TestCase(false, false, false)]
    [TestCase(false, true, true)]
    [TestCase(true, false, true)]
    [TestCase(true, true, false)]
    [TestCase(false, true, false)]
    public void MatMulWritesABf16OutputAsTheFp32OneRounded(bool transA, bool transB, bool bf16Operands)
    {
        int m = 23, n = 18, k = 41;
        var rng = new Random(200 + (transA ? 1 : 0) + (transB ? 2 : 0));
        var a = Randn(rng, m * k); var b = Randn(rng, k * n);
        using var h = H();
        var (ta, tb) = bf16Operands
            ? (h.InputBf16(a.Select(Bf16.FromFloat).ToArray()), h.InputBf16(b.Select(Bf16.FromFloat).ToArray()))
            : (h.Input(a), h.Input(b));
        var c = h.Output(m * n); var c16 = h.OutputBf16(m * n); var ids = h.Input(new int[m * n]);
        h.Commit();
        Backend.MatMul(c, ta, tb, m, n, k, transA, transB, accumulate: false);
        Backend.MatMul(c16, ta, tb, m, n, k, transA, transB, accumulate: false);
        Assert.That(h.ReadBf16(c16), Is.EqualTo(h.Read(c).Select(Bf16.FromFloat).ToArray()));
        var e = Assert.Throws<ArgumentException>(() => Backend.MatMul(c16, ta, tb, m, n, k, transA, transB, accumulate: true))!;
        Assert.That(e.Message, Does.Contain("never accumulated"));
        Assert.Throws<ArgumentException>(() => Backend.MatMul(ids, ta, tb, m, n, k, transA, transB, accumulate: false), "an I32 output");
    }

    /// <summary>
    /// A summed matmul equals its products against float64 (parts of different k, bf16 and fp32 operands, with and
    /// without accumulation), and refuses a BF16 output, mixed operand types and no parts.
    /// </summary>
    [TestCase(false, false, true)]
    [TestCase(false, true, false)]
    [TestCase(true, false, true)]
    public void MatMulSumAddsItsProducts(bool transA, bool transB, bool bf16)
    {
        int m = 17, n = 22;
        int[] ks = [13, 30, 8];
        var rng = new Random(300 + (transA ? 1 : 0) + (transB ? 2 : 0));
        var c0 = Randn(rng, m * n);
        using var h = H();
        var parts = new List<(MatMulPart Part, double[] A, double[] B)>();
        foreach (int k in ks)
        {
            var a = Randn(rng, m * k); var b = Randn(rng, k * n);
            if (bf16)
            {
                var (a16, b16) = (a.Select(Bf16.FromFloat).ToArray(), b.Select(Bf16.FromFloat).ToArray());
                parts.Add((new MatMulPart(h.InputBf16(a16), h.InputBf16(b16), k), a16.Select(x => (double)Bf16.ToFloat(x)).ToArray(),
                    b16.Select(x => (double)Bf16.ToFloat(x)).ToArray()));
            }
            else parts.Add((new MatMulPart(h.Input(a), h.Input(b), k), D(a), D(b)));
        }
        var c = h.Output(m * n); var cacc = h.Input(c0); var c16 = h.OutputBf16(m * n);
        var otherType = bf16 ? h.Input(Randn(rng, m * n)) : h.InputBf16(Randn(rng, m * n).Select(Bf16.FromFloat).ToArray());
        h.Commit();
        var list = parts.Select(p => p.Part).ToArray();
        Backend.MatMulSum(c, m, n, transA, transB, accumulate: false, list);
        Backend.MatMulSum(cacc, m, n, transA, transB, accumulate: true, list);
        var want = new double[m * n];
        foreach (var (part, a, b) in parts)
        {
            var product = Reference.MatMul(a, b, m, n, part.K, transA, transB);
            for (int i = 0; i < want.Length; i++) want[i] += product[i];
        }
        Assert.That(RelErr(h.Read(c), want), Is.LessThan(ForwardTolerance * 5));
        Assert.That(RelErr(h.Read(cacc), want.Select((x, i) => x + c0[i]).ToArray()), Is.LessThan(ForwardTolerance * 5));
        Assert.Throws<ArgumentException>(() => Backend.MatMulSum(c16, m, n, transA, transB, false, list), "a BF16 output");
        Assert.Throws<ArgumentException>(() => Backend.MatMulSum(c, m, n, transA, transB, false, list[0], new MatMulPart(otherType, list[1].B, 1)), "mixed operand types");
        Assert.Throws<ArgumentException>(() => Backend.MatMulSum(c, m, n, transA, transB, false), "no parts");
    }

    /// <summary>
    /// The SwiGLU projections in one call write what the two bf16 products and the SwiGLU forward pass write, bit for
    /// bit, and refuse operands that are not BF16.
    /// </summary>
    [TestCase(19, 24, 37)]
    [TestCase(5, 8, 64)]
    public void MatMulSwiGluIsTheProductsAndTheSwiGluPass(int n, int f, int d)
    {
        var rng = new Random(400 + n);
        ushort[] R(int count) => Randn(rng, count).Select(Bf16.FromFloat).ToArray();
        using var h = H();
        var x = h.InputBf16(R(n * d)); var wg = h.InputBf16(R(f * d)); var wu = h.InputBf16(R(f * d));
        var gate = h.OutputBf16(n * f); var up = h.OutputBf16(n * f); var hh = h.OutputBf16(n * f);
        var gate2 = h.OutputBf16(n * f); var up2 = h.OutputBf16(n * f); var hh2 = h.OutputBf16(n * f); var f32 = h.Output(n * f);
        h.Commit();
        Backend.MatMulSwiGlu(hh, gate, up, x, wg, wu, n, f, d);
        Backend.MatMul(gate2, x, wg, n, f, d, transA: false, transB: true, accumulate: false);
        Backend.MatMul(up2, x, wu, n, f, d, transA: false, transB: true, accumulate: false);
        Backend.SwiGluForward(default, gate2, up2, hh2);
        Assert.That(h.ReadBf16(gate), Is.EqualTo(h.ReadBf16(gate2)));
        Assert.That(h.ReadBf16(up), Is.EqualTo(h.ReadBf16(up2)));
        Assert.That(h.ReadBf16(hh), Is.EqualTo(h.ReadBf16(hh2)));
        Assert.Throws<ArgumentException>(() => Backend.MatMulSwiGlu(f32, gate, up, x, wg, wu, n, f, d), "an F32 h");
    }

    /// <summary>
    /// The q or k projection with RoPE in one call writes what the bf16 product and the rotation write, bit for bit,
    /// and refuses n that is not heads · headDim.
    /// </summary>
    [TestCase(13, 2, 8, 20)]
    [TestCase(9, 3, 64, 33)]
    public void MatMulRopeIsTheProductAndTheRotation(int m, int heads, int headDim, int k)
    {
        var rng = new Random(500 + m);
        int n = heads * headDim, maxPositions = 11;
        ushort[] R(int count) => Randn(rng, count).Select(Bf16.FromFloat).ToArray();
        var positions = Enumerable.Range(0, m).Select(_ => rng.Next(maxPositions)).ToArray();
        using var h = H();
        var a = h.InputBf16(R(m * k)); var b = h.InputBf16(R(n * k)); var pos = h.Input(positions);
        var cos = h.Input(Randn(rng, maxPositions * headDim / 2)); var sin = h.Input(Randn(rng, maxPositions * headDim / 2));
        var c = h.OutputBf16(m * n); var c2 = h.OutputBf16(m * n);
        h.Commit();
        Backend.MatMulRope(c, a, b, m, n, k, pos, cos, sin, heads, headDim, maxPositions);
        Backend.MatMul(c2, a, b, m, n, k, transA: false, transB: true, accumulate: false);
        Backend.Rope(c2, pos, cos, sin, m, heads, headDim, maxPositions, inverse: false);
        Assert.That(h.ReadBf16(c), Is.EqualTo(h.ReadBf16(c2)));
        Assert.Throws<ArgumentException>(() => Backend.MatMulRope(c, a, b, m, n, k, pos, cos, sin, heads + 1, headDim, maxPositions), "n ≠ heads · headDim");
    }

    [TestCase(70_001)]
    [TestCase(70_000)]
    public void ToBf16RoundsToNearestEvenAndKeepsSpecialValues(int random)
    {
        // 70,013 elements take the one-per-thread kernel of the GPU back-end, 70,012 (whole quads) the four-per-thread one.
        var rng = new Random(5);
        var x = Randn(rng, random, 100).ToList();
        // ties (even and odd mantissa), overflow to infinity, infinities, NaNs of both signs, zeros, a subnormal
        x.AddRange([BitConverter.UInt32BitsToSingle(0x3F80_8000u), BitConverter.UInt32BitsToSingle(0x3F81_8000u),
            3.4e38f, -3.4e38f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, -float.NaN,
            BitConverter.UInt32BitsToSingle(0x7F80_0001u), 0f, -0f, 1e-40f]);
        var data = x.ToArray();
        using var h = H();
        var src = h.Input(data); var dst = h.OutputBf16(data.Length);
        h.Commit();
        Backend.ToBf16(dst, src);
        var got = h.ReadBf16(dst);
        var want = data.Select(Bf16.FromFloat).ToArray();
        Assert.That(got, Is.EqualTo(want));
        Assert.That(want[^12], Is.EqualTo((ushort)0x3F80), "a tie rounds to the even mantissa");
        Assert.That(want[^11], Is.EqualTo((ushort)0x3F82), "a tie rounds to the even mantissa (up)");
        Assert.That(want[^10], Is.EqualTo((ushort)0x7F80), "beyond bf16's range: infinity");
        Assert.That(float.IsNaN(Bf16.ToFloat(want[^4])), "a NaN with only low mantissa bits stays a NaN");
    }

    [TestCase(6, 10)]
    [TestCase(13, 1000)]
    [TestCase(5, 2600)]
    public void CrossEntropyLossAndInPlaceGradient(int n, int vocab)
    {
        var rng = new Random(vocab);
        var logits = Randn(rng, n * vocab, 3);
        var targets = RandInt(rng, n, vocab);
        targets[1] = -100;
        var scale = Randn(rng, n);
        using var h = H();
        var tl = h.Input(logits); var tl2 = h.Input(logits); var tt = h.Input(targets); var ts = h.Input(scale);
        var loss = h.Output(n); var loss2 = h.Output(n);
        var tl3 = h.Input(logits); var loss3 = h.Output(n); var g16 = h.OutputBf16(n * vocab);
        h.Commit();
        Backend.CrossEntropy(tl, tt, default, loss, n, vocab, writeGradient: false);
        Backend.CrossEntropy(tl2, tt, ts, loss2, n, vocab, writeGradient: true);
        Backend.CrossEntropy(tl3, tt, ts, loss3, n, vocab, writeGradient: true, gradBf16: g16);
        var ld = D(logits);
        var want = Reference.CrossEntropy(ld, targets, n, vocab);
        Assert.That(RelErr(h.Read(loss), want), Is.LessThan(ForwardTolerance));
        Assert.That(RelErr(h.Read(loss2), want), Is.LessThan(ForwardTolerance));
        Assert.That(h.Read(tl), Is.EqualTo(logits), "without a gradient the logits stay as they were");
        var g = FiniteDifference(ld, () =>
        {
            var l = Reference.CrossEntropy(ld, targets, n, vocab);
            double s = 0;
            for (int i = 0; i < n; i++) s += l[i] * scale[i];
            return s;
        });
        Assert.That(RelErr(h.Read(tl2), g), Is.LessThan(GradientTolerance));
        // The bf16 gradient: the in-place gradient rounded (the same float arithmetic), and the logits untouched.
        Assert.That(h.Read(loss3), Is.EqualTo(h.Read(loss2)));
        Assert.That(h.Read(tl3), Is.EqualTo(logits), "with a bf16 gradient the logits stay as they were");
        Assert.That(h.ReadBf16(g16), Is.EqualTo(h.Read(tl2).Select(Bf16.FromFloat).ToArray()));
    }

    /// <summary>
    /// Cross-entropy over BF16 logits (the head product's bf16 output): the losses of the fp32 pass over the same
    /// (widened) logits, and the gradient, rounded, in the logits' place; ignored rows zero. A gradBf16 beside BF16
    /// logits is refused.
    /// </summary>
    [TestCase(6, 10)]
    [TestCase(5, 2600)] // whole quads: the GPU back-end's quad kernel
    [TestCase(4, 1001)]
    public void CrossEntropyOnBf16LogitsWritesTheRoundedGradientInPlace(int n, int vocab)
    {
        var rng = new Random(vocab + 1);
        var logits16 = Randn(rng, n * vocab, 3).Select(Bf16.FromFloat).ToArray();
        var widened = logits16.Select(Bf16.ToFloat).ToArray();
        var targets = RandInt(rng, n, vocab);
        targets[1] = -100;
        var scale = Randn(rng, n);
        using var h = H();
        var t16 = h.InputBf16(logits16); var tl16 = h.InputBf16(logits16); var tf = h.Input(widened); var tt = h.Input(targets); var ts = h.Input(scale);
        var loss = h.Output(n); var loss16 = h.Output(n); var lossGrad16 = h.Output(n); var other = h.OutputBf16(n * vocab);
        h.Commit();
        Backend.CrossEntropy(t16, tt, default, loss16, n, vocab, writeGradient: false);
        Assert.That(h.ReadBf16(t16), Is.EqualTo(logits16), "without a gradient the logits stay as they were");
        Backend.CrossEntropy(tl16, tt, ts, lossGrad16, n, vocab, writeGradient: true);
        Backend.CrossEntropy(tf, tt, ts, loss, n, vocab, writeGradient: true);
        var want = h.Read(loss);
        Assert.That(RelErr(h.Read(loss16), D(want)), Is.LessThan(1e-6));
        Assert.That(RelErr(h.Read(lossGrad16), D(want)), Is.LessThan(1e-6));
        var grad = h.ReadBf16(tl16).Select(Bf16.ToFloat).ToArray();
        Assert.That(RelErr(grad, D(h.Read(tf))), Is.LessThan(4e-3));
        Assert.That(grad.Skip(vocab).Take(vocab), Is.All.EqualTo(0f), "an ignored row's gradient is zero");
        Assert.That(() => Backend.CrossEntropy(t16, tt, ts, loss, n, vocab, writeGradient: true, gradBf16: other),
            Throws.ArgumentException.With.Message.Contains("written in place"));
    }

    [Test]
    public void AdamWMatchesFloat64ReferenceWithLargeDecayOverSegments()
    {
        // Two segments (decay, no decay) with a gap between them that must stay untouched.
        int count = 1000, steps = 4;
        int[] seg = [0, 600, 1, 650, 350, 0];
        var rng = new Random(7);
        var p0 = Randn(rng, count); var grads = new float[steps][];
        for (int s = 0; s < steps; s++) grads[s] = Randn(rng, count, 0.1 * (s + 1));
        float lr = 0.01f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 5f;
        using var h = H();
        var p = h.Input(p0); var g = h.Output(count); var m = h.Input(new float[count]); var v = h.Input(new float[count]);
        var ts = h.Input(seg); var gs = h.Input(new[] { 0.5f });
        var shadow = h.OutputBf16(count);
        h.Commit();
        double[] pd = D(p0), md = new double[count], vd = new double[count];
        for (int s = 1; s <= steps; s++)
        {
            Backend.Upload<float>(g, grads[s - 1]);
            Backend.AdamW(p, g, m, v, ts, 2, new AdamWStep(lr, b1, b2, eps, wd, s), gs, paramBf16: s == steps ? shadow : default);
            double bc1 = 1 - Math.Pow(b1, s), bc2 = 1 - Math.Pow(b2, s);
            for (int i = 0; i < count; i++)
            {
                bool inDecay = i < 600, inPlain = i >= 650;
                if (!inDecay && !inPlain) continue;
                double gi = grads[s - 1][i] * 0.5;
                if (inDecay) pd[i] *= 1 - (double)lr * wd;
                md[i] = b1 * md[i] + (1 - b1) * gi;
                vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
                pd[i] -= lr / bc1 * md[i] / (Math.Sqrt(vd[i]) / Math.Sqrt(bc2) + eps);
            }
        }
        var got = h.Read(p);
        Assert.That(RelErr(got, pd), Is.LessThan(1e-6));
        Assert.That(got.AsSpan(600, 50).ToArray(), Is.EqualTo(p0.AsSpan(600, 50).ToArray()), "outside every segment: untouched");
        Assert.That(RelErr(h.Read(m), md), Is.LessThan(1e-6));
        Assert.That(RelErr(h.Read(v), vd), Is.LessThan(1e-6));
        var sh = h.ReadBf16(shadow);
        for (int i = 0; i < count; i++)
        {
            if (i >= 600 && i < 650) Assert.That(sh[i], Is.EqualTo((ushort)0x7FC0), $"shadow element {i} outside every segment: untouched");
            else Assert.That(sh[i], Is.EqualTo(Bf16.FromFloat(got[i])), $"shadow element {i}: the new value rounded to bf16");
        }
    }

    [Test]
    public void ElementwiseAndReductions()
    {
        var rng = new Random(3);
        int n = 100_003;
        var a = Randn(rng, n); var b = Randn(rng, n);
        using var h = H();
        var ta = h.Input(a); var tb = h.Input(b); var r = h.Output(2); var copy = h.Output(n); var filled = h.Output(n);
        var quads = h.Input(a.Take(100_000).ToArray());
        h.Commit();
        // Whole quads (the GPU back-end's quad kernel) give the same sums as one element at a time.
        Backend.AddInPlace(quads, tb.Slice(0, 100_000));
        Assert.That(h.Read(quads), Is.EqualTo(a.Take(100_000).Select((x, i) => x + b[i]).ToArray()));
        Backend.SumSquares(r.Slice(0, 1), ta);
        Backend.Dot(r.Slice(1, 1), ta, tb, accumulate: false);
        Backend.Dot(r.Slice(1, 1), ta, tb, accumulate: true);
        Backend.Copy(copy, ta);
        Backend.AddInPlace(copy, tb);
        Backend.Scale(copy, -2f);
        Backend.Fill(filled, 1.5f);
        double ss = 0, dot = 0;
        for (int i = 0; i < n; i++) { ss += (double)a[i] * a[i]; dot += (double)a[i] * b[i]; }
        var res = h.Read(r);
        Assert.That(res[0], Is.EqualTo(ss).Within(1e-5).Percent);
        Assert.That(res[1], Is.EqualTo(2 * dot).Within(1e-3).Percent);
        Assert.That(RelErr(h.Read(copy), a.Select((x, i) => -2.0 * ((double)x + b[i])).ToArray()), Is.LessThan(1e-7));
        Assert.That(h.Read(filled), Is.All.EqualTo(1.5f));
    }

    /// <summary>
    /// A dot product of 2^24 elements is accurate to 2e-6 against float64 (the self-test's case: b correlates with a).
    /// A single fp32 pass drifted by 1.4e-5, and the self-test then blamed the GPU for the CPU reference's error.
    /// </summary>
    [Test]
    public void LongDotProductStaysAccurate()
    {
        var rng = new Random(11);
        int n = 1 << 24;
        var a = Randn(rng, n); var b = Randn(rng, n);
        for (int i = 0; i < n; i++) b[i] = 0.25f * b[i] + 0.5f * a[i];
        using var h = H();
        var ta = h.Input(a); var tb = h.Input(b); var r = h.Output(1);
        h.Commit();
        Backend.Dot(r, ta, tb, accumulate: false);
        double dot = 0;
        for (int i = 0; i < n; i++) dot += (double)a[i] * b[i];
        Assert.That(Math.Abs(h.Read(r)[0] - dot) / Math.Abs(dot), Is.LessThan(2e-6));
    }

    private static double[] Minus(float[] a, float[] b) => a.Select((x, i) => (double)x - b[i]).ToArray();
}
