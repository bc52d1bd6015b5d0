using HftRuntime.Kernels;

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
        be.RmsNormForward(_act.FinalXn, _act.FinalRstd, _act.Residual[_layers.Length], _finalNorm.Value, n, d, eps);
        be.MatMul(_act.Logits, _act.FinalXn, _head.Value, n, v, d, transA: false, transB: true, accumulate: false);
        be.CrossEntropy(_act.Logits, _act.Targets, _act.RowScale, _act.RowLosses, n, v, writeGradient);
        _gradientInLogits = writeGradient;
    }

    private bool _gradientInLogits;

    /// <summary>
    /// One decoder layer: Residual[l + 1] from Residual[l], keeping what the backward pass reads in the layer's
    /// activation set (with activation checkpointing the one shared set, refilled again during the backward pass).
    /// </summary>
    private void ForwardLayer(int l)
    {
        var be = Backend;
        var c = Config;
        int n = _batch * _seq, d = c.HiddenSize, f = c.IntermediateSize, hd = c.HeadDim;
        int hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, qd = hq * hd, kvd = hkv * hd;
        float eps = (float)c.RmsNormEps;
        var w = _layers[l];
        var a = _act.Layers[l];
        var x = _act.Residual[l];
        be.RmsNormForward(a.Xn1, a.Rstd1, x, w.InputNorm.Value, n, d, eps);
        be.MatMul(a.Q, a.Xn1, w.Q.Value, n, qd, d, transA: false, transB: true, accumulate: false);
        be.MatMul(a.K, a.Xn1, w.K.Value, n, kvd, d, transA: false, transB: true, accumulate: false);
        be.MatMul(a.V, a.Xn1, w.V.Value, n, kvd, d, transA: false, transB: true, accumulate: false);
        be.Rope(a.Q, _act.Positions, _act.RopeCos, _act.RopeSin, n, hq, hd, Options.Seq, inverse: false);
        be.Rope(a.K, _act.Positions, _act.RopeCos, _act.RopeSin, n, hkv, hd, Options.Seq, inverse: false);
        be.AttentionForward(a.Attn, a.Lse, a.Q, a.K, a.V, DocStartOrEmpty, _batch, _seq, hq, hkv, hd, _attnScale);
        var xMid = a.XMid.Slice(0, n * d);
        be.MatMul(xMid, a.Attn, w.O.Value, n, d, qd, transA: false, transB: true, accumulate: false);
        be.AddInPlace(xMid, x.Slice(0, n * d));
        be.RmsNormForward(a.Xn2, a.Rstd2, xMid, w.PostNorm.Value, n, d, eps);
        be.MatMul(a.Gate, a.Xn2, w.Gate.Value, n, f, d, transA: false, transB: true, accumulate: false);
        be.MatMul(a.Up, a.Xn2, w.Up.Value, n, f, d, transA: false, transB: true, accumulate: false);
        be.SwiGluForward(a.H.Slice(0, n * f), a.Gate.Slice(0, n * f), a.Up.Slice(0, n * f));
        var next = _act.Residual[l + 1].Slice(0, n * d);
        be.MatMul(next, a.H, w.Down.Value, n, d, f, transA: false, transB: true, accumulate: false);
        be.AddInPlace(next, xMid);
    }
}
