using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// A 2D bf16 tensor as a TMA copy reads it: elements (inner, outer) at <see cref="Address"/> + 2·inner + outer·
/// <see cref="OuterStrideBytes"/> for inner below <see cref="Inner"/> and outer below <see cref="Outer"/> (zeros
/// outside), copied in boxes of <see cref="BoxInner"/> × <see cref="BoxOuter"/> into shared memory with the 128-byte
/// swizzle (a box row of 64 bf16 fills one 128-byte row).
/// </summary>
internal readonly record struct TensorMapSpec(ulong Address, uint Inner, uint Outer, ulong OuterStrideBytes, uint BoxInner, uint BoxOuter)
{
    /// <summary>Bytes of one box (what a copy announces to its mbarrier, zeros outside the tensor included).</summary>
    public int BoxBytes => (int)(BoxInner * BoxOuter * 2);
}

/// <summary>
/// The tensor maps of the TMA wgmma GEMM (<see cref="WgmmaGemmPtx.TmaModule"/>) and their encoding by the CUDA driver
/// (<c>cuTensorMapEncodeTiled</c>): a 128-byte map per operand, passed as a kernel parameter.
/// </summary>
internal static class GemmTensorMaps
{
    /// <summary>
    /// The maps of a and b for op(a) [m, k] · op(b) [k, n]: a k-contiguous operand (a [m, k], b [n, k]) in boxes of 64 k
    /// × its tile's rows (128 of a, 256 or 192 of b); an m- or n-contiguous one (a [k, m], b [k, n]) in boxes of 64 m or n ×
    /// 64 k, one per 64-wide block of its tile.
    /// </summary>
    public static (TensorMapSpec A, TensorMapSpec B) For(bool transA, bool transB, int m, int n, int k, ulong a, ulong b, int tileN = GemmPtx.TileN)
    {
        var ma = transA ? new TensorMapSpec(a, (uint)m, (uint)k, (ulong)m * 2, 64, 64) : new TensorMapSpec(a, (uint)k, (uint)m, (ulong)k * 2, 64, GemmPtx.TileM);
        var mb = transB ? new TensorMapSpec(b, (uint)k, (uint)n, (ulong)k * 2, 64, (uint)tileN) : new TensorMapSpec(b, (uint)n, (uint)k, (ulong)n * 2, 64, 64);
        return (ma, mb);
    }

    private const int Bfloat16 = 9, InterleaveNone = 0, Swizzle128B = 3, L2Promotion128B = 2, OobFillZeros = 0;

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private unsafe delegate CudaError EncodeTiled(void* map, int dataType, uint rank, ulong address, ulong* dims, ulong* strides,
        uint* box, uint* elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill);

    private static readonly Lazy<EncodeTiled> _encode = new(() =>
        NativeLibrary.TryGetExport(PtxGemm.LoadDriver(), "cuTensorMapEncodeTiled", out var f)
            ? Marshal.GetDelegateForFunctionPointer<EncodeTiled>(f)
            : throw new InvalidOperationException("the CUDA driver has no cuTensorMapEncodeTiled (it needs CUDA 12 or newer)"));

    /// <summary>Writes the driver's 128-byte tensor map of <paramref name="spec"/> to <paramref name="map"/> (64-byte aligned).</summary>
    public static unsafe void Encode(TensorMapSpec spec, byte* map)
    {
        if (((ulong)map & 63) != 0) throw new ArgumentException("a tensor map must be on 64 bytes", nameof(map));
        ulong* dims = stackalloc ulong[] { spec.Inner, spec.Outer };
        ulong* strides = stackalloc ulong[] { spec.OuterStrideBytes };
        uint* box = stackalloc uint[] { spec.BoxInner, spec.BoxOuter };
        uint* elementStrides = stackalloc uint[] { 1, 1 };
        var error = _encode.Value(map, Bfloat16, 2, spec.Address, dims, strides, box, elementStrides, InterleaveNone, Swizzle128B, L2Promotion128B, OobFillZeros);
        if (error != CudaError.CUDA_SUCCESS)
            throw new InvalidOperationException($"cuTensorMapEncodeTiled refused {spec}: {error}");
    }
}
