using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace HftRuntime.Kernels.Cpu;

/// <summary>
/// The CPU back-end: plain C# with SIMD (System.Numerics.Tensors, Vector128/256/512 where the hardware has
/// them), multithreaded through a <see cref="WorkerPool"/>, no allocation inside an operation. It is the
/// reference for the other back-ends and the fallback on machines without a GPU. Operations run synchronously.
/// </summary>
public sealed unsafe partial class CpuBackend : Backend
{
    private readonly WorkerPool _pool;

    /// <summary>Creates the back-end with <paramref name="threads"/> threads (default: <see cref="WorkerPool.DefaultThreads"/>).</summary>
    public CpuBackend(int threads = 0)
    {
        _pool = new WorkerPool(threads > 0 ? threads : WorkerPool.DefaultThreads);
    }

    /// <summary>The pool that runs this back-end's loops.</summary>
    public WorkerPool Pool => _pool;

    /// <inheritdoc/>
    public override string Name => "cpu";

    /// <inheritdoc/>
    public override string DeviceName => $"{System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture} CPU, {_pool.Threads} threads, {SimdDescription}";

    /// <summary>The widest vector unit the GEMM and element-wise code use.</summary>
    public static string SimdDescription =>
        System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "512-bit SIMD" :
        System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "256-bit SIMD" :
        System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated ? "128-bit SIMD" : "scalar";

    /// <inheritdoc/>
    public override long MemoryBytes => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <inheritdoc/>
    public override DeviceArena CreateArena() => new CpuArena(this);

    /// <inheritdoc/>
    public override void Synchronize() { }

    /// <inheritdoc/>
    public override void Dispose()
    {
        _pool.Dispose();
        FreeBf16Buffers();
    }

    /// <summary>Address of an F32 tensor.</summary>
    public static float* F(Tensor t) => (float*)((CpuArena)t.Arena!).Address(t);

    /// <summary>Address of an I32 tensor.</summary>
    public static int* I(Tensor t) => (int*)((CpuArena)t.Arena!).Address(t);

    /// <summary>A span over an F32 tensor.</summary>
    public static Span<float> Span(Tensor t) => new(F(t), t.Count);

    /// <summary>Grain (elements per chunk) for streaming element-wise loops.</summary>
    private const int ElementGrain = 1 << 15;

    /// <inheritdoc/>
    protected override void UploadCore(Tensor dst, ReadOnlySpan<byte> src) =>
        src.CopyTo(new Span<byte>(((CpuArena)dst.Arena!).Address(dst), src.Length));

    /// <inheritdoc/>
    protected override void DownloadCore(Tensor src, Span<byte> dst) =>
        new ReadOnlySpan<byte>(((CpuArena)src.Arena!).Address(src), dst.Length).CopyTo(dst);

    /// <inheritdoc/>
    protected override void FillCore(Tensor dst, float value) => Span(dst).Fill(value);

    /// <inheritdoc/>
    protected override void CopyCore(Tensor dst, Tensor src) =>
        Buffer.MemoryCopy(((CpuArena)src.Arena!).Address(src), ((CpuArena)dst.Arena!).Address(dst), dst.Bytes, src.Bytes);

    private struct BinaryArgs { public float* Y; public float* X; public float S; }

    /// <inheritdoc/>
    protected override void AddInPlaceCore(Tensor y, Tensor x)
    {
        var a = new BinaryArgs { Y = F(y), X = F(x) };
        _pool.For(y.Count, ElementGrain, &AddChunk, &a);
    }

    private static void AddChunk(void* p, int s, int e)
    {
        var a = (BinaryArgs*)p;
        var y = new Span<float>(a->Y + s, e - s);
        TensorPrimitives.Add(y, new ReadOnlySpan<float>(a->X + s, e - s), y);
    }

    /// <inheritdoc/>
    protected override void ScaleCore(Tensor x, float s)
    {
        var a = new BinaryArgs { Y = F(x), S = s };
        _pool.For(x.Count, ElementGrain, &ScaleChunk, &a);
    }

    private static void ScaleChunk(void* p, int s, int e)
    {
        var a = (BinaryArgs*)p;
        var y = new Span<float>(a->Y + s, e - s);
        TensorPrimitives.Multiply(y, a->S, y);
    }

    /// <inheritdoc/>
    protected override void SumSquaresCore(Tensor result, Tensor x)
    {
        // Fixed chunking (independent of thread count) so that the sum is the same on every machine.
        const int chunk = 1 << 14;
        double total = 0;
        var data = new ReadOnlySpan<float>(F(x), x.Count);
        for (int s = 0; s < data.Length; s += chunk)
            total += TensorPrimitives.SumOfSquares(data.Slice(s, Math.Min(chunk, data.Length - s)));
        *F(result) = (float)total;
    }

    /// <inheritdoc/>
    protected override void DotCore(Tensor result, Tensor a, Tensor b, bool accumulate)
    {
        // As SumSquaresCore: fp32 chunks summed in double. One fp32 pass over 16M elements drifted by 1.4e-5
        // (relative) from the GPU's tree of partial sums, which is the more accurate of the two.
        const int chunk = 1 << 14;
        double total = 0;
        var x = new ReadOnlySpan<float>(F(a), a.Count);
        var y = new ReadOnlySpan<float>(F(b), b.Count);
        for (int s = 0; s < x.Length; s += chunk)
        {
            int len = Math.Min(chunk, x.Length - s);
            total += TensorPrimitives.Dot(x.Slice(s, len), y.Slice(s, len));
        }
        float* r = F(result);
        *r = accumulate ? (float)(*r + total) : (float)total;
    }
}
