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
        public int N, Heads, HeadDim, MaxPositions, HasBf16;
        public float Sign;
    }

    private void LoadRope() => _rope = Load<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, RopeArgs>(RopeKernel);

    /// <inheritdoc/>
    protected override void RopeCore(Tensor x, Tensor positions, Tensor cos, Tensor sin, int n, int heads, int headDim, int maxPositions, bool inverse, Tensor xBf16)
    {
        var a = new RopeArgs { N = n, Heads = heads, HeadDim = headDim, MaxPositions = maxPositions, Sign = inverse ? -1f : 1f, HasBf16 = xBf16.IsEmpty ? 0 : 1 };
        _rope(Config(StreamGroups((long)n * heads * (headDim / 2))), F(x), I(positions), F(cos), F(sin), Bf16OrDummy(xBf16), a);
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
                x[o] = y1;
                x[o + half] = y2;
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
