namespace HftRuntime.Model;

/// <summary>
/// FLOPs per training token of a Llama, counting matrix products and attention, and what freezing saves.
/// A linear layer with N weights costs 2N (forward) + 2N (input gradient) + 2N (weight gradient, trainable only).
/// Causal attention over a sequence of T tokens costs 2·2·headDim·heads·(T+1)/2 per token and layer forward
/// (QKᵀ and PV over (T+1)/2 keys on average) and 2.5 times that backward (scores recomputed, then dP, dQ, dK, dV).
/// The backward pass stops where nothing below needs a gradient, as <see cref="LlamaModel.Backward"/> does: with
/// frozen embeddings and a frozen first input norm, layer 0 forms no input gradient through q, k, v, and if those
/// are frozen as well, no attention backward and no gradient through o.
/// cost_bound = FLOPs(with the frozen set) / FLOPs(nothing frozen): the step-time ratio HFT/FFT can reach at best
/// when these FLOPs dominate.
/// </summary>
public static class LlamaCostModel
{
    /// <summary>Training FLOPs per token of <paramref name="config"/> at sequence length <paramref name="seq"/> with <paramref name="frozen"/>.</summary>
    public static double FlopsPerToken(LlamaConfig config, int seq, IReadOnlySet<string> frozen)
    {
        int d = config.HiddenSize, f = config.IntermediateSize, hd = config.HeadDim;
        double q = (double)config.NumAttentionHeads * hd * d, kv = (double)config.NumKeyValueHeads * hd * d;
        double attnForward = 2.0 * 2 * hd * config.NumAttentionHeads * (seq + 1) / 2.0;
        bool T(string name) => !frozen.Contains(name);
        double Linear(double n, bool trainable, bool needDx) => 2 * n + (needDx ? 2 * n : 0) + (trainable ? 2 * n : 0);

        var names = LlamaModel.TensorNames(config);
        bool embedTrainable = T("model.embed_tokens.weight");
        double total = 0;
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            var ln = names.Layers[l];
            bool needInputGrad = l > 0 || embedTrainable;
            bool needDxn = needInputGrad || T(ln.Norms[0]);
            bool needQkv = needDxn || T(ln.Attention[0]) || T(ln.Attention[1]) || T(ln.Attention[2]);
            total += Linear(q, T(ln.Attention[0]), needDxn) + Linear(kv, T(ln.Attention[1]), needDxn) + Linear(kv, T(ln.Attention[2]), needDxn);
            total += Linear(q, T(ln.Attention[3]), needQkv);
            total += attnForward * (needQkv ? 3.5 : 1.0);
            total += Linear((double)f * d, T(ln.Mlp[0]), true) + Linear((double)f * d, T(ln.Mlp[1]), true) + Linear((double)f * d, T(ln.Mlp[2]), true);
        }
        string head = config.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
        total += Linear((double)config.VocabSize * d, T(head), true);
        return total;
    }

    /// <summary>FLOPs with <paramref name="frozen"/> divided by FLOPs with nothing frozen.</summary>
    public static double CostBound(LlamaConfig config, int seq, IReadOnlySet<string> frozen) =>
        FlopsPerToken(config, seq, frozen) / FlopsPerToken(config, seq, new HashSet<string>());
}
