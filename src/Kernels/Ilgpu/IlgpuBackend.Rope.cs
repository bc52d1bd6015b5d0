using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Rotary position embedding (rotate-half layout), forward and inverse (the backward pass), one thread per rotated
/// pair. A position outside the table leaves its row unchanged (the CPU back-end rejects it; a kernel must not fault).
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, RopeArgs> _rope = null!;

    /// <summary>Shape of a RoPE launch.</summary>
    internal struct RopeArgs
    {
        public int N, Heads, HeadDim, MaxPositions, HasBf16, WriteX;
        public float Sign;
    }

    private Action<KernelConfig, ArrayView<F4>, ArrayView<int>, ArrayView<F4>, ArrayView<F4>, ArrayView<U2>, RopeArgs> _ropeQuads = null!;

    private Action<KernelConfig, ArrayView<U2>, ArrayView<int>, ArrayView<F4>, ArrayView<F4>, RopeArgs> _ropeBf16Quads = null!;
    private Action<KernelConfig, ArrayView<ushort>, ArrayView<int>, ArrayView<float>, ArrayView<float>, RopeArgs> _ropeBf16 = null!;

    private void LoadRope()
    {
        _ropeBf16Quads = Load<ArrayView<U2>, ArrayView<int>, ArrayView<F4>, ArrayView<F4>, RopeArgs>(RopeBf16QuadsKernel);
        _ropeBf16 = Load<ArrayView<ushort>, ArrayView<int>, ArrayView<float>, ArrayView<float>, RopeArgs>(RopeBf16Kernel);
        _rope = Load<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, RopeArgs>(RopeKernel);
        _ropeQuads = Load<ArrayView<F4>, ArrayView<int>, ArrayView<F4>, ArrayView<F4>, ArrayView<U2>, RopeArgs>(RopeQuadsKernel);
    }

    /// <inheritdoc/>
    protected override void RopeCore(Tensor x, Tensor positions, Tensor cos, Tensor sin, int n, int heads, int headDim, int maxPositions, bool inverse, Tensor xBf16, bool writeX)
    {
        var a = new RopeArgs { N = n, Heads = heads, HeadDim = headDim, MaxPositions = maxPositions, Sign = inverse ? -1f : 1f, HasBf16 = xBf16.IsEmpty ? 0 : 1, WriteX = writeX ? 1 : 0 };
        if (x.Type == DType.BF16)
        {
            RopeBf16(x, positions, cos, sin, a);
            return;
        }
        // Four pairs per thread in 16-byte loads where the halves are whole quads and every tensor starts on 16 bytes
        // (8 for the bf16 copy): a quarter of the threads and loads.
        if (headDim % 8 == 0 && x.ByteOffset % 16 == 0 && cos.ByteOffset % 16 == 0 && sin.ByteOffset % 16 == 0 && (xBf16.IsEmpty || xBf16.ByteOffset % 8 == 0))
        {
            long quads = (long)n * heads * (headDim / 8);
            _ropeQuads(Config(StreamGroups(quads)), Quads(x, (long)n * heads * headDim), I(positions), Quads(cos, (long)maxPositions * headDim / 2),
                Quads(sin, (long)maxPositions * headDim / 2), xBf16.IsEmpty ? _dummy.View.BaseView.Cast<U2>() : Bf16View(xBf16).Cast<U2>(), a);
            return;
        }
        _rope(Config(StreamGroups((long)n * heads * (headDim / 2))), F(x), I(positions), F(cos), F(sin), Bf16OrDummy(xBf16), a);
    }

    /// <summary>A BF16 x rotated in place: four pairs per thread where the halves are whole quads and the tensors allow, else one.</summary>
    private void RopeBf16(Tensor x, Tensor positions, Tensor cos, Tensor sin, RopeArgs a)
    {
        long count = (long)a.N * a.Heads * a.HeadDim;
        if (a.HeadDim % 8 == 0 && x.ByteOffset % 8 == 0 && cos.ByteOffset % 16 == 0 && sin.ByteOffset % 16 == 0)
        {
            _ropeBf16Quads(Config(StreamGroups(count / 8)), Bf16View(x).SubView(0, count).Cast<U2>(), I(positions),
                Quads(cos, (long)a.MaxPositions * a.HeadDim / 2), Quads(sin, (long)a.MaxPositions * a.HeadDim / 2), a);
            return;
        }
        _ropeBf16(Config(StreamGroups(count / 2)), Bf16View(x), I(positions), F(cos), F(sin), a);
    }

    /// <summary><see cref="RopeQuadsKernel"/> on a bf16 x, in place (quads of bf16 as 8-byte loads and stores).</summary>
    [IlgpuKernel]
    internal static void RopeBf16QuadsKernel(ArrayView<U2> x16, ArrayView<int> positions, ArrayView<F4> cos, ArrayView<F4> sin, RopeArgs a)
    {
        long total = (long)a.N * a.Heads * (a.HeadDim / 8), stride = (long)Grid.DimX * Group.DimX, e = Grid.GlobalIndex.X;
        for (; e + stride < total; e += 2 * stride)
        {
            var qa = RopeQuadOf(e, positions, a);
            var qb = RopeQuadOf(e + stride, positions, a);
            U2 xa1 = x16[qa.O], xa2 = x16[qa.O + qa.Half4];
            F4 ca = cos[qa.T], sa = sin[qa.T];
            U2 xb1 = x16[qb.O], xb2 = x16[qb.O + qb.Half4];
            F4 cb = cos[qb.T], sb = sin[qb.T];
            RopeBf16QuadAt(x16, qa, xa1, xa2, ca, sa, a.Sign);
            RopeBf16QuadAt(x16, qb, xb1, xb2, cb, sb, a.Sign);
        }
        if (e < total)
        {
            var q = RopeQuadOf(e, positions, a);
            RopeBf16QuadAt(x16, q, x16[q.O], x16[q.O + q.Half4], cos[q.T], sin[q.T], a.Sign);
        }
    }

    /// <summary>One bf16 quad pair rotated (where its position is in the table) and stored back rounded.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void RopeBf16QuadAt(ArrayView<U2> x16, RopeQuad q, U2 h1, U2 h2, F4 c, F4 s, float sign)
    {
        if (!q.InTable) return;
        F4 x1 = WidenQuad(h1), x2 = WidenQuad(h2);
        Rotate(ref x1, ref x2, c, s, sign);
        x16[q.O] = PackQuad(x1);
        x16[q.O + q.Half4] = PackQuad(x2);
    }

    /// <summary><see cref="RopeKernel"/> on a bf16 x, in place, one pair per thread (a row outside the table is left as it was).</summary>
    [IlgpuKernel]
    internal static void RopeBf16Kernel(ArrayView<ushort> x, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin, RopeArgs a)
    {
        int half = a.HeadDim / 2, perRow = a.Heads * half;
        long total = (long)a.N * perRow, stride = (long)Grid.DimX * Group.DimX;
        for (long e = Grid.GlobalIndex.X; e < total; e += stride)
        {
            int ei = (int)e, i = ei / perRow, rem = ei - i * perRow, h = rem / half, j = rem - h * half;
            int p = positions[i];
            if (p < 0 || p >= a.MaxPositions) continue;
            long o = ((long)i * a.Heads + h) * a.HeadDim + j, t = (long)p * half + j;
            float x1 = Widen(x[o]), x2 = Widen(x[o + half]);
            float c = cos[t], s = a.Sign * sin[t];
            x[o] = RoundToBf16(x1 * c - x2 * s);
            x[o + half] = RoundToBf16(x2 * c + x1 * s);
        }
    }

    /// <summary>The first <paramref name="floats"/> (a multiple of 4) of an F32 tensor as quads.</summary>
    private static ArrayView<F4> Quads(Tensor t, long floats) => F(t).SubView(0, floats).Cast<F4>();

    /// <summary>
    /// <see cref="RopeKernel"/> four pairs per thread: x[o .. o + 3] with x[o + half .. o + half + 3], cos and sin as
    /// quads, the bf16 copy as 8-byte stores (head dimension a multiple of 8).
    /// </summary>
    [IlgpuKernel]
    internal static void RopeQuadsKernel(ArrayView<F4> x, ArrayView<int> positions, ArrayView<F4> cos, ArrayView<F4> sin, ArrayView<U2> x16, RopeArgs a)
    {
        long total = (long)a.N * a.Heads * (a.HeadDim / 8), stride = (long)Grid.DimX * Group.DimX, e = Grid.GlobalIndex.X;
        // Two quads per step, each step's loads issued together: the position, then x and the table rows (a position
        // outside the table reads row 0 and leaves x as it was).
        for (; e + stride < total; e += 2 * stride)
        {
            var qa = RopeQuadOf(e, positions, a);
            var qb = RopeQuadOf(e + stride, positions, a);
            F4 xa1 = x[qa.O], xa2 = x[qa.O + qa.Half4], ca = cos[qa.T], sa = sin[qa.T];
            F4 xb1 = x[qb.O], xb2 = x[qb.O + qb.Half4], cb = cos[qb.T], sb = sin[qb.T];
            RopeQuadAt(x, x16, qa, xa1, xa2, ca, sa, a);
            RopeQuadAt(x, x16, qb, xb1, xb2, cb, sb, a);
        }
        if (e < total)
        {
            var q = RopeQuadOf(e, positions, a);
            RopeQuadAt(x, x16, q, x[q.O], x[q.O + q.Half4], cos[q.T], sin[q.T], a);
        }
    }

    /// <summary>Where quad e of a RoPE launch sits: its first half in x (O; the second Half4 further), its table row (T), whether its position is in the table.</summary>
    internal struct RopeQuad
    {
        public long O, T;
        public int Half4;
        public bool InTable;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static RopeQuad RopeQuadOf(long e, ArrayView<int> positions, RopeArgs a)
    {
        int half4 = a.HeadDim / 8, perRow = a.Heads * half4, dim4 = a.HeadDim / 4;
        int ei = (int)e, i = ei / perRow, rem = ei - i * perRow, h = rem / half4, j = rem - h * half4;
        int p = positions[i];
        RopeQuad q;
        q.InTable = p >= 0 && p < a.MaxPositions;
        q.Half4 = half4;
        q.O = ((long)i * a.Heads + h) * dim4 + j;
        q.T = (long)(q.InTable ? p : 0) * half4 + j;
        return q;
    }

    /// <summary>(x1, x2) → (x1·c − x2·s', x2·c + x1·s') per component, s' = sign·s (the rotation of every RoPE kernel).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void Rotate(ref F4 x1, ref F4 x2, F4 c, F4 s, float sign)
    {
        float sx = sign * s.X, sy = sign * s.Y, sz = sign * s.Z, sw = sign * s.W;
        F4 y1, y2;
        y1.X = x1.X * c.X - x2.X * sx; y2.X = x2.X * c.X + x1.X * sx;
        y1.Y = x1.Y * c.Y - x2.Y * sy; y2.Y = x2.Y * c.Y + x1.Y * sy;
        y1.Z = x1.Z * c.Z - x2.Z * sz; y2.Z = x2.Z * c.Z + x1.Z * sz;
        y1.W = x1.W * c.W - x2.W * sw; y2.W = x2.W * c.W + x1.W * sw;
        x1 = y1;
        x2 = y2;
    }

    /// <summary>One quad's rotation from its loaded halves and table rows, stored (with its bf16 copy) where it came from.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void RopeQuadAt(ArrayView<F4> x, ArrayView<U2> x16, RopeQuad q, F4 x1, F4 x2, F4 c, F4 s, RopeArgs a)
    {
        if (q.InTable)
        {
            Rotate(ref x1, ref x2, c, s, a.Sign);
            if (a.WriteX != 0)
            {
                x[q.O] = x1;
                x[q.O + q.Half4] = x2;
            }
        }
        if (a.HasBf16 != 0)
        {
            x16[q.O] = PackQuad(x1);
            x16[q.O + q.Half4] = PackQuad(x2);
        }
    }

    /// <summary>
    /// For each row i, head h and j &lt; headDim/2: (x1, x2) = (x[j], x[j + half]) becomes
    /// (x1·cos − x2·sin', x2·cos + x1·sin') with sin' = ±sin of position positions[i]; with HasBf16 also rounded
    /// into x16 (a row outside the table is copied there unrotated).
    /// </summary>
    [IlgpuKernel]
    internal static void RopeKernel(ArrayView<float> x, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin, ArrayView<ushort> x16, RopeArgs a)
    {
        int half = a.HeadDim / 2, perRow = a.Heads * half;
        long total = (long)a.N * perRow, stride = (long)Grid.DimX * Group.DimX;
        for (long e = Grid.GlobalIndex.X; e < total; e += stride)
        {
            int ei = (int)e, i = ei / perRow, rem = ei - i * perRow, h = rem / half, j = rem - h * half;
            int p = positions[i];
            long o = ((long)i * a.Heads + h) * a.HeadDim + j;
            float x1 = x[o], x2 = x[o + half];
            if (p >= 0 && p < a.MaxPositions)
            {
                long t = (long)p * half + j;
                float c = cos[t], s = a.Sign * sin[t];
                float y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
                if (a.WriteX != 0)
                {
                    x[o] = y1;
                    x[o + half] = y2;
                }
                x1 = y1;
                x2 = y2;
            }
            if (a.HasBf16 != 0)
            {
                x16[o] = RoundToBf16(x1);
                x16[o + half] = RoundToBf16(x2);
            }
        }
    }
}
