namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    private struct EmbeddingArgs { public float* Y; public int* Ids; public float* Table; public int N, Dim, Vocab; }

    /// <inheritdoc/>
    protected override void EmbeddingForwardCore(Tensor y, Tensor ids, Tensor table, int n, int dim, int vocab)
    {
        var a = new EmbeddingArgs { Y = F(y), Ids = I(ids), Table = F(table), N = n, Dim = dim, Vocab = vocab };
        CheckIds(a.Ids, n, vocab, ids.Name);
        _pool.For(n, Math.Max(1, 16384 / dim), &EmbeddingForwardRows, &a);
    }

    private static void EmbeddingForwardRows(void* p, int s, int e)
    {
        var a = (EmbeddingArgs*)p;
        for (int i = s; i < e; i++)
            new ReadOnlySpan<float>(a->Table + (long)a->Ids[i] * a->Dim, a->Dim).CopyTo(new Span<float>(a->Y + (long)i * a->Dim, a->Dim));
    }

    /// <inheritdoc/>
    protected override void EmbeddingBackwardCore(Tensor dTable, Tensor ids, Tensor dy, int n, int dim, int vocab)
    {
        // Columns are split across threads; within a column block tokens are added in order, so the result does
        // not depend on the thread count.
        var a = new EmbeddingArgs { Y = F(dy), Ids = I(ids), Table = F(dTable), N = n, Dim = dim, Vocab = vocab };
        CheckIds(a.Ids, n, vocab, ids.Name);
        _pool.For(dim, 64, &EmbeddingBackwardColumns, &a);
    }

    private static void EmbeddingBackwardColumns(void* p, int s, int e)
    {
        var a = (EmbeddingArgs*)p;
        int w = e - s;
        for (int i = 0; i < a->N; i++)
        {
            var row = new Span<float>(a->Table + (long)a->Ids[i] * a->Dim + s, w);
            System.Numerics.Tensors.TensorPrimitives.Add(row, new ReadOnlySpan<float>(a->Y + (long)i * a->Dim + s, w), row);
        }
    }

    private static void CheckIds(int* ids, int n, int vocab, string name)
    {
        for (int i = 0; i < n; i++)
            if ((uint)ids[i] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(name, ids[i], $"token id at position {i} of '{name}' is outside the vocabulary [0, {vocab})");
    }
}
