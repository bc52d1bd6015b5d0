using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Rotary position embedding (rotate-half layout), forward and inverse (the backward pass), one thread per rotated
/// pair. A position outside the table leaves its row unchanged (the CPU back-end rejects it; a kernel must not fault).
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, RopeArgs> _rope = null!;

    /// <summary>Shape of a RoPE launch.</summary>
    internal struct RopeArgs
    {
        public int N, Heads, HeadDim, MaxPositions;
        public float Sign;
    }

    private void LoadRope() => _rope = Load<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, RopeArgs>(RopeKernel);

    /// <inheritdoc/>
    protected override void RopeCore(Tensor x, Tensor positions, Tensor cos, Tensor sin, int n, int heads, int headDim, int maxPositions, bool inverse)
    {
        var a = new RopeArgs { N = n, Heads = heads, HeadDim = headDim, MaxPositions = maxPositions, Sign = inverse ? -1f : 1f };
        _rope(Config(StreamGroups((long)n * heads * (headDim / 2))), F(x), I(positions), F(cos), F(sin), a);
    }

    /// <summary>
    /// For each row i, head h and j &lt; headDim/2: (x1, x2) = (x[j], x[j + half]) becomes
    /// (x1·cos − x2·sin', x2·cos + x1·sin') with sin' = ±sin of position positions[i].
    /// </summary>
    [IlgpuKernel]
    internal static void RopeKernel(ArrayView<float> x, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin, RopeArgs a)
    {
        int half = a.HeadDim / 2, perRow = a.Heads * half;
        long total = (long)a.N * perRow, stride = (long)Grid.DimX * Group.DimX;
        for (long e = Grid.GlobalIndex.X; e < total; e += stride)
        {
            int ei = (int)e, i = ei / perRow, rem = ei - i * perRow, h = rem / half, j = rem - h * half;
            int p = positions[i];
            if (p < 0 || p >= a.MaxPositions) continue;
            long t = (long)p * half + j;
            float c = cos[t], s = a.Sign * sin[t];
            long o = ((long)i * a.Heads + h) * a.HeadDim + j;
            float x1 = x[o], x2 = x[o + half];
            x[o] = x1 * c - x2 * s;
            x[o + half] = x2 * c + x1 * s;
        }
    }
}
