namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    protected override void MatMulCore(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        if (a.Type == DType.BF16) MatMulBf16(c, a, b, m, n, k, transA, transB, accumulate);
        else CpuGemm.Gemm(_pool, m, n, k, 1f, F(a), transA ? m : k, transA, F(b), transB ? k : n, transB, F(c), n, accumulate);
    }
}
