using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Cross-entropy with the in-place gradient, one group per row: each thread keeps an online (max, Σexp) over its
/// strided share of the row, the group reduces the maximum and then the rescaled sums, and (with the gradient) the
/// row is overwritten by rowScale·(softmax − onehot). Target −100 and targets outside [0, vocab) are ignored rows
/// (loss 0, gradient 0): a kernel must not fault on a bad label.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int> _crossEntropy = null!;

    private void LoadCrossEntropy() =>
        _crossEntropy = Load<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>(CrossEntropyKernel);

    /// <inheritdoc/>
    protected override void CrossEntropyCore(Tensor logits, Tensor targets, Tensor rowScale, Tensor losses, int n, int vocab, bool writeGradient, Tensor gradBf16) =>
        _crossEntropy(Config(TileGroups(n)), F(logits), I(targets), writeGradient ? F(rowScale) : FOrDummy(default), F(losses), Bf16OrDummy(gradBf16),
            n, vocab, !writeGradient ? 0 : gradBf16.IsEmpty ? 1 : 2);

    /// <summary>
    /// losses[i] = logsumexp(row i) − row[targets[i]]; with writeGradient 1 the row becomes the scaled gradient, with 2
    /// the gradient goes to grad16 rounded to bfloat16 and the row stays.
    /// </summary>
    [IlgpuKernel]
    internal static void CrossEntropyKernel(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> rowScale, ArrayView<float> losses,
        ArrayView<ushort> grad16, int n, int vocab, int writeGradient)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        int tid = Group.IdxX;
        for (int row = Grid.IdxX; row < n; row += Grid.DimX)
        {
            long o = (long)row * vocab;
            int t = targets[row];
            if (t < 0 || t >= vocab)
            {
                if (tid == 0) losses[row] = 0f;
                if (writeGradient == 1)
                    for (int j = tid; j < vocab; j += GroupSize) logits[o + j] = 0f;
                if (writeGradient == 2)
                    for (int j = tid; j < vocab; j += GroupSize) grad16[o + j] = 0;
                continue;
            }
            float target = logits[o + t];
            float m = float.NegativeInfinity, s = 0f;
            for (int j = tid; j < vocab; j += GroupSize)
            {
                float x = logits[o + j];
                if (x > m)
                {
                    s = s * XMath.Exp(m - x) + 1f;
                    m = x;
                }
                else
                {
                    s += XMath.Exp(x - m);
                }
            }
            float max = DeviceReduce.GroupMax(m, shared);
            float sum = DeviceReduce.GroupSum(s == 0f ? 0f : s * XMath.Exp(m - max), shared);
            if (tid == 0) losses[row] = XMath.Log(sum) + max - target;
            if (writeGradient != 0)
            {
                float scale = rowScale[row];
                float factor = scale / sum;
                for (int j = tid; j < vocab; j += GroupSize)
                {
                    float g = XMath.Exp(logits[o + j] - max) * factor;
                    if (j == t) g -= scale;
                    if (writeGradient == 1) logits[o + j] = g;
                    else grad16[o + j] = RoundToBf16(g);
                }
            }
        }
    }
}
