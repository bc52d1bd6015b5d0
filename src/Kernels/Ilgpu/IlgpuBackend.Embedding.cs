using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Token embedding: the forward pass gathers rows, the backward pass scatter-adds rows of dy into the table gradient
/// with atomic adds (the order of additions to a repeated token's row may vary between runs). An id outside the
/// vocabulary gives a zero row forward and adds nothing backward (the CPU back-end rejects it; a kernel must not fault).
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _embeddingForward = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _embeddingBackward = null!;

    private void LoadEmbedding()
    {
        _embeddingForward = Load<ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(EmbeddingForwardKernel);
        _embeddingBackward = Load<ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(EmbeddingBackwardKernel);
    }

    /// <inheritdoc/>
    protected override void EmbeddingForwardCore(Tensor y, Tensor ids, Tensor table, int n, int dim, int vocab)
    {
        long count = (long)n * dim;
        _embeddingForward(Config(StreamGroups(count)), F(y).SubView(0, count), I(ids), F(table), dim, vocab);
    }

    /// <inheritdoc/>
    protected override void EmbeddingBackwardCore(Tensor dTable, Tensor ids, Tensor dy, int n, int dim, int vocab)
    {
        long count = (long)n * dim;
        _embeddingBackward(Config(StreamGroups(count)), F(dTable), I(ids), F(dy).SubView(0, count), dim, vocab);
    }

    /// <summary>y[i, j] = table[ids[i], j] for every element of y ([n, dim]); 0 for an id outside [0, vocab).</summary>
    [IlgpuKernel]
    internal static void EmbeddingForwardKernel(ArrayView<float> y, ArrayView<int> ids, ArrayView<float> table, int dim, int vocab)
    {
        long n = y.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long e = Grid.GlobalIndex.X; e < n; e += stride)
        {
            int ei = (int)e, i = ei / dim, j = ei - i * dim;
            int id = ids[i];
            y[e] = id >= 0 && id < vocab ? table[(long)id * dim + j] : 0f;
        }
    }

    /// <summary>dTable[ids[i], j] += dy[i, j] for every element of dy ([n, dim]), atomically; ids outside [0, vocab) are skipped.</summary>
    [IlgpuKernel]
    internal static void EmbeddingBackwardKernel(ArrayView<float> dTable, ArrayView<int> ids, ArrayView<float> dy, int dim, int vocab)
    {
        long n = dy.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long e = Grid.GlobalIndex.X; e < n; e += stride)
        {
            int ei = (int)e, i = ei / dim, j = ei - i * dim;
            int id = ids[i];
            if (id >= 0 && id < vocab) Atomic.Add(ref dTable[(long)id * dim + j], dy[e]);
        }
    }
}
