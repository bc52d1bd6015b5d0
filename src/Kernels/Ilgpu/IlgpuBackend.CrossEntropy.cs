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
    /// <summary>One element into an online softmax: the running maximum m and the sum s of exp(x − m).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void Online(ref float m, ref float s, float x)
    {
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

    /// <summary>A sum of exp(x − m) as a sum of exp(x − max) (0 for an empty stream, whose m is −∞).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float Rescaled(float s, float m, float max) => s == 0f ? 0f : s * XMath.Exp(m - max);

    /// <summary>The gradient of logit j (value x) of a row: softmax·scale, minus scale at the target; in place or as bf16.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void Gradient(ArrayView<float> logits, ArrayView<ushort> grad16, long o, int j, float x, float max, float factor, int t, float scale, int writeGradient)
    {
        float g = XMath.Exp(x - max) * factor;
        if (j == t) g -= scale;
        if (writeGradient == 1) logits[o + j] = g;
        else grad16[o + j] = RoundToBf16(g);
    }

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
                    for (int z = tid; z < vocab; z += GroupSize) logits[o + z] = 0f;
                if (writeGradient == 2)
                    for (int z = tid; z < vocab; z += GroupSize) grad16[o + z] = 0;
                continue;
            }
            float target = logits[o + t];
            // Four online-softmax streams per thread (four loads in flight, not one: a single stream waited for
            // each load, 294 µs per 2048 × 32000 chunk on an H100), merged in a fixed order.
            float m0 = float.NegativeInfinity, m1 = m0, m2 = m0, m3 = m0, s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int j = tid;
            for (; j + 3 * GroupSize < vocab; j += 4 * GroupSize)
            {
                float x0 = logits[o + j], x1 = logits[o + j + GroupSize], x2 = logits[o + j + 2 * GroupSize], x3 = logits[o + j + 3 * GroupSize];
                Online(ref m0, ref s0, x0);
                Online(ref m1, ref s1, x1);
                Online(ref m2, ref s2, x2);
                Online(ref m3, ref s3, x3);
            }
            for (; j < vocab; j += GroupSize) Online(ref m0, ref s0, logits[o + j]);
            float m = XMath.Max(XMath.Max(m0, m1), XMath.Max(m2, m3));
            float s = Rescaled(s0, m0, m) + Rescaled(s1, m1, m) + Rescaled(s2, m2, m) + Rescaled(s3, m3, m);
            float max = DeviceReduce.GroupMax(m, shared);
            float sum = DeviceReduce.GroupSum(Rescaled(s, m, max), shared);
            if (tid == 0) losses[row] = XMath.Log(sum) + max - target;
            if (writeGradient != 0)
            {
                float scale = rowScale[row];
                float factor = scale / sum;
                j = tid;
                for (; j + 3 * GroupSize < vocab; j += 4 * GroupSize)
                {
                    float x0 = logits[o + j], x1 = logits[o + j + GroupSize], x2 = logits[o + j + 2 * GroupSize], x3 = logits[o + j + 3 * GroupSize];
                    Gradient(logits, grad16, o, j, x0, max, factor, t, scale, writeGradient);
                    Gradient(logits, grad16, o, j + GroupSize, x1, max, factor, t, scale, writeGradient);
                    Gradient(logits, grad16, o, j + 2 * GroupSize, x2, max, factor, t, scale, writeGradient);
                    Gradient(logits, grad16, o, j + 3 * GroupSize, x3, max, factor, t, scale, writeGradient);
                }
                for (; j < vocab; j += GroupSize) Gradient(logits, grad16, o, j, logits[o + j], max, factor, t, scale, writeGradient);
            }
        }
    }
}
