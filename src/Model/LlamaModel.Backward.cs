using HftRuntime.Kernels;
using HftRuntime.Runtime;

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
        HeadBackward(n);

        var dRes = _act.DRes.Slice(0, n * d);
        be.Fill(dRes, 0f);
        // dResB: the bf16 copy of dRes that the last norm backward wrote with it (empty where it wrote none).
        var dResB = DResBf16For(_layers[^1].Down, n * d);
        be.RmsNormBackward(dRes, _finalNorm.Grad, _act.DXn, _act.Residual[_layers.Length], _finalNorm.Value, _act.FinalRstd, n, d, dResB);

        for (int l = _layers.Length - 1; l >= 0; l--)
        {
            // With activation checkpointing every layer shares one activation set: refill it from the layer's input
            // (the last layer's is still there from the forward pass).
            if (Options.CheckpointActivations && l < _layers.Length - 1) ForwardLayer(l, refill: true);
            var w = _layers[l];
            var a = _act.Layers[l];
            // MLP: Residual[l+1] = xMid + down(silu(gate(xn2)) · up(xn2)), xn2 = norm(xMid); dh in bf16 in bf16 precision.
            var dh = _act.DH.Slice(0, n * f);
            var dOut = DResOperand(dRes, dResB, n * d, w.Down);
            be.MatMul(dh, dOut, w.Down.Compute, n, f, d, transA: false, transB: false, accumulate: false);
            if (w.Down.Trainable) be.MatMul(w.Down.Grad, dOut, Saved(a.H, a.HB, w.Down), d, f, n, transA: true, transB: false, accumulate: true);
            // The gradients overwrite the SwiGLU inputs: in bf16 the bf16 inputs, giving the products' bf16 operands.
            bool bf16 = Options.Precision == Precision.Bf16;
            var dGateOp = (bf16 ? a.GateB : a.Gate).Slice(0, n * f);
            var dUpOp = (bf16 ? a.UpB : a.Up).Slice(0, n * f);
            be.SwiGluBackward(dGateOp, dUpOp, dh, dGateOp, dUpOp);
            // dXn2 = dGate·W_gate + dUp·W_up: one launch where the back-end sums products so.
            be.MatMulSum(_act.DXn, n, d, transA: false, transB: false, accumulate: false, new(dGateOp, w.Gate.Compute, f), new(dUpOp, w.Up.Compute, f));
            if (w.Gate.Trainable) be.MatMul(w.Gate.Grad, dGateOp, Saved(a.Xn2, a.Xn2B, w.Gate), f, d, n, transA: true, transB: false, accumulate: true);
            if (w.Up.Trainable) be.MatMul(w.Up.Grad, dUpOp, Saved(a.Xn2, a.Xn2B, w.Up), f, d, n, transA: true, transB: false, accumulate: true);
            dResB = DResBf16For(w.O, n * d);
            be.RmsNormBackward(dRes, w.PostNorm.Grad, _act.DXn, a.XMid, w.PostNorm.Value, a.Rstd2, n, d, dResB);

            // Attention: xMid = x + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))), xn1 = norm(x)
            bool needInputGrad = l > 0 || _embed.Trainable;
            bool needDxn = needInputGrad || w.InputNorm.Trainable;
            bool needQkv = needDxn || w.Q.Trainable || w.K.Trainable || w.V.Trainable;
            var dMid = DResOperand(dRes, dResB, n * d, w.O);
            if (w.O.Trainable) be.MatMul(w.O.Grad, dMid, Saved(a.Attn, a.AttnB, w.O), d, qd, n, transA: true, transB: false, accumulate: true);
            if (!needQkv) continue;
            be.MatMul(_act.DAttn, dMid, w.O.Compute, n, qd, d, transA: false, transB: false, accumulate: false);
            var (dq, dk, dv) = AttentionGradients(w, a, n);
            if (w.Q.Trainable) be.MatMul(w.Q.Grad, dq, Saved(a.Xn1, a.Xn1B, w.Q), qd, d, n, transA: true, transB: false, accumulate: true);
            if (w.K.Trainable) be.MatMul(w.K.Grad, dk, Saved(a.Xn1, a.Xn1B, w.K), kvd, d, n, transA: true, transB: false, accumulate: true);
            if (w.V.Trainable) be.MatMul(w.V.Grad, dv, Saved(a.Xn1, a.Xn1B, w.V), kvd, d, n, transA: true, transB: false, accumulate: true);
            if (!needDxn) continue;
            be.MatMulSum(_act.DXn, n, d, transA: false, transB: false, accumulate: false,
                new(dq, w.Q.Compute, qd), new(dk, w.K.Compute, kvd), new(dv, w.V.Compute, kvd));
            dResB = DResBf16For(l > 0 ? _layers[l - 1].Down : null, n * d);
            be.RmsNormBackward(dRes, w.InputNorm.Grad, _act.DXn, _act.Residual[l], w.InputNorm.Value, a.Rstd1, n, d, dResB);
        }
        if (_embed.Trainable) be.EmbeddingBackward(_embed.Grad, _act.Ids, dRes, n, d, v);
    }

    /// <summary>
    /// The attention's backward pass from dO = DAttn: the products' operands dq and dk (rotated back by RoPE) and dv.
    /// Where the back-end fuses it (<see cref="Activations.FusedAttentionBackward"/>), one call rotates
    /// and rounds the gradients as the attention kernels store them; else the attention writes fp32 gradients, the
    /// inverse rotation writes the bf16 operands of dq and dk in the same pass, and dv is rounded (in bf16).
    /// </summary>
    private (Tensor Dq, Tensor Dk, Tensor Dv) AttentionGradients(LayerWeights w, LayerActivations a, int n)
    {
        var be = Backend;
        var c = Config;
        int hd = c.HeadDim, hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, qd = hq * hd, kvd = hkv * hd;
        bool bf16 = Options.Precision == Precision.Bf16;
        if (_act.FusedAttentionBackward)
        {
            // bf16 precision: every layer matrix computes in bf16 (trainable ones from their bf16 copy), so dq, dk, dv
            // in bf16 are their products' operands.
            be.AttentionBackwardRope(_act.DQB, _act.DKB, _act.DVB, _act.DAttn, a.AttnO, a.Lse, a.AttnQ, a.AttnK, a.AttnV, DocStartOrEmpty,
                _batch, _seq, hq, hkv, hd, _attnScale, _act.Positions, _act.RopeCos, _act.RopeSin, Options.Seq);
            return (_act.DQB, _act.DKB, _act.DVB);
        }
        be.AttentionBackward(_act.DQ, _act.DK, _act.DV, _act.DAttn, a.AttnO, a.Lse, a.AttnQ, a.AttnK, a.AttnV, DocStartOrEmpty,
            _batch, _seq, hq, hkv, hd, _attnScale, bf16);
        var dq = bf16 ? _act.DQB : _act.DQ;
        var dk = bf16 ? _act.DKB : _act.DK;
        be.Rope(_act.DQ, _act.Positions, _act.RopeCos, _act.RopeSin, n, hq, hd, Options.Seq, inverse: true, xBf16: bf16 ? dq.Slice(0, n * qd) : default);
        be.Rope(_act.DK, _act.Positions, _act.RopeCos, _act.RopeSin, n, hkv, hd, Options.Seq, inverse: true, xBf16: bf16 ? dk.Slice(0, n * kvd) : default);
        return (dq, dk, Operand(_act.DV, _act.DVB, n * kvd, w.V));
    }

    /// <summary>
    /// Where the norm backward that updates dRes also writes its bf16 copy: the next product's operand, when that
    /// product's weight computes in bf16 (empty otherwise); <see cref="DResOperand"/> then takes it as it is.
    /// </summary>
    private Tensor DResBf16For(Parameter? next, int count) => next?.Compute.Type == DType.BF16 ? _act.DResB.Slice(0, count) : default;

    /// <summary>
    /// The residual gradient as the operand of a product with <paramref name="weight"/>: dRes in fp32, or its bf16
    /// copy dResB, which the last norm backward wrote (or, where it wrote none, dRes rounded here).
    /// </summary>
    private Tensor DResOperand(Tensor dRes, Tensor dResB, int count, Parameter weight)
    {
        if (weight.Compute.Type == DType.F32) return dRes;
        return dResB.IsEmpty ? Operand(dRes, _act.DResB, count, weight) : dResB;
    }

    /// <summary>The saved forward operand of a weight's gradient: the fp32 activation, or its bf16 copy when the weight computes in bf16.</summary>
    private static Tensor Saved(Tensor x, Tensor xBf16, Parameter weight) => weight.Compute.Type == DType.F32 ? x : xBf16;
}
