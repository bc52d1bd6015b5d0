namespace HftRuntime.Kernels;

public abstract partial class Backend
{
    /// <summary>
    /// Whether <see cref="AttentionBackwardRope"/> runs on this back-end at this head dimension (the base back-end:
    /// never; callers then run <see cref="AttentionBackward"/> and <see cref="Rope"/> with inverse: true in turn).
    /// </summary>
    public virtual bool FusesAttentionBackwardRope(int headDim) => false;

    /// <summary>
    /// <see cref="AttentionBackward"/> with bf16 operands, then the inverse rotation of dq and dk as
    /// <see cref="Rope"/>(inverse: true) applies it (positions, cos, sin and maxPositions as there): dq and dk come out
    /// as the gradients of q and k before their rotation. dq, dk and dv are all F32, or all BF16 (each gradient
    /// rounded once, at the end), so that a back-end can write them where it stores them, without the fp32 passes
    /// of the separate operations. Only where <see cref="FusesAttentionBackwardRope"/>.
    /// </summary>
    public void AttentionBackwardRope(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim, float scale, Tensor positions, Tensor cos, Tensor sin, int maxPositions)
    {
        if (!FusesAttentionBackwardRope(headDim))
            throw new NotSupportedException($"back-end '{Name}' does not fuse the attention backward pass with RoPE at head dimension {headDim}: call AttentionBackward, then Rope with inverse: true");
        Own(dq, nameof(dq)); Own(dk, nameof(dk)); Own(dv, nameof(dv));
        if (dq.Type is not (DType.F32 or DType.BF16)) throw new ArgumentException($"dq '{dq.Name}' must be F32 or BF16, is {dq.Type}", nameof(dq));
        if (dk.Type != dq.Type || dv.Type != dq.Type)
            throw new ArgumentException($"dq, dk and dv must have one type: '{dq.Name}' is {dq.Type}, '{dk.Name}' {dk.Type}, '{dv.Name}' {dv.Type}", nameof(dk));
        CheckAttentionBackward(dq, dk, dv, dO, o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, headDim);
        Pos(maxPositions, nameof(maxPositions));
        I32(positions, nameof(positions)); F32(cos, nameof(cos)); F32(sin, nameof(sin));
        Need(positions, (long)batch * seq, nameof(positions));
        Need(cos, (long)maxPositions * headDim / 2, nameof(cos)); Need(sin, (long)maxPositions * headDim / 2, nameof(sin));
        long t0 = BeginOp();
        AttentionBackwardRopeCore(dq, dk, dv, dO, o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, headDim, scale, positions, cos, sin, maxPositions);
        EndOp("attention_backward", t0);
    }

    /// <summary>Implementation of <see cref="AttentionBackwardRope"/> (called only where <see cref="FusesAttentionBackwardRope"/>).</summary>
    protected virtual void AttentionBackwardRopeCore(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim, float scale, Tensor positions, Tensor cos, Tensor sin, int maxPositions) =>
        throw new NotSupportedException($"back-end '{Name}' does not fuse the attention backward pass with RoPE");
}
