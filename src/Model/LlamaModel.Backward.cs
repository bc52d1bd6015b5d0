using HftRuntime.Kernels;

namespace HftRuntime.Model;

public sealed partial class LlamaModel
{
    /// <summary>
    /// Back-propagates the objective Σ rowScale · loss of the last <see cref="Forward"/> and adds the gradient of
    /// every trainable parameter to its gradient buffer (call <see cref="ZeroGradients"/> at the start of an
    /// optimizer step). Frozen matrices pass the input gradient on but get no weight gradient; the backward pass
    /// stops where nothing trainable is left below it.
    /// </summary>
    public void Backward()
    {
        RequireInputs();
        if (!Options.Training) throw new InvalidOperationException("this model was created for inference only");
        var be = Backend;
        var c = Config;
        int n = _batch * _seq, d = c.HiddenSize, f = c.IntermediateSize, hd = c.HeadDim;
        int hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, qd = hq * hd, kvd = hkv * hd, v = c.VocabSize;
        if (!_gradientInLogits)
            be.CrossEntropy(_act.Logits, _act.Targets, _act.RowScale, _act.RowLosses, n, v, writeGradient: true);
        _gradientInLogits = false;

        var dRes = _act.DRes.Slice(0, n * d);
        be.Fill(dRes, 0f);
        be.MatMul(_act.DXn, _act.Logits, _head.Value, n, d, v, transA: false, transB: false, accumulate: false);
        if (_head.Trainable)
            be.MatMul(_head.Grad, _act.Logits, _act.FinalXn, v, d, n, transA: true, transB: false, accumulate: true);
        be.RmsNormBackward(dRes, _finalNorm.Grad, _act.DXn, _act.Residual[_layers.Length], _finalNorm.Value, _act.FinalRstd, n, d);

        for (int l = _layers.Length - 1; l >= 0; l--)
        {
            // With activation checkpointing every layer shares one activation set: refill it from the layer's input
            // (the last layer's is still there from the forward pass).
            if (Options.CheckpointActivations && l < _layers.Length - 1) ForwardLayer(l);
            var w = _layers[l];
            var a = _act.Layers[l];
            // MLP: Residual[l+1] = xMid + down(silu(gate(xn2)) · up(xn2)), xn2 = norm(xMid)
            var dh = _act.DH.Slice(0, n * f);
            be.MatMul(dh, dRes, w.Down.Value, n, f, d, transA: false, transB: false, accumulate: false);
            if (w.Down.Trainable) be.MatMul(w.Down.Grad, dRes, a.H, d, f, n, transA: true, transB: false, accumulate: true);
            var dGate = a.Gate.Slice(0, n * f);
            var dUp = a.Up.Slice(0, n * f);
            be.SwiGluBackward(dGate, dUp, dh, dGate, dUp);
            be.MatMul(_act.DXn, dGate, w.Gate.Value, n, d, f, transA: false, transB: false, accumulate: false);
            be.MatMul(_act.DXn, dUp, w.Up.Value, n, d, f, transA: false, transB: false, accumulate: true);
            if (w.Gate.Trainable) be.MatMul(w.Gate.Grad, dGate, a.Xn2, f, d, n, transA: true, transB: false, accumulate: true);
            if (w.Up.Trainable) be.MatMul(w.Up.Grad, dUp, a.Xn2, f, d, n, transA: true, transB: false, accumulate: true);
            be.RmsNormBackward(dRes, w.PostNorm.Grad, _act.DXn, a.XMid, w.PostNorm.Value, a.Rstd2, n, d);

            // Attention: xMid = x + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))), xn1 = norm(x)
            bool needInputGrad = l > 0 || _embed.Trainable;
            bool needDxn = needInputGrad || w.InputNorm.Trainable;
            bool needQkv = needDxn || w.Q.Trainable || w.K.Trainable || w.V.Trainable;
            if (w.O.Trainable) be.MatMul(w.O.Grad, dRes, a.Attn, d, qd, n, transA: true, transB: false, accumulate: true);
            if (!needQkv) continue;
            be.MatMul(_act.DAttn, dRes, w.O.Value, n, qd, d, transA: false, transB: false, accumulate: false);
            be.AttentionBackward(_act.DQ, _act.DK, _act.DV, _act.DAttn, a.Attn, a.Lse, a.Q, a.K, a.V, DocStartOrEmpty,
                _batch, _seq, hq, hkv, hd, _attnScale);
            be.Rope(_act.DQ, _act.Positions, _act.RopeCos, _act.RopeSin, n, hq, hd, Options.Seq, inverse: true);
            be.Rope(_act.DK, _act.Positions, _act.RopeCos, _act.RopeSin, n, hkv, hd, Options.Seq, inverse: true);
            if (w.Q.Trainable) be.MatMul(w.Q.Grad, _act.DQ, a.Xn1, qd, d, n, transA: true, transB: false, accumulate: true);
            if (w.K.Trainable) be.MatMul(w.K.Grad, _act.DK, a.Xn1, kvd, d, n, transA: true, transB: false, accumulate: true);
            if (w.V.Trainable) be.MatMul(w.V.Grad, _act.DV, a.Xn1, kvd, d, n, transA: true, transB: false, accumulate: true);
            if (!needDxn) continue;
            be.MatMul(_act.DXn, _act.DQ, w.Q.Value, n, d, qd, transA: false, transB: false, accumulate: false);
            be.MatMul(_act.DXn, _act.DK, w.K.Value, n, d, kvd, transA: false, transB: false, accumulate: true);
            be.MatMul(_act.DXn, _act.DV, w.V.Value, n, d, kvd, transA: false, transB: false, accumulate: true);
            be.RmsNormBackward(dRes, w.InputNorm.Grad, _act.DXn, _act.Residual[l], w.InputNorm.Value, a.Rstd1, n, d);
        }
        if (_embed.Trainable) be.EmbeddingBackward(_embed.Grad, _act.Ids, dRes, n, d, v);
    }
}
