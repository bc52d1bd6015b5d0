namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    /// <remarks>A BF16 output is computed in fp32 into a buffer that grows on first use, then rounded.</remarks>
    protected override void MatMulCore(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        long mn = (long)m * n;
        float* cf = c.Type == DType.BF16 ? Grow(mn, ref _wideC, ref _wideCCap) : F(c);
        if (a.Type == DType.BF16) MatMulBf16(cf, a, b, m, n, k, transA, transB, accumulate);
        else CpuGemm.Gemm(_pool, m, n, k, 1f, F(a), transA ? m : k, transA, F(b), transB ? k : n, transB, cf, n, accumulate);
        if (c.Type != DType.BF16) return;
        var r = new ConvertArgs { F = cf, H = H(c) };
        _pool.For((int)mn, ElementGrain, &ToBf16Chunk, &r);
    }
}
