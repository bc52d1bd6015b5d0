using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Products stored in bf16 (a BF16 c): the PTX GEMMs round their accumulators as they store them, and a split product's
/// reduce kernel rounds the sums; every other kernel computes the product in fp32 into a staging buffer of this
/// back-end's own (grown on demand), which is then rounded into c.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<ushort>, ArrayView<float>, int> _matmulSplitReduceBf16 = null!;
    private DeviceArena? _stagingArena;
    private Tensor _staging;

    private void LoadMatMulBf16Out() =>
        _matmulSplitReduceBf16 = Load<ArrayView<ushort>, ArrayView<float>, int>(MatMulSplitReduceBf16Kernel);

    /// <summary>c[m, n] = op(a)·op(b) rounded to bf16 (c BF16).</summary>
    private void MatMulToBf16(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB)
    {
        if (a.Type == DType.BF16 && TryMatMulPtx(c, a, b, m, n, k, transA, transB, accumulate: false)) return;
        int mn = m * n;
        var staging = Staging(mn);
        MatMulCore(staging, a, b, m, n, k, transA, transB, accumulate: false);
        ToBf16Core(c.Slice(0, mn), staging);
    }

    /// <summary>The first <paramref name="count"/> floats of the staging buffer, grown (after the queued work) where too small.</summary>
    private Tensor Staging(int count)
    {
        if (_stagingArena is null || _staging.Count < count)
        {
            _acc.DefaultStream.Synchronize();
            _stagingArena?.Dispose();
            _stagingArena = null;
            var arena = CreateArena();
            try
            {
                _staging = arena.Reserve("matmul.bf16_staging", Math.Max(count, 1 << 16));
                arena.Commit();
            }
            catch
            {
                arena.Dispose();
                throw;
            }
            _stagingArena = arena;
        }
        return _staging.Slice(0, count);
    }

    /// <summary>Sums a split product's partials into c: fp32 (added to c with <paramref name="accumulate"/>) or rounded to bf16.</summary>
    private void SplitReduce(Tensor c, ArrayView<float> partials, int m, int n, int splits, bool accumulate)
    {
        long mn = (long)m * n;
        if (c.Type == DType.BF16) _matmulSplitReduceBf16(Config(StreamGroups(mn)), Bf16View(c).SubView(0, mn), partials, splits);
        else _matmulSplitReduce(Config(StreamGroups(mn)), F(c).SubView(0, mn), partials, splits, accumulate ? 1 : 0);
    }

    /// <summary><see cref="SplitReduce(Tensor, ArrayView{float}, int, int, int, bool)"/> with the partials in a tensor (the tests run the kernels with it).</summary>
    internal void SplitReduce(Tensor c, Tensor partials, int m, int n, int splits, bool accumulate) => SplitReduce(c, F(partials), m, n, splits, accumulate);

    /// <summary>c[i] = bf16(Σ_z partials[z·mn + i]), the slices summed in order (as <see cref="MatMulSplitReduceKernel"/>).</summary>
    [IlgpuKernel]
    internal static void MatMulSplitReduceBf16Kernel(ArrayView<ushort> c, ArrayView<float> partials, int splits)
    {
        long mn = c.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < mn; i += stride)
        {
            float s = 0f;
            for (int z = 0; z < splits; z++) s += partials[z * mn + i];
            c[i] = RoundToBf16(s);
        }
    }
}
