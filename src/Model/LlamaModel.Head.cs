using HftRuntime.Kernels;

namespace HftRuntime.Model;

public sealed partial class LlamaModel
{
    // The LM head and the loss. With the whole batch at once (the default), the forward pass leaves the logits (or,
    // with a gradient, the gradient of the objective with respect to them) for the backward pass. With
    // LossChunkRows, only one chunk of logits exists: each chunk's gradient is back-propagated through the head as
    // soon as it is formed (in the forward pass when it writes the gradient, else again in the backward pass).

    private bool _gradientInLogits;
    private bool _headBackwardDone;

    /// <summary>Where the cross-entropy writes the logits' gradient in bf16 (a bf16 head), else empty: in place in the logits.</summary>
    private Tensor HeadGradientBf16 => _head.Compute.Type == DType.BF16 ? _act.LogitsB : default;

    /// <summary>The head's input (the final norm's output) in the head's compute precision.</summary>
    private Tensor HeadInput => _head.Compute.Type == DType.BF16 ? _act.FinalXnB : _act.FinalXn;

    /// <summary>Logits and per-row losses of all <paramref name="n"/> rows; with a gradient, see the class comment.</summary>
    private void HeadForward(int n, bool writeGradient)
    {
        _headBackwardDone = false;
        _gradientInLogits = false;
        int chunk = Math.Min(n, Options.LogitRows);
        for (int r0 = 0; r0 < n; r0 += chunk)
        {
            int rows = Math.Min(chunk, n - r0);
            HeadChunk(r0, rows, writeGradient);
            if (writeGradient && chunk < n) HeadBackwardRows(r0, rows);
        }
        if (writeGradient) { if (chunk < n) _headBackwardDone = true; else _gradientInLogits = true; }
    }

    /// <summary>DXn and the head's gradient from the objective, unless the forward pass did it already.</summary>
    private void HeadBackward(int n)
    {
        if (_headBackwardDone) { _headBackwardDone = false; return; }
        int chunk = Math.Min(n, Options.LogitRows);
        for (int r0 = 0; r0 < n; r0 += chunk)
        {
            int rows = Math.Min(chunk, n - r0);
            if (!_gradientInLogits) HeadChunk(r0, rows, writeGradient: true);
            HeadBackwardRows(r0, rows);
        }
        _gradientInLogits = false;
    }

    /// <summary>
    /// Rows [r0, r0 + rows): logits into the logits buffer (from its start), losses, and optionally the gradient. With
    /// a gradient and a bf16 head, the head product stores the logits in bf16 (LogitsB) and the cross-entropy writes
    /// their gradient over them, the operand of the head's backward products (half the bytes of fp32 logits, each
    /// read twice; the loss is then that of the bf16-rounded logits, as under PyTorch's autocast); the fp32 logits
    /// buffer is not written.
    /// </summary>
    private void HeadChunk(int r0, int rows, bool writeGradient)
    {
        int d = Config.HiddenSize, v = Config.VocabSize;
        bool bf16Logits = writeGradient && !HeadGradientBf16.IsEmpty;
        var logits = (bf16Logits ? _act.LogitsB : _act.Logits).Slice(0, rows * v);
        Backend.MatMul(logits, HeadInput.Slice((long)r0 * d, rows * d), _head.Compute, rows, v, d, transA: false, transB: true, accumulate: false);
        Backend.CrossEntropy(logits, _act.Targets.Slice(r0, rows), _act.RowScale.Slice(r0, rows), _act.RowLosses.Slice(r0, rows),
            rows, v, writeGradient);
    }

    /// <summary>DXn rows [r0, r0 + rows) and the head's gradient from the gradient in the logits buffer (its first rows).</summary>
    private void HeadBackwardRows(int r0, int rows)
    {
        int d = Config.HiddenSize, v = Config.VocabSize;
        var g = (HeadGradientBf16.IsEmpty ? _act.Logits : _act.LogitsB).Slice(0, rows * v);
        Backend.MatMul(_act.DXn.Slice((long)r0 * d, rows * d), g, _head.Compute, rows, d, v, transA: false, transB: false, accumulate: false);
        if (_head.Trainable)
            Backend.MatMul(_head.Grad, g, HeadInput.Slice((long)r0 * d, rows * d), v, d, rows, transA: true, transB: false, accumulate: true);
    }
}
