using HftRuntime.Kernels;
using HftRuntime.Runtime;

namespace HftRuntime.Model;

public sealed partial class LlamaModel
{
    /// <summary>What one layer keeps from its forward pass for the backward pass.</summary>
    private sealed class LayerActivations
    {
        public Tensor Rstd1, Xn1, Q, K, V, Attn, Lse, XMid, Rstd2, Xn2, Gate, Up, H;
        /// <summary>bf16 copies of the matrix-product inputs (bf16 precision only; else empty).</summary>
        public Tensor Xn1B, AttnB, Xn2B, HB;
        /// <summary>The SwiGLU inputs in bf16, as the gate and up products store them (bf16 precision only; Gate, Up and H are then empty).</summary>
        public Tensor GateB, UpB;
        /// <summary>bf16 q, k, v (after RoPE) for a back-end that takes bf16 attention operands (else empty).</summary>
        public Tensor QB, KB, VB;
        /// <summary>What attention reads (q, k, v) and writes (o): QB, KB, VB, AttnB with bf16 attention, else Q, K, V, Attn.</summary>
        public Tensor AttnQ, AttnK, AttnV, AttnO;
    }

    /// <summary>
    /// Saved activations and scratch, reserved in the model's arena. A tensor that only a frozen matrix's weight
    /// gradient would read (the normed input of frozen q/k/v or gate/up, the SwiGLU output of a frozen down
    /// projection) is not kept: it goes to a shared scratch buffer instead. Without training, every layer shares one
    /// set and the residual stream alternates between two buffers. In bf16 precision the inputs of matrix products
    /// are kept in bf16 alone (the norms and SwiGLU write them so), the gate and up products store SwiGLU's inputs in
    /// bf16 (its backward pass writes the bf16 gradients over them), dh is stored in bf16, and the backward pass
    /// rounds each other output gradient into a bf16 scratch buffer before its two products. Where the
    /// back-end also takes bf16 attention operands (<see cref="Bf16Attention"/>), a layer keeps q, k, v and the
    /// attention output in bf16 alone: the q, k, v products store bf16 (RoPE rotates q and k in place), and the
    /// attention writes its output in bf16 directly; fp32 gradients of q, k, v exist only where the back-end does not
    /// fuse the attention backward pass with RoPE (<see cref="FusedAttentionBackward"/>).
    /// </summary>
    private sealed class Activations
    {
        public readonly Tensor Ids, Targets, RowScale, Positions, DocStart, RopeCos, RopeSin;
        public readonly Tensor[] Residual;
        public readonly LayerActivations[] Layers;
        public readonly Tensor FinalRstd, FinalXn, Logits, RowLosses, LossScalar;
        public readonly Tensor DRes, DXn, DQ, DK, DV, DAttn, DH;
        public readonly Tensor FinalXnB, LogitsB, DResB, DQB, DKB, DVB;
        public readonly long Bytes;
        /// <summary>bf16 precision on a back-end that takes bf16 q, k, v and o for this head dimension.</summary>
        public readonly bool Bf16Attention;
        /// <summary>
        /// Bf16Attention on a back-end that fuses the attention backward pass with RoPE (writing dq, dk, dv in bf16):
        /// no fp32 gradients of q, k, v are reserved then.
        /// </summary>
        public readonly bool FusedAttentionBackward;

