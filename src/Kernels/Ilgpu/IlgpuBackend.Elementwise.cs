using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>Element-wise operations: fill, add in place, scale (copy is a device memcpy).</summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, float> _fill = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>> _add = null!;
    private Action<KernelConfig, ArrayView<float>, float> _scale = null!;

    private void LoadElementwise()
    {
        _fill = Load<ArrayView<float>, float>(FillKernel);
        _add = Load<ArrayView<float>, ArrayView<float>>(AddInPlaceKernel);
        _scale = Load<ArrayView<float>, float>(ScaleKernel);
    }

    /// <inheritdoc/>
    protected override void FillCore(Tensor dst, float value)
    {
        if (dst.Count == 0) return;
        _fill(Config(StreamGroups(dst.Count)), F(dst), value);
    }

    /// <inheritdoc/>
    protected override void AddInPlaceCore(Tensor y, Tensor x)
    {
        if (y.Count == 0) return;
        _add(Config(StreamGroups(y.Count)), F(y), F(x));
    }

    /// <inheritdoc/>
    protected override void ScaleCore(Tensor x, float s)
    {
        if (x.Count == 0) return;
        _scale(Config(StreamGroups(x.Count)), F(x), s);
    }

    /// <summary>x[i] = value.</summary>
    [IlgpuKernel]
    internal static void FillKernel(ArrayView<float> x, float value)
    {
        long n = x.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) x[i] = value;
    }

    /// <summary>y[i] += x[i].</summary>
    [IlgpuKernel]
    internal static void AddInPlaceKernel(ArrayView<float> y, ArrayView<float> x)
    {
        long n = y.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y[i] += x[i];
    }

    /// <summary>x[i] *= s.</summary>
    [IlgpuKernel]
    internal static void ScaleKernel(ArrayView<float> x, float s)
    {
        long n = x.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) x[i] *= s;
    }
}
