using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Reductions (sum of squares, dot product) in two deterministic passes: a fixed number of logical blocks (a
/// function of the length only) each sum a strided share in float and reduce it through a fixed tree; one group then
/// adds the block sums in double.
/// </summary>
public sealed partial class IlgpuBackend
{
    private const int MaxReduceBlocks = GroupSize;

    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _reducePartial = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _reduceFinal = null!;

    private void LoadReduce()
    {
        _reducePartial = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(ReducePartialKernel);
        _reduceFinal = Load<ArrayView<float>, ArrayView<float>, int, int>(ReduceFinalKernel);
    }

    private static int ReduceBlocks(long count) => (int)Math.Clamp((count + 16 * GroupSize - 1) / (16 * GroupSize), 1, MaxReduceBlocks);

    /// <inheritdoc/>
    protected override void SumSquaresCore(Tensor result, Tensor x) => Reduce(result, F(x), F(x), squares: true, accumulate: false);

    /// <inheritdoc/>
    protected override void DotCore(Tensor result, Tensor a, Tensor b, bool accumulate) => Reduce(result, F(a), F(b), squares: false, accumulate);

    private void Reduce(Tensor result, ArrayView<float> a, ArrayView<float> b, bool squares, bool accumulate)
    {
        int blocks = ReduceBlocks(a.Length);
        var partials = Scratch(blocks);
        if (a.Length == 0) Fill(partials.SubView(0, 1), 0f);
        else _reducePartial(Config(TileGroups(blocks)), a, b, partials, squares ? 1 : 0);
        _reduceFinal(Config(1), partials, F(result).SubView(0, 1), blocks, accumulate ? 1 : 0);
    }

    private void Fill(ArrayView<float> view, float value) => _fill(Config(StreamGroups(view.Length)), view, value);

    /// <summary>
    /// partials[blk] = Σ over i ≡ blk·G + tid (mod blocks·G) of a[i]² (squares ≠ 0) or a[i]·b[i], for each logical
    /// block blk &lt; partials.Length.
    /// </summary>
    [IlgpuKernel]
    internal static void ReducePartialKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> partials, int squares)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        long n = a.Length;
        int blocks = (int)partials.Length;
        long stride = (long)blocks * GroupSize;
        for (int blk = Grid.IdxX; blk < blocks; blk += Grid.DimX)
        {
            float s = 0f;
            for (long i = (long)blk * GroupSize + Group.IdxX; i < n; i += stride)
            {
                float x = a[i];
                s += squares != 0 ? x * x : x * b[i];
            }
            s = DeviceReduce.GroupSum(s, shared);
            if (Group.IdxX == 0) partials[blk] = s;
        }
    }

    /// <summary>result[0] (+)= Σ partials[0..count) summed in double by one group.</summary>
    [IlgpuKernel]
    internal static void ReduceFinalKernel(ArrayView<float> partials, ArrayView<float> result, int count, int accumulate)
    {
        var shared = SharedMemory.Allocate<double>(DeviceReduce.SharedSize);
        double s = 0.0;
        for (int i = Group.IdxX; i < count; i += GroupSize) s += partials[i];
        s = DeviceReduce.GroupSum(s, shared);
        if (Group.IdxX == 0)
        {
            float total = (float)s;
            result[0] = accumulate != 0 ? result[0] + total : total;
        }
    }
}
