using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Runtime.Diagnostics;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using static HftRuntime.Tests.Support.Numerics;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// Every ILGPU kernel against the CPU back-end, run by ILGPU's CPU accelerator: the small self-test cases (odd sizes
/// that are no multiple of any tile; GEMM 1×1×1, 17×33×65, 65×31×129 and 130×257×40 in all transpose forms with
/// and without accumulation, split k; attention with 1, 5, 33, 37 and 70 tokens, GQA, packed documents, head
/// dimensions 6 to 128), outputs NaN-poisoned, relative-norm thresholds. Plus what only a GPU kernel must do: not
/// fault on out-of-range ids, labels, positions, document starts and segments, and give the same bits twice.
/// </summary>
[TestFixture]
public sealed class IlgpuParityTests : IlgpuFixture
{
    private static IEnumerable<string> SmallCases() => SelfTest.Cases(large: false).Select(c => c.Name);

    /// <summary>One self-test case: every checked output within its tolerance of the CPU back-end.</summary>
    [TestCaseSource(nameof(SmallCases))]
    public void MatchesCpuBackend(string name)
    {
        var c = SelfTest.Cases(large: false).Single(x => x.Name == name);
        var rows = c.Run(Gpu, Cpu, timings: false);
        Assert.That(rows, Is.Not.Empty);
        foreach (var r in rows)
            Assert.That(r.RelativeError, Is.LessThanOrEqualTo(r.Tolerance), $"{r.Operation} {r.Shape}: relative error {r.RelativeError:e2} > {r.Tolerance:e0}");
    }

    /// <summary>The case list covers every operation family of the back-end.</summary>
    [Test]
    public void CasesCoverEveryOperation()
    {
        var ops = SelfTest.Cases(large: false).Select(c => c.Operation).ToHashSet();
        Assert.That(ops, Is.SupersetOf(new[] { "elementwise", "reductions", "embedding", "rmsnorm", "rope", "attention", "swiglu", "matmul", "cross-entropy", "adamw" }));
        Assert.That(SelfTest.Cases(large: false).Select(c => c.Name), Is.Unique);
        Assert.That(SelfTest.Cases(large: true).Count, Is.GreaterThan(SelfTest.Cases(large: false).Count));
    }

