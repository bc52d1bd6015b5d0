using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>The float32 → bfloat16 conversion (round to nearest, ties to even; NaN kept), as a kernel and a device function.</summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<ushort>, ArrayView<float>> _toBf16 = null!;

    private Action<KernelConfig, ArrayView<U2>, ArrayView<F4>> _toBf16Quads = null!;

    private void LoadBf16()
    {
        _toBf16 = Load<ArrayView<ushort>, ArrayView<float>>(ToBf16Kernel);
        _toBf16Quads = Load<ArrayView<U2>, ArrayView<F4>>(ToBf16QuadsKernel);
    }

    /// <summary>The raw 16-bit elements of a BF16 tensor.</summary>
    private static ArrayView<ushort> Bf16View(Tensor t) => Arena(t).Bytes(t).Cast<ushort>();

    /// <summary>A 16-bit view of an optional BF16 tensor, or a small dummy when it is absent.</summary>
    private ArrayView<ushort> Bf16OrDummy(Tensor t) => t.IsEmpty ? _dummy.View.BaseView.Cast<ushort>() : Bf16View(t);

    /// <inheritdoc/>
    protected override void ToBf16Core(Tensor dst, Tensor src)
    {
        if (src.Count == 0) return;
        // Four elements per thread (a 16-byte load, an 8-byte store) where the tensors allow: one element per thread
        // took 31 µs for 6.3M floats on an H100, twice what its bytes take.
        if (src.Count % 4 == 0 && src.ByteOffset % 16 == 0 && dst.ByteOffset % 8 == 0)
        {
            long quads = src.Count / 4;
            _toBf16Quads(Config(StreamGroups(quads)), Bf16View(dst).Cast<U2>().SubView(0, quads), F(src).SubView(0, src.Count).Cast<F4>());
            return;
        }
        _toBf16(Config(StreamGroups(src.Count)), Bf16View(dst), F(src));
    }

    /// <summary>h[i] = bfloat16(f[i]) four elements per step, two quads per thread and step.</summary>
    [IlgpuKernel]
    internal static void ToBf16QuadsKernel(ArrayView<U2> h, ArrayView<F4> f)
    {
        long n = f.Length, stride = (long)Grid.DimX * Group.DimX, i = Grid.GlobalIndex.X;
        for (; i + stride < n; i += 2 * stride)
        {
            F4 a = f[i], b = f[i + stride];
            h[i] = PackQuad(a);
            h[i + stride] = PackQuad(b);
        }
        if (i < n) h[i] = PackQuad(f[i]);
    }

    /// <summary>h[i] = bfloat16(f[i]).</summary>
    [IlgpuKernel]
    internal static void ToBf16Kernel(ArrayView<ushort> h, ArrayView<float> f)
    {
        long n = f.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) h[i] = RoundToBf16(f[i]);
    }

    /// <summary>A quad rounded to bf16 (nearest even, as <see cref="RoundToBf16"/>), as two pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static U2 PackQuad(F4 v)
    {
        U2 h;
        h.X = RoundToBf16(v.X) | (uint)RoundToBf16(v.Y) << 16;
        h.Y = RoundToBf16(v.Z) | (uint)RoundToBf16(v.W) << 16;
        return h;
    }

    /// <summary>A bf16 value widened to fp32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Widen(ushort h) => Interop.IntAsFloat((uint)h << 16);

    /// <summary>The low (element 2i) bf16 of a pair, widened.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float WidenLo(uint pair) => Interop.IntAsFloat(pair << 16);

    /// <summary>The high (element 2i + 1) bf16 of a pair, widened.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float WidenHi(uint pair) => Interop.IntAsFloat(pair & 0xFFFF0000u);

    /// <summary>Four bf16 (two pairs) widened to fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static F4 WidenQuad(U2 h)
    {
        F4 v;
        v.X = WidenLo(h.X); v.Y = WidenHi(h.X); v.Z = WidenLo(h.Y); v.W = WidenHi(h.Y);
        return v;
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
