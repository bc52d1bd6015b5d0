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

    private Action<KernelConfig, ArrayView<F4>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<U2>, int, int, int> _crossEntropyQuads = null!;

    private void LoadCrossEntropy()
    {
        _crossEntropy = Load<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>(CrossEntropyKernel);
        _crossEntropyQuads = Load<ArrayView<F4>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<U2>, int, int, int>(CrossEntropyQuadsKernel);
        LoadCrossEntropyBf16();
    }

    /// <inheritdoc/>
    protected override void CrossEntropyCore(Tensor logits, Tensor targets, Tensor rowScale, Tensor losses, int n, int vocab, bool writeGradient, Tensor gradBf16)
    {
        if (logits.Type == DType.BF16)
        {
            CrossEntropyOfBf16(logits, targets, rowScale, losses, n, vocab, writeGradient);
            return;
        }
        int mode = !writeGradient ? 0 : gradBf16.IsEmpty ? 1 : 2;
        var scale = writeGradient ? F(rowScale) : FOrDummy(default);
        // Quads (16-byte loads, 8-byte bf16 stores) where the rows are whole quads on 16 bytes: the four-stream
        // kernel took 250 µs per 2048 × 32000 chunk on an H100, about 1.8 times what its bytes take.
        if (vocab % 4 == 0 && logits.ByteOffset % 16 == 0 && (gradBf16.IsEmpty || gradBf16.ByteOffset % 8 == 0))
        {
            long floats = (long)n * vocab;
            _crossEntropyQuads(Config(TileGroups(n)), Quads(logits, floats), I(targets), scale, F(losses),
                gradBf16.IsEmpty ? _dummy.View.BaseView.Cast<U2>() : Bf16View(gradBf16).SubView(0, floats).Cast<U2>(), n, vocab, mode);
            return;
        }
        _crossEntropy(Config(TileGroups(n)), F(logits), I(targets), scale, F(losses), Bf16OrDummy(gradBf16), n, vocab, mode);
    }

    /// <summary>
    /// <see cref="CrossEntropyKernel"/> on quads (vocab a multiple of 4): two quads per thread and step, their loads
    /// issued together; the online softmax takes the step's eight logits at once (one rescale at most); the gradient
    /// goes back as quads, or as four bf16 in one 8-byte store.
    /// </summary>
    [IlgpuKernel]
    internal static void CrossEntropyQuadsKernel(ArrayView<F4> logits, ArrayView<int> targets, ArrayView<float> rowScale, ArrayView<float> losses,
        ArrayView<U2> grad16, int n, int vocab, int writeGradient)
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
                if (writeGradient == 1) ClearRow(logits, o, quads, tid);
                if (writeGradient == 2) ClearRow(grad16, o, quads, tid);
                continue;
            }
            float target = Lane(logits[o + t / 4], t & 3);
            float m = float.NegativeInfinity, s = 0f;
            int j = tid;
            for (; j + GroupSize < quads; j += 2 * GroupSize) OnlineQuads(ref m, ref s, logits[o + j], logits[o + j + GroupSize]);
            if (j < quads) OnlineQuads(ref m, ref s, logits[o + j], Quad(float.NegativeInfinity));
            float max = DeviceReduce.GroupMax(m, shared);
            float sum = DeviceReduce.GroupSum(Rescaled(s, m, max), shared);
            if (tid == 0) losses[row] = XMath.Log(sum) + max - target;
            if (writeGradient == 0) continue;
            float scale = rowScale[row];
            float factor = scale / sum;
            j = tid;
            for (; j + GroupSize < quads; j += 2 * GroupSize)
            {
                F4 a = logits[o + j], b = logits[o + j + GroupSize];
                StoreGradientQuad(logits, grad16, o + j, GradientQuad(a, max, factor, t - 4 * j, scale), writeGradient);
                StoreGradientQuad(logits, grad16, o + j + GroupSize, GradientQuad(b, max, factor, t - 4 * (j + GroupSize), scale), writeGradient);
            }
            if (j < quads) StoreGradientQuad(logits, grad16, o + j, GradientQuad(logits[o + j], max, factor, t - 4 * j, scale), writeGradient);
        }
    }

    /// <summary>
    /// Two quads into an online softmax (the running maximum m and the sum s of exp(x − m)): one rescale at most. A
    /// quad of −∞ adds nothing.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void OnlineQuads(ref float m, ref float s, F4 a, F4 b)
    {
        float mx = XMath.Max(Max4(a), Max4(b));
        if (mx > m)
        {
            s *= XMath.Exp(m - mx);
            m = mx;
        }
        s += SumExp(a, m) + SumExp(b, m);
    }

    /// <summary>A quad of four equal components.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static F4 Quad(float x)
    {
        F4 v;
        v.X = x; v.Y = x; v.Z = x; v.W = x;
        return v;
    }

    /// <summary>This thread's share (elements tid, tid + group, …) of the <paramref name="count"/> elements at <paramref name="o"/> zeroed: an ignored row's gradient.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void ClearRow<T>(ArrayView<T> row, long o, int count, int tid) where T : unmanaged
    {
        for (int z = tid; z < count; z += GroupSize) row[o + z] = default;
    }

    /// <summary>Component i (0 .. 3) of a quad.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float Lane(F4 v, int i) => i == 0 ? v.X : i == 1 ? v.Y : i == 2 ? v.Z : v.W;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float Max4(F4 v) => XMath.Max(XMath.Max(v.X, v.Y), XMath.Max(v.Z, v.W));

    /// <summary>Σ exp(x − m) over a quad.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float SumExp(F4 v, float m) => (XMath.Exp(v.X - m) + XMath.Exp(v.Y - m)) + (XMath.Exp(v.Z - m) + XMath.Exp(v.W - m));

    /// <summary>The gradient of a quad of logits: softmax·scale, minus scale at component d when d is in 0 .. 3 (the target).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static F4 GradientQuad(F4 x, float max, float factor, int d, float scale)
    {
        F4 g;
        g.X = XMath.Exp(x.X - max) * factor;
        g.Y = XMath.Exp(x.Y - max) * factor;
        g.Z = XMath.Exp(x.Z - max) * factor;
        g.W = XMath.Exp(x.W - max) * factor;
        if (d == 0) g.X -= scale;
        if (d == 1) g.Y -= scale;
        if (d == 2) g.Z -= scale;
        if (d == 3) g.W -= scale;
        return g;
    }

    /// <summary>A gradient quad in place (writeGradient 1) or rounded to bf16 (2).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void StoreGradientQuad(ArrayView<F4> logits, ArrayView<U2> grad16, long i, F4 g, int writeGradient)
    {
        if (writeGradient == 1) logits[i] = g;
        else grad16[i] = PackQuad(g);
    }

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
                if (writeGradient == 1) ClearRow(logits, o, vocab, tid);
                if (writeGradient == 2) ClearRow(grad16, o, vocab, tid);
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