    /// <summary>
    /// Uploads and downloads of ordinary (movable) arrays while another thread churns the heap and forces
    /// compacting collections: the host memory must be pinned during each copy, or bytes go missing.
    /// </summary>
    [Test]
    public void TransfersOfMovableArraysSurviveGarbageCollections()
    {
        using var arena = Gpu.CreateArena();
        var t = arena.Reserve("t", 1024);
        arena.Commit();
        using var stop = new CancellationTokenSource();
        var churn = Task.Run(() =>
        {
            var keep = new List<byte[]>();
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                keep.Add(new byte[1000 + i % 5000]);
                if (keep.Count > 2000) keep.RemoveRange(0, 1000);
                if (i % 5000 == 0) GC.Collect(0, GCCollectionMode.Forced, blocking: true);
            }
        });
        int bad = 0;
        try
        {
            for (int i = 0; i < 2000; i++)
            {
                var data = new float[1024];
                for (int j = 0; j < data.Length; j++) data[j] = i + j;
                Gpu.Upload<float>(t, data);
                var back = new float[1024];
                Gpu.Download<float>(t, back);
                if (!back.AsSpan().SequenceEqual(data)) bad++;
            }
        }
        finally
        {
            stop.Cancel();
            churn.Wait();
        }
        Assert.That(bad, Is.Zero, "round trips that lost bytes");
    }

    /// <summary>An id outside the vocabulary gives a zero row forward and adds nothing backward.</summary>
    [Test]
    public void EmbeddingSkipsOutOfRangeIds()
    {
        int n = 4, dim = 5, vocab = 3;
        var rng = new Random(1);
        var table = Randn(rng, vocab * dim); var dy = Randn(rng, n * dim);
        int[] ids = [1, -1, 3, 2];
        using var h = new OpHarness(Gpu);
        var tt = h.Input(table); var ti = h.Input(ids); var y = h.Output(n * dim); var tdy = h.Input(dy); var dTable = h.Input(new float[vocab * dim]);
        h.Commit();
        Gpu.EmbeddingForward(y, ti, tt, n, dim, vocab);
        Gpu.EmbeddingBackward(dTable, ti, tdy, n, dim, vocab);
        var got = h.Read(y); var gotD = h.Read(dTable);
        for (int j = 0; j < dim; j++)
        {
            Assert.That(got[0 * dim + j], Is.EqualTo(table[1 * dim + j]));
            Assert.That(got[1 * dim + j], Is.Zero);
            Assert.That(got[2 * dim + j], Is.Zero);
            Assert.That(got[3 * dim + j], Is.EqualTo(table[2 * dim + j]));
            Assert.That(gotD[0 * dim + j], Is.Zero);
            Assert.That(gotD[1 * dim + j], Is.EqualTo(dy[0 * dim + j]));
            Assert.That(gotD[2 * dim + j], Is.EqualTo(dy[3 * dim + j]));
        }
    }

    /// <summary>A label outside [0, vocab) is an ignored row: loss 0 and a zero gradient; the other rows are unaffected.</summary>
    [TestCase(9)]
    [TestCase(12)] // whole quads: the quad kernel
    public void CrossEntropyTreatsOutOfRangeTargetsAsIgnored(int vocab)
    {
        int n = 4;
        var rng = new Random(2);
        var logits = Randn(rng, n * vocab);
        int[] targets = [3, vocab, -7, 0];
        int[] cleaned = [3, Backend.IgnoreIndex, Backend.IgnoreIndex, 0];
        var scale = new float[] { 1f, 1f, 1f, 0.5f };
        using var h = new OpHarness(Gpu);
        var tl = h.Input(logits); var tt = h.Input(targets); var ts = h.Input(scale); var loss = h.Output(n);
        h.Commit();
        Gpu.CrossEntropy(tl, tt, ts, loss, n, vocab, writeGradient: true);
        using var r = new OpHarness(Cpu);
        var rl = r.Input(logits); var rt = r.Input(cleaned); var rs = r.Input(scale); var rloss = r.Output(n);
        r.Commit();
        Cpu.CrossEntropy(rl, rt, rs, rloss, n, vocab, writeGradient: true);
        Assert.That(RelErr(h.Read(loss), r.Read(rloss)), Is.LessThan(1e-6));
        Assert.That(RelErr(h.Read(tl), r.Read(rl)), Is.LessThan(1e-6));
        Assert.That(h.Read(loss)[1], Is.Zero);
    }

    /// <summary>
    /// A position outside the table leaves its row as it was (one pair per thread at head dimension 4, four at 8; 300
    /// rows give the four-pair kernel's two-quad steps), rows with positions inside it are rotated.
    /// </summary>
    [TestCase(4, 3)]
    [TestCase(8, 3)]
    [TestCase(8, 300)]
    public void RopeLeavesRowsWithOutOfRangePositionsUnchanged(int hd, int n)
    {
        int heads = 2, maxPos = 5;
        var (cos, sin) = Reference.RopeTables(maxPos, hd, 10000);
        var x = Randn(new Random(3), n * heads * hd);
        var pos = Enumerable.Range(0, n).Select(i => (i % 3) switch { 0 => 2, 1 => 5, _ => -1 }).ToArray();
        using var h = new OpHarness(Gpu);
        var tx = h.Input(x); var tp = h.Input(pos); var tc = h.Input(cos); var ts = h.Input(sin);
        h.Commit();
        Gpu.Rope(tx, tp, tc, ts, n, heads, hd, maxPos, inverse: false);
        var got = h.Read(tx);
        var want = Reference.Rope(D(x), pos.Select(p => p is >= 0 and < 5 ? p : 0).ToArray(), D(cos), D(sin), n, heads, hd);
        int row = heads * hd;
        for (int i = 0; i < n; i++)
        {
            if (pos[i] is >= 0 and < 5)
                Assert.That(RelErr(got.AsSpan(i * row, row), want.AsSpan(i * row, row)), Is.LessThan(1e-6), $"row {i} rotated");
            else
                Assert.That(got.AsSpan(i * row, row).ToArray(), Is.EqualTo(x.AsSpan(i * row, row).ToArray()), $"row {i} unchanged");
        }
    }

    /// <summary>Document starts outside [0, t] are clamped into it instead of faulting.</summary>
    [Test]
    public void AttentionClampsOutOfRangeDocumentStarts()
    {
        int seq = 6, heads = 2, hd = 4;
        var rng = new Random(4);
        var q = Randn(rng, seq * heads * hd); var k = Randn(rng, seq * heads * hd); var v = Randn(rng, seq * heads * hd);
        int[] doc = [0, -3, 9, 2, 2, 100];
        int[] clamped = [0, 0, 2, 2, 2, 5];
        float[] Run(Backend be, int[] starts)
        {
            using var h = new OpHarness(be);
            var tq = h.Input(q); var tk = h.Input(k); var tv = h.Input(v); var td = h.Input(starts);
            var o = h.Output(seq * heads * hd); var lse = h.Output(heads * seq);
            h.Commit();
            be.AttentionForward(o, lse, tq, tk, tv, td, 1, seq, heads, heads, hd, 0.5f);
            return h.Read(o);
        }
        Assert.That(RelErr(Run(Gpu, doc), Run(Cpu, clamped)), Is.LessThan(1e-6));
    }

    /// <summary>A segment reaching outside the block is clipped to it; nothing outside is written.</summary>
    [Test]
    public void AdamWClipsSegmentsToTheBlock()
    {
        int count = 100;
        var rng = new Random(5);
        var p = Randn(rng, count); var g = Randn(rng, count);
        int[] segments = [-10, 30, 1, 90, 50, 0];
        var step = new AdamWStep(0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 1);
        using var h = new OpHarness(Gpu);
        var tp = h.Input(p); var tg = h.Input(g); var tm = h.Input(new float[count]); var tv = h.Input(new float[count]); var ts = h.Input(segments);
        h.Commit();
        Gpu.AdamW(tp, tg, tm, tv, ts, 2, step, default);
        using var r = new OpHarness(Cpu);
        var rp = r.Input(p); var rg = r.Input(g); var rm = r.Input(new float[count]); var rv = r.Input(new float[count]); var rs = r.Input(new[] { 0, 20, 1, 90, 10, 0 });
        r.Commit();
        Cpu.AdamW(rp, rg, rm, rv, rs, 2, step, default);
        Assert.That(h.Read(tp), Is.EqualTo(r.Read(rp)));
        Assert.That(h.Read(tp).AsSpan(20, 70).ToArray(), Is.EqualTo(p.AsSpan(20, 70).ToArray()));
    }

    /// <summary>
    /// AdamW goes in 16-byte quads between a segment's ragged ends: segments of 1 to 13 elements at every offset mod 4,
    /// with gaps (left untouched), decay on some, a bf16 copy, are bit-identical to the CPU back-end; and the PTX loads
    /// and stores in quads.
    /// </summary>
    [Test]
    public void AdamWOverRaggedSegmentsIsBitIdenticalToTheCpuBackend()
    {
        var rng = new Random(21);
        var segments = new List<int>();
        int pos = 0;
        for (int s = 0; s < 40; s++)
        {
            pos += rng.Next(3); // gaps of 0 to 2 elements
            int len = 1 + rng.Next(13);
            segments.AddRange([pos, len, s % 3 == 0 ? 1 : 0]);
            pos += len;
        }
        segments.AddRange([pos + 1, 1000, 1]); // a long segment too
        int count = pos + 1 + 1000 + 3;
        var p = Randn(rng, count); var g = Randn(rng, count); var m = Randn(rng, count); var v = Randn(rng, count).Select(Math.Abs).ToArray();
        var step = new AdamWStep(0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
        (float[], float[], float[], ushort[]) Run(Backend be)
        {
            using var h = new OpHarness(be);
            var tp = h.Input(p); var tg = h.Input(g); var tm = h.Input(m); var tv = h.Input(v); var ts = h.Input(segments.ToArray());
            var t16 = h.InputBf16(new ushort[count]);
            h.Commit();
            be.AdamW(tp, tg, tm, tv, ts, segments.Count / 3, step, default, paramBf16: t16);
            return (h.Read(tp), h.Read(tm), h.Read(tv), h.ReadBf16(t16));
        }
        var (gp, gm, gv, g16) = Run(Gpu);
        var (cp, cm, cv, c16) = Run(Cpu);
        Assert.That(gp, Is.EqualTo(cp));
        Assert.That(gm, Is.EqualTo(cm));
        Assert.That(gv, Is.EqualTo(cv));
        Assert.That(g16, Is.EqualTo(c16));
        Assert.That(gp.Where((x, i) => x != p[i]).Count(), Is.GreaterThan(1000), "segments were updated");

        string ptx = Bf16Gemm.CompilePtx(nameof(IlgpuBackend.AdamWKernel), ILGPU.OptimizationLevel.O2);
        // Two quads per step and one at the end: 3 × 4 loads of p, g, m, v and 3 × 3 stores of p, m, v.
        Assert.That(System.Text.RegularExpressions.Regex.Matches(ptx, @"\bld\.global\.v4\.f32\b").Count, Is.EqualTo(12), "p, g, m, v in quads");
        Assert.That(System.Text.RegularExpressions.Regex.Matches(ptx, @"\bst\.global\.v4\.f32\b").Count, Is.EqualTo(9), "p, m, v in quads");
    }

    /// <summary>Running the same GEMM (split and not), reduction and RMSNorm weight gradient twice gives the same bits.</summary>
    [Test]
    public void ResultsAreDeterministic()
    {
        int m = 70, n = 45, k = 300;
        var rng = new Random(6);
        var a = Randn(rng, m * k); var b = Randn(rng, k * n); var x = Randn(rng, 20 * 33); var w = Randn(rng, 33);
        using var h = new OpHarness(Gpu);
        var ta = h.Input(a); var tb = h.Input(b); var c1 = h.Output(m * n); var c2 = h.Output(m * n); var c3 = h.Output(m * n);
        var tx = h.Input(x); var tw = h.Input(w); var y = h.Output(20 * 33); var rstd = h.Output(20);
        var dx = h.Input(new float[20 * 33]); var dw1 = h.Input(new float[33]); var dw2 = h.Input(new float[33]); var s1 = h.Output(1); var s2 = h.Output(1);
        h.Commit();
        Gpu.MatMul(c1, ta, tb, m, n, k, true, false, false);
        Gpu.MatMul(c2, ta, tb, m, n, k, true, false, false);
        Gpu.ForceSplitK = 3;
        try { Gpu.MatMul(c3, ta, tb, m, n, k, true, false, false); }
        finally { Gpu.ForceSplitK = 0; }
        Gpu.RmsNormForward(y, rstd, tx, tw, 20, 33, 1e-5f);
        Gpu.RmsNormBackward(dx, dw1, tx, tx, tw, rstd, 20, 33);
        Gpu.RmsNormBackward(dx, dw2, tx, tx, tw, rstd, 20, 33);
        Gpu.SumSquares(s1, ta);
        Gpu.SumSquares(s2, ta);
        Assert.That(h.Read(c2), Is.EqualTo(h.Read(c1)));
        Assert.That(RelErr(h.Read(c3), h.Read(c1)), Is.LessThan(1e-6));
        Assert.That(h.Read(dw2), Is.EqualTo(h.Read(dw1)));
        Assert.That(h.Read(s2), Is.EqualTo(h.Read(s1)));
    }

    /// <summary>The out-of-memory message gives the sizes and says what to reduce.</summary>
    [Test]
    public void OutOfMemoryMessageSaysWhatToReduce()
    {
        var e = new DeviceOutOfMemoryException("NVIDIA H100", 100L << 30, 80L << 30);
        Assert.That(e, Is.InstanceOf<OutOfMemoryException>());
        Assert.That(e.Message, Does.Contain("107374182400 bytes").And.Contain("100.00 GiB").And.Contain("80.00 GiB"));
        Assert.That(e.Message, Does.Contain("batch size").And.Contain("sequence length").And.Contain("model size"));
    }

    /// <summary>Names follow the accelerator; the arena hands out zeroed memory.</summary>
    [Test]
    public void BackendNamesItselfAndZeroesArenas()
    {
        Assert.That(Gpu.Name, Is.EqualTo("ilgpu-cpu"));
        Assert.That(Gpu.DeviceName, Does.Contain("CPU"));
        using var arena = Gpu.CreateArena();
        var t = arena.Reserve("z", 1000);
        arena.Commit();
        Assert.That(Gpu.ToArray<float>(t), Is.All.Zero);
        Assert.That(arena, Is.InstanceOf<IlgpuArena>());
    }
}
