namespace HftRuntime.Kernels.Cpu;

/// <summary>Single-precision matrix product on the CPU (placeholder: replaced by the packed SIMD kernel).</summary>
public static unsafe class CpuGemm
{
    /// <summary>
    /// c[m, n] = alpha · op(a) · op(b) (+ c when <paramref name="accumulate"/>), row-major with leading dimensions
    /// lda, ldb, ldc (elements between consecutive rows of the stored matrices). op(a) is a[m, k] or, with
    /// transA, the transpose of a stored [k, m]; op(b) is b[k, n] or, with transB, the transpose of b stored [n, k].
    /// Runs on <paramref name="pool"/> when given, else on the calling thread.
    /// </summary>
    public static void Gemm(WorkerPool? pool, int m, int n, int k, float alpha,
        float* a, int lda, bool transA, float* b, int ldb, bool transB, float* c, int ldc, bool accumulate)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++)
                    s += (transA ? a[p * lda + i] : a[i * lda + p]) * (transB ? b[j * ldb + p] : b[p * ldb + j]);
                c[i * ldc + j] = alpha * s + (accumulate ? c[i * ldc + j] : 0f);
            }
    }
}
