namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    protected override void EmbeddingForwardCore(Tensor y, Tensor ids, Tensor table, int n, int dim, int vocab) => throw new NotImplementedException();
    protected override void EmbeddingBackwardCore(Tensor dTable, Tensor ids, Tensor dy, int n, int dim, int vocab) => throw new NotImplementedException();
    protected override void RmsNormForwardCore(Tensor y, Tensor rstd, Tensor x, Tensor w, int n, int dim, float eps) => throw new NotImplementedException();
    protected override void RmsNormBackwardCore(Tensor dx, Tensor dw, Tensor dy, Tensor x, Tensor w, Tensor rstd, int n, int dim) => throw new NotImplementedException();
    protected override void RopeCore(Tensor x, Tensor positions, Tensor cos, Tensor sin, int n, int heads, int headDim, int maxPositions, bool inverse) => throw new NotImplementedException();
    protected override void AttentionForwardCore(Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, int headDim, float scale) => throw new NotImplementedException();
    protected override void AttentionBackwardCore(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, int headDim, float scale) => throw new NotImplementedException();
    protected override void SwiGluForwardCore(Tensor h, Tensor gate, Tensor up) => throw new NotImplementedException();
    protected override void SwiGluBackwardCore(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up) => throw new NotImplementedException();
    protected override void CrossEntropyCore(Tensor logits, Tensor targets, Tensor rowScale, Tensor losses, int n, int vocab, bool writeGradient) => throw new NotImplementedException();
    protected override void AdamWCore(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor segments, int segmentCount, AdamWStep step, Tensor gradScale) => throw new NotImplementedException();
}
