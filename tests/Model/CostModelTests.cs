using HftRuntime.Model;
using HftRuntime.Runtime;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

[TestFixture]
public sealed class CostModelTests
{
    private static readonly LlamaConfig Base134M = new()
    {
        VocabSize = 32000, HiddenSize = 768, IntermediateSize = 2048, NumHiddenLayers = 12, NumAttentionHeads = 12,
    };

    [Test]
    public void NothingFrozenIsOne() => Assert.That(LlamaCostModel.CostBound(Base134M, 1024, new HashSet<string>()), Is.EqualTo(1.0));

    [Test]
    public void TheBenchmarkModelWithAnHftDrawIsAbout088()
    {
        // DESIGN.md: about 0.87-0.88 for a 134M model with a 32000-token vocabulary.
        var frozen = FreezePolicy.Hft(1).SelectFrozen(LlamaModel.TensorNames(Base134M));
        Assert.That(LlamaCostModel.CostBound(Base134M, 1024, frozen), Is.InRange(0.87, 0.89));
    }

    [Test]
    public void HandCountForOneLayer()
    {
        // d 8, FFN 16, 2 heads of 4, vocab 10, seq 3; freeze q and gate.
        var c = new LlamaConfig { VocabSize = 10, HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2 };
        double attn = 2.0 * 2 * 4 * 2 * (3 + 1) / 2.0;                      // 64 forward
        double full = 6 * (4 * 64) + 6 * (3 * 128) + attn * 3.5 + 6 * 80;  // matrices, attention, head
        Assert.That(LlamaCostModel.FlopsPerToken(c, 3, new HashSet<string>()), Is.EqualTo(full));
        var frozen = new HashSet<string> { "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.gate_proj.weight" };
        Assert.That(LlamaCostModel.FlopsPerToken(c, 3, frozen), Is.EqualTo(full - 2 * 64 - 2 * 128));
        // Frozen embeddings and first-layer input norm: no input gradient through q, k, v of layer 0.
        frozen.UnionWith(["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"]);
        Assert.That(LlamaCostModel.FlopsPerToken(c, 3, frozen), Is.EqualTo(full - 2 * 64 - 2 * 128 - 3 * 2 * 64));
    }
}