        public Activations(DeviceArena arena, LlamaConfig c, LlamaModelOptions o, LayerWeights[] w)
        {
            long before = arena.ReservedBytes;
            long n = (long)o.Batch * o.Seq;
            int d = c.HiddenSize, f = c.IntermediateSize, qd = c.NumAttentionHeads * c.HeadDim, kvd = c.NumKeyValueHeads * c.HeadDim;
            int layers = c.NumHiddenLayers;
            bool train = o.Training;
            Tensor R(string name, long count, DType t = DType.F32) => arena.Reserve("act." + name, count, t);

            Ids = R("ids", n, DType.I32); Targets = R("targets", n, DType.I32); RowScale = R("row_scale", n);
            Positions = R("positions", n, DType.I32); DocStart = R("doc_start", n, DType.I32);
            RopeCos = R("rope.cos", (long)o.Seq * c.HeadDim / 2); RopeSin = R("rope.sin", (long)o.Seq * c.HeadDim / 2);

            var scratchD = R("scratch.d", n * d);
            bool bf16 = o.Precision == Precision.Bf16;
            // In bf16 the products write gate, up and dh in bf16 and SwiGLU reads them so: no fp32 [n, f] buffer at all.
            var scratchF = bf16 ? default : R("scratch.f", n * f);
            Tensor B(string name, long count) => R(name, count, DType.BF16);
            Tensor scratchDB = default, scratchQB = default, scratchFB = default;
            if (bf16) { scratchDB = B("scratch.d.bf16", n * d); scratchQB = B("scratch.q.bf16", n * qd); scratchFB = B("scratch.f.bf16", n * f); }
            Bf16Attention = bf16 && arena.Backend.TakesBf16AttentionInputs(c.HeadDim);
            FusedAttentionBackward = Bf16Attention && arena.Backend.FusesAttentionBackwardRope(c.HeadDim);
            Residual = new Tensor[layers + 1];
            if (train) for (int l = 0; l <= layers; l++) Residual[l] = R($"residual.{l}", n * d);
            else
            {
                var r0 = R("residual.even", n * d); var r1 = R("residual.odd", n * d);
                for (int l = 0; l <= layers; l++) Residual[l] = l % 2 == 0 ? r0 : r1;
            }

            // Without training, and with activation checkpointing, all layers share one set (refilled per layer).
            bool share = !train || o.CheckpointActivations;
            Layers = new LayerActivations[layers];
            LayerActivations? shared = null;
            for (int l = 0; l < layers; l++)
            {
                if (share && shared != null) { Layers[l] = shared; continue; }
                var lw = w[l];
                string p = share ? "layers." : $"layer.{l}.";
                bool anyQkv = train && (share || lw.Q.Trainable || lw.K.Trainable || lw.V.Trainable);
                bool anyGateUp = train && (share || lw.Gate.Trainable || lw.Up.Trainable);
                bool keepO = train && (share || lw.O.Trainable);
                bool keepH = train && (share || lw.Down.Trainable);
                var a = new LayerActivations
                {
                    Rstd1 = R(p + "rstd1", n),
                    Xn1 = anyQkv && !bf16 ? R(p + "xn1", n * d) : scratchD,
                    Q = Bf16Attention ? default : R(p + "q", n * qd), K = Bf16Attention ? default : R(p + "k", n * kvd),
                    V = Bf16Attention ? default : R(p + "v", n * kvd),
                    Attn = Bf16Attention ? default : R(p + "attn", n * qd), Lse = R(p + "lse", n * c.NumAttentionHeads),
                    XMid = R(p + "xmid", n * d), Rstd2 = R(p + "rstd2", n),
                    Xn2 = anyGateUp && !bf16 ? R(p + "xn2", n * d) : scratchD,
                    Gate = bf16 ? default : R(p + "gate", n * f), Up = bf16 ? default : R(p + "up", n * f),
                    H = keepH && !bf16 ? R(p + "h", n * f) : scratchF,
                };
                if (bf16)
                {
                    a.Xn1B = anyQkv ? B(p + "xn1.bf16", n * d) : scratchDB;
                    // With bf16 attention the attention backward reads the bf16 output too.
                    a.AttnB = keepO || (Bf16Attention && train) ? B(p + "attn.bf16", n * qd) : scratchQB;
                    if (Bf16Attention) { a.QB = B(p + "q.bf16", n * qd); a.KB = B(p + "k.bf16", n * kvd); a.VB = B(p + "v.bf16", n * kvd); }
                    a.Xn2B = anyGateUp ? B(p + "xn2.bf16", n * d) : scratchDB;
                    a.HB = keepH ? B(p + "h.bf16", n * f) : scratchFB;
                    a.GateB = B(p + "gate.bf16", n * f); a.UpB = B(p + "up.bf16", n * f);
                }
                (a.AttnQ, a.AttnK, a.AttnV, a.AttnO) = Bf16Attention ? (a.QB, a.KB, a.VB, a.AttnB) : (a.Q, a.K, a.V, a.Attn);
                Layers[l] = a;
                if (share) shared = a;
            }
            FinalRstd = R("final.rstd", n);
            FinalXn = R("final.xn", n * d);
            Logits = R("logits", (long)o.LogitRows * c.VocabSize);
            RowLosses = R("row_losses", n);
            LossScalar = R("loss", 1);
            if (train)
            {
                DRes = R("grad.residual", n * d); DXn = R("grad.xn", n * d);
                // The fp32 gradients of q, k, v, unless the attention backward writes them in bf16 (fused with RoPE).
                if (!FusedAttentionBackward) (DQ, DK, DV) = (R("grad.q", n * qd), R("grad.k", n * kvd), R("grad.v", n * kvd));
                // With bf16 attention the o projection's input gradient is stored in bf16, the attention backward's dO.
                DAttn = Bf16Attention ? B("grad.attn.bf16", n * qd) : R("grad.attn", n * qd);
                // The SwiGLU output is dead once the down projection's gradient is formed; in bf16 dh is stored in bf16.
                DH = bf16 ? B("grad.h.bf16", n * f) : scratchF;
            }
            if (bf16)
            {
                FinalXnB = B("final.xn.bf16", n * d);
                if (train)
                {
                    LogitsB = B("grad.logits.bf16", (long)o.LogitRows * c.VocabSize);
                    DResB = B("grad.residual.bf16", n * d);
                    DQB = B("grad.q.bf16", n * qd); DKB = B("grad.k.bf16", n * kvd); DVB = B("grad.v.bf16", n * kvd);
                }
            }
            Bytes = arena.ReservedBytes - before;
        }
    }
}
