using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>The float32 → bfloat16 conversion (round to nearest, ties to even; NaN kept), as a kernel and a device function.</summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<ushort>, ArrayView<float>> _toBf16 = null!;

    private void LoadBf16() => _toBf16 = Load<ArrayView<ushort>, ArrayView<float>>(ToBf16Kernel);

    /// <summary>The raw 16-bit elements of a BF16 tensor.</summary>
    private static ArrayView<ushort> Bf16View(Tensor t) => Arena(t).Bytes(t).Cast<ushort>();

    /// <summary>A 16-bit view of an optional BF16 tensor, or a small dummy when it is absent.</summary>
    private ArrayView<ushort> Bf16OrDummy(Tensor t) => t.IsEmpty ? _dummy.View.BaseView.Cast<ushort>() : Bf16View(t);

    /// <inheritdoc/>
    protected override void ToBf16Core(Tensor dst, Tensor src)
    {
        if (src.Count == 0) return;
        _toBf16(Config(StreamGroups(src.Count)), Bf16View(dst), F(src));
    }

    /// <summary>h[i] = bfloat16(f[i]).</summary>
    [IlgpuKernel]
    internal static void ToBf16Kernel(ArrayView<ushort> h, ArrayView<float> f)
    {
        long n = f.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) h[i] = RoundToBf16(f[i]);
    }

    /// <summary>bfloat16 bits of x, as <see cref="Bf16.FromFloat"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort RoundToBf16(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((bits >> 16) | 0x0040u);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}
