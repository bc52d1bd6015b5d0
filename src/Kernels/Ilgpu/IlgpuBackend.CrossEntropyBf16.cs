using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Cross-entropy over bf16 logits (the head product's bf16 output): widened and computed as the fp32 kernels do, the
/// gradient rounded to bf16 over the logits. Quads (8-byte loads and stores) where the rows are whole quads on 8
/// bytes, element by element otherwise.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<U2>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int> _crossEntropyBf16Quads = null!;
    private Action<KernelConfig, ArrayView<ushort>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int> _crossEntropyBf16 = null!;

    private void LoadCrossEntropyBf16()
    {
        _crossEntropyBf16Quads = Load<ArrayView<U2>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(CrossEntropyBf16QuadsKernel);
        _crossEntropyBf16 = Load<ArrayView<ushort>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(CrossEntropyBf16Kernel);
    }

    /// <summary>The cross-entropy of BF16 logits, their gradient (with <paramref name="writeGradient"/>) in their place.</summary>
    private void CrossEntropyOfBf16(Tensor logits, Tensor targets, Tensor rowScale, Tensor losses, int n, int vocab, bool writeGradient)
    {
        var scale = writeGradient ? F(rowScale) : FOrDummy(default);
        long count = (long)n * vocab;
        if (vocab % 4 == 0 && logits.ByteOffset % 8 == 0)
            _crossEntropyBf16Quads(Config(TileGroups(n)), Bf16View(logits).SubView(0, count).Cast<U2>(), I(targets), scale, F(losses), n, vocab, writeGradient ? 1 : 0);
        else
            _crossEntropyBf16(Config(TileGroups(n)), Bf16View(logits).SubView(0, count), I(targets), scale, F(losses), n, vocab, writeGradient ? 1 : 0);
    }

    /// <summary>
    /// <see cref="CrossEntropyQuadsKernel"/> on bf16 quads (vocab a multiple of 4): two quads per thread and step, widened;
    /// with writeGradient the row becomes its gradient rounded to bf16.
    /// </summary>
    [IlgpuKernel]
    internal static void CrossEntropyBf16QuadsKernel(ArrayView<U2> logits, ArrayView<int> targets, ArrayView<float> rowScale, ArrayView<float> losses,
        int n, int vocab, int writeGradient)
    {
        var shared = SharedMemory.Allocate<float>(DeviceReduce.SharedSize);
        int tid = Group.IdxX, quads = vocab / 4;
        for (int row = Grid.IdxX; row < n; row += Grid.DimX)
        {
            long o = (long)row * quads;
            int t = targets[row];
            if (t < 0 || t >= vocab)
            {
                if (tid == 0) losses[row] = 0f;
                if (writeGradient != 0) ClearRow(logits, o, quads, tid);
                continue;
            }
            float target = Lane(WidenQuad(logits[o + t / 4]), t & 3);
            float m = float.NegativeInfinity, s = 0f;
            int j = tid;
            for (; j + GroupSize < quads; j += 2 * GroupSize) OnlineQuads(ref m, ref s, WidenQuad(logits[o + j]), WidenQuad(logits[o + j + GroupSize]));
            if (j < quads) OnlineQuads(ref m, ref s, WidenQuad(logits[o + j]), Quad(float.NegativeInfinity));
            float max = DeviceReduce.GroupMax(m, shared);
            float sum = DeviceReduce.GroupSum(Rescaled(s, m, max), shared);
            if (tid == 0) losses[row] = XMath.Log(sum) + max - target;
            if (writeGradient == 0) continue;
            float scale = rowScale[row];
            float factor = scale / sum;
            j = tid;
            for (; j + GroupSize < quads; j += 2 * GroupSize)
            {
                F4 a = WidenQuad(logits[o + j]), b = WidenQuad(logits[o + j + GroupSize]);
                U2 ga = PackQuad(GradientQuad(a, max, factor, t - 4 * j, scale)), gb = PackQuad(GradientQuad(b, max, factor, t - 4 * (j + GroupSize), scale));
                logits[o + j] = ga;
                logits[o + j + GroupSize] = gb;
            }
            if (j < quads) logits[o + j] = PackQuad(GradientQuad(WidenQuad(logits[o + j]), max, factor, t - 4 * j, scale));
        }
    }

    /// <summary>The cross-entropy of bf16 logits element by element (any vocab); with writeGradient the row becomes its gradient in bf16.</summary>
    [IlgpuKernel]
    internal static void CrossEntropyBf16Kernel(ArrayView<ushort> logits, ArrayView<int> targets, ArrayView<float> rowScale, ArrayView<float> losses,
        int n, int vocab, int writeGradient)
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
                if (writeGradient != 0) ClearRow(logits, o, vocab, tid);
                continue;
            }
            float m = float.NegativeInfinity, s = 0f;
            for (int j = tid; j < vocab; j += GroupSize) Online(ref m, ref s, Widen(logits[o + j]));
            float max = DeviceReduce.GroupMax(m, shared);
            float sum = DeviceReduce.GroupSum(Rescaled(s, m, max), shared);
            if (tid == 0) losses[row] = XMath.Log(sum) + max - Widen(logits[o + t]);
            // The loss reads the target's logit before any thread overwrites it.
            Group.Barrier();
            if (writeGradient == 0) continue;
            float scale = rowScale[row], factor = scale / sum;
            for (int j = tid; j < vocab; j += GroupSize)
            {
                float g = XMath.Exp(Widen(logits[o + j]) - max) * factor;
                if (j == t) g -= scale;
                logits[o + j] = RoundToBf16(g);
            }
        }
    }
}
