using HftRuntime.Kernels;
using HftRuntime.Runtime;

namespace HftRuntime.Model;

public sealed partial class LlamaModel
{
    /// <summary>
    /// Runs the forward pass on the current inputs: logits and per-position losses. With
    /// <paramref name="writeGradient"/> the cross-entropy overwrites the logits with the gradient of the objective
    /// (Σ rowScale · loss) so that <see cref="Backward"/> can follow without a second pass over the vocabulary.
    /// </summary>
    public void Forward(bool writeGradient = false)
    {
        RequireInputs();
        if (writeGradient && !Options.Training) throw new InvalidOperationException("this model was created for inference only");
        var be = Backend;
        var c = Config;
        int n = _batch * _seq, d = c.HiddenSize, v = c.VocabSize;
        float eps = (float)c.RmsNormEps;

        be.EmbeddingForward(_act.Residual[0], _act.Ids, _embed.Value, n, d, v);
        for (int l = 0; l < _layers.Length; l++) ForwardLayer(l);
        // The head's input in the head's compute precision, written by the norm itself, which first completes the last
        // residual add (see ForwardLayer).
        bool headBf16 = _head.Compute.Type == DType.BF16;
        be.RmsNormForward(headBf16 ? default : _act.FinalXn, _act.FinalRstd, _act.Residual[_layers.Length], _finalNorm.Value, n, d, eps,
            residual: PendingResidual(_layers.Length, n * d), yBf16: headBf16 ? _act.FinalXnB : default);
        HeadForward(n, writeGradient);
    }

    /// <summary>
    /// The operand a matrix product with <paramref name="weight"/> reads for the fp32 values <paramref name="x"/>
    /// (their first <paramref name="count"/> elements): x itself when the weight computes in fp32, else x rounded to
    /// bfloat16 into <paramref name="xBf16"/>.
    /// </summary>
    private Tensor Operand(Tensor x, Tensor xBf16, int count, Parameter weight)
    {
        if (weight.Compute.Type == DType.F32) return x;
        Backend.ToBf16(xBf16.Slice(0, count), x.Slice(0, count));
        return xBf16;
    }

    /// <summary>
    /// The part of Residual[<paramref name="l"/>] that the norm reading it adds in place: the previous layer's xMid
    /// (still in its activation set, shared or not: nothing overwrites it before that norm), since a layer leaves only
    /// its down projection there; empty for the embedding (l = 0).
    /// </summary>
    private Tensor PendingResidual(int l, int count) => l > 0 ? _act.Layers[l - 1].XMid.Slice(0, count) : default;

    /// <summary>
    /// One decoder layer: Residual[l + 1] from Residual[l], keeping what the backward pass reads in the layer's
    /// activation set (with activation checkpointing the one shared set, refilled again during the backward pass).
    /// The residual adds happen inside the norms: the input norm first adds the previous layer's xMid to Residual[l]
    /// in place (the layer below wrote only its down projection there; the final norm does the same for the last
    /// layer), the post-attention norm adds the layer's input to xMid. With <paramref name="refill"/> (that refill)
    /// Residual[l] holds its sum already, and it stops after SwiGLU: the backward pass reads nothing the down
    /// projection produces.
    /// </summary>
    private void ForwardLayer(int l, bool refill = false)
    {
        var be = Backend;
        var c = Config;
        int n = _batch * _seq, d = c.HiddenSize, f = c.IntermediateSize, hd = c.HeadDim;
        int hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, qd = hq * hd, kvd = hkv * hd;
        float eps = (float)c.RmsNormEps;
        var w = _layers[l];
        var a = _act.Layers[l];
        var x = _act.Residual[l];
        // In bf16 the norms and SwiGLU write the bf16 operands of the next products directly (no fp32 copy), and the
        // post-attention norm adds the residual in the same pass.
        bool bf16 = Options.Precision == Precision.Bf16;
        be.RmsNormForward(bf16 ? default : a.Xn1, a.Rstd1, x, w.InputNorm.Value, n, d, eps, residual: refill ? default : PendingResidual(l, n * d),
            yBf16: bf16 ? a.Xn1B : default);
        var xn1 = bf16 ? a.Xn1B : a.Xn1;
        // With bf16 attention operands the q, k, v products store them in bf16 (what the layer keeps), and RoPE rotates
        // q and k there, in place.
        bool bf16Attention = _act.Bf16Attention;
        var (q, k, v) = bf16Attention ? (a.QB.Slice(0, n * qd), a.KB.Slice(0, n * kvd), a.VB.Slice(0, n * kvd)) : (a.Q, a.K, a.V);
        if (bf16Attention)
        {
            // The product and the rotation in one call, which a back-end may run as one pass.
            be.MatMulRope(q, xn1, w.Q.Compute, n, qd, d, _act.Positions, _act.RopeCos, _act.RopeSin, hq, hd, Options.Seq);
            be.MatMulRope(k, xn1, w.K.Compute, n, kvd, d, _act.Positions, _act.RopeCos, _act.RopeSin, hkv, hd, Options.Seq);
        }
        else
        {
            be.MatMul(q, xn1, w.Q.Compute, n, qd, d, transA: false, transB: true, accumulate: false);
            be.MatMul(k, xn1, w.K.Compute, n, kvd, d, transA: false, transB: true, accumulate: false);
            be.Rope(q, _act.Positions, _act.RopeCos, _act.RopeSin, n, hq, hd, Options.Seq, inverse: false);
            be.Rope(k, _act.Positions, _act.RopeCos, _act.RopeSin, n, hkv, hd, Options.Seq, inverse: false);
        }
        be.MatMul(v, xn1, w.V.Compute, n, kvd, d, transA: false, transB: true, accumulate: false);
        be.AttentionForward(a.AttnO, a.Lse, a.AttnQ, a.AttnK, a.AttnV, DocStartOrEmpty, _batch, _seq, hq, hkv, hd, _attnScale, bf16);
        var xMid = a.XMid.Slice(0, n * d);
        // With bf16 attention its output already is the o projection's bf16 operand.
        var attn = bf16Attention ? a.AttnB : Operand(a.Attn, a.AttnB, n * qd, w.O);
        be.MatMul(xMid, attn, w.O.Compute, n, d, qd, transA: false, transB: true, accumulate: false);
        be.RmsNormForward(bf16 ? default : a.Xn2, a.Rstd2, xMid, w.PostNorm.Value, n, d, eps, residual: x.Slice(0, n * d), yBf16: bf16 ? a.Xn2B : default);
        var xn2 = bf16 ? a.Xn2B : a.Xn2;
        // In bf16 the gate and up products store bf16 (what the backward pass keeps) and h comes from them: one call,
        // which a back-end may run as one pass.
        if (bf16) be.MatMulSwiGlu(a.HB.Slice(0, n * f), a.GateB.Slice(0, n * f), a.UpB.Slice(0, n * f), xn2, w.Gate.Compute, w.Up.Compute, n, f, d);
        else
        {
            var (gate, up) = (a.Gate.Slice(0, n * f), a.Up.Slice(0, n * f));
            be.MatMul(gate, xn2, w.Gate.Compute, n, f, d, transA: false, transB: true, accumulate: false);
            be.MatMul(up, xn2, w.Up.Compute, n, f, d, transA: false, transB: true, accumulate: false);
            be.SwiGluForward(a.H.Slice(0, n * f), gate, up);
        }
        if (refill) return;
        // Only the down projection: the next norm adds xMid.
        be.MatMul(_act.Residual[l + 1].Slice(0, n * d), bf16 ? a.HB : a.H, w.Down.Compute, n, d, f, transA: false, transB: true, accumulate: false);
    }
}
