using System.Numerics.Tensors;

namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    private struct CrossEntropyArgs { public float* Logits, RowScale, Losses; public int* Targets; public ushort* Grad16, In16; public int Vocab; public bool Grad; }

    /// <inheritdoc/>
    /// <remarks>BF16 logits are widened row by row into the thread's scratch; their gradient is rounded back in place.</remarks>
    protected override void CrossEntropyCore(Tensor logits, Tensor targets, Tensor rowScale, Tensor losses, int n, int vocab, bool writeGradient, Tensor gradBf16)
    {
        bool bf16In = logits.Type == DType.BF16;
        var a = new CrossEntropyArgs
        {
            Logits = bf16In ? null : F(logits), In16 = bf16In ? H(logits) : null, Targets = I(targets), Losses = F(losses),
            RowScale = writeGradient ? F(rowScale) : null, Vocab = vocab, Grad = writeGradient,
            Grad16 = bf16In ? (writeGradient ? H(logits) : null) : gradBf16.IsEmpty ? null : H(gradBf16),
        };
        for (int i = 0; i < n; i++)
        {
            int t = a.Targets[i];
            if (t != IgnoreIndex && (uint)t >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(targets), t, $"target at row {i} of '{targets.Name}' is outside [0, {vocab}) and is not {IgnoreIndex}");
        }
        _pool.For(n, Math.Max(1, 32768 / vocab), &CrossEntropyRows, &a);
    }

    private static void CrossEntropyRows(void* p, int s, int e)
    {
        var a = (CrossEntropyArgs*)p;
        int v = a->Vocab;
        // A bf16 gradient is formed in this thread's scratch row, so the logits stay as they are (bf16 logits are
        // widened there first, and their gradient replaces them).
        float* scratch = a->Grad16 != null || a->In16 != null ? ScratchBuffer.Get(v) : null;
        for (int i = s; i < e; i++)
        {
            Span<float> row;
            if (a->In16 != null)
            {
                WidenRange(a->In16 + (long)i * v, scratch, 0, v);
                row = new Span<float>(scratch, v);
            }
            else
            {
                row = new Span<float>(a->Logits + (long)i * v, v);
                if (scratch != null)
                {
                    row.CopyTo(new Span<float>(scratch, v));
                    row = new Span<float>(scratch, v);
                }
            }
            int t = a->Targets[i];
            if (t == IgnoreIndex)
            {
                a->Losses[i] = 0f;
                if (a->Grad) row.Clear();
                if (a->Grad16 != null) RoundRange(scratch, a->Grad16 + (long)i * v, 0, v);
                continue;
            }
            float max = TensorPrimitives.Max(row);
            float target = row[t];
            float sum;
            if (a->Grad)
            {
                // The row becomes exp(x - max), then the scaled softmax minus the one-hot: no second buffer.
                TensorPrimitives.Subtract(row, max, row);
                TensorPrimitives.Exp(row, row);
                sum = TensorPrimitives.Sum(row);
                float scale = a->RowScale[i];
                TensorPrimitives.Multiply(row, scale / sum, row);
                row[t] -= scale;
            }
            else
            {
                sum = SumExp(row, max);
            }
            a->Losses[i] = MathF.Log(sum) + max - target;
            if (a->Grad16 != null) RoundRange(scratch, a->Grad16 + (long)i * v, 0, v);
        }
    }

    /// <summary>Σ exp(x − max) through a small stack buffer (x is not modified).</summary>
    private static float SumExp(ReadOnlySpan<float> x, float max)
    {
        const int chunk = 512;
        Span<float> tmp = stackalloc float[chunk];
        float sum = 0f;
        for (int c = 0; c < x.Length; c += chunk)
        {
            int len = Math.Min(chunk, x.Length - c);
            var t = tmp[..len];
            TensorPrimitives.Subtract(x.Slice(c, len), max, t);
            TensorPrimitives.Exp(t, t);
            sum += TensorPrimitives.Sum(t);
        }
        return sum;
    }
}
