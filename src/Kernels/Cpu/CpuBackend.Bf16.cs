using System.Numerics;
using System.Runtime.InteropServices;

namespace HftRuntime.Kernels.Cpu;

/// <summary>
/// bfloat16 on the CPU back-end: the rounding conversion, and matrix products of bf16 operands. A bf16 product is
/// exact in fp32, so widening the operands and running the fp32 GEMM gives what a tensor core computes (fp32
/// accumulation; only the summation order differs). The widened operands (and a product's fp32 result where it is
/// stored in bf16) live in buffers that grow on first use.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    private float* _wideA, _wideB, _wideC;
    private long _wideACap, _wideBCap, _wideCCap;

    private struct ConvertArgs { public float* F; public ushort* H; }

    /// <inheritdoc/>
    protected override void ToBf16Core(Tensor dst, Tensor src)
    {
        var a = new ConvertArgs { F = F(src), H = H(dst) };
        _pool.For(src.Count, ElementGrain, &ToBf16Chunk, &a);
    }

    /// <summary>The raw 16-bit elements of a BF16 tensor.</summary>
    public static ushort* H(Tensor t) => (ushort*)((CpuArena)t.Arena!).Address(t);

    private static void ToBf16Chunk(void* p, int s, int e) => RoundRange(((ConvertArgs*)p)->F, ((ConvertArgs*)p)->H, s, e);

    /// <summary>h[i] = bfloat16(f[i]) for i in [s, e).</summary>
    private static void RoundRange(float* f, ushort* h, int s, int e)
    {
        int i = s, w = Vector<uint>.Count;
        var quiet = new Vector<uint>(0x40u); var inf = new Vector<uint>(0x7F80_0000u); var absMask = new Vector<uint>(0x7FFF_FFFFu);
        var half = new Vector<uint>(0x7FFFu); var one = new Vector<uint>(1u);
        for (; i <= e - 2 * w; i += 2 * w)
        {
            var lo = Round(Vector.AsVectorUInt32(Vector.Load(f + i)));
            var hi = Round(Vector.AsVectorUInt32(Vector.Load(f + i + w)));
            Vector.Narrow(lo, hi).Store(h + i);
        }
        for (; i < e; i++) h[i] = Bf16.FromFloat(f[i]);

        Vector<uint> Round(Vector<uint> bits)
        {
            var rounded = (bits + half + ((bits >> 16) & one)) >> 16;
            var isNan = Vector.GreaterThan(bits & absMask, inf);
            return Vector.ConditionalSelect(isNan, (bits >> 16) | quiet, rounded);
        }
    }

    private static void WidenChunk(void* p, int s, int e) => WidenRange(((ConvertArgs*)p)->H, ((ConvertArgs*)p)->F, s, e);

    /// <summary>f[i] = h[i] widened (exact) for i in [s, e).</summary>
    private static void WidenRange(ushort* h, float* f, int s, int e)
    {
        int i = s, w = Vector<ushort>.Count;
        for (; i <= e - w; i += w)
        {
            Vector.Widen(Vector.Load(h + i), out var lo, out var hi);
            Vector.AsVectorSingle(lo << 16).Store(f + i);
            Vector.AsVectorSingle(hi << 16).Store(f + i + w / 2);
        }
        for (; i < e; i++) f[i] = Bf16.ToFloat(h[i]);
    }

    /// <summary>A grown-on-demand buffer of at least <paramref name="count"/> floats (contents undefined).</summary>
    private static float* Grow(long count, ref float* buffer, ref long capacity)
    {
        if (count > capacity)
        {
            if (buffer != null) NativeMemory.AlignedFree(buffer);
            buffer = null;
            capacity = 0;
            buffer = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
            capacity = count;
        }
        return buffer;
    }

    /// <summary>Widens a BF16 tensor's first <paramref name="count"/> elements into a grown-on-demand buffer.</summary>
    private float* Widen(Tensor t, long count, ref float* buffer, ref long capacity)
    {
        Grow(count, ref buffer, ref capacity);
        var a = new ConvertArgs { F = buffer, H = H(t) };
        _pool.For((int)count, ElementGrain, &WidenChunk, &a);
        return buffer;
    }

    private void MatMulBf16(float* c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        float* wa = Widen(a, (long)m * k, ref _wideA, ref _wideACap);
        float* wb = Widen(b, (long)k * n, ref _wideB, ref _wideBCap);
        CpuGemm.Gemm(_pool, m, n, k, 1f, wa, transA ? m : k, transA, wb, transB ? k : n, transB, c, n, accumulate);
    }

    private void FreeBf16Buffers()
    {
        foreach (var p in new[] { (nint)_wideA, (nint)_wideB, (nint)_wideC })
            if (p != 0) NativeMemory.AlignedFree((void*)p);
        _wideA = _wideB = _wideC = null;
        _wideACap = _wideBCap = _wideCCap = 0;
    }
}
