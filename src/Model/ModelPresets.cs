namespace HftRuntime.Model;

/// <summary>Architectures for <c>hft init</c>; the vocabulary comes from the tokenizer.</summary>
public static class ModelPresets
{
    /// <summary>The preset names.</summary>
    public static readonly string[] Names = ["tiny", "small", "base"];

    /// <summary>
    /// tiny: d 64, 2 layers, 4 heads over 2 KV heads, FFN 176 (tests, seconds on a CPU); small: d 256, 4 layers, 4 heads,
    /// FFN 688 (minutes on a CPU); base: d 768, 12 layers, 12 heads, FFN 2048 (134M parameters at a 32000-token
    /// vocabulary: the benchmark model).
    /// </summary>
    public static LlamaConfig Create(string preset, int vocabSize, int? bosId, int? eosId)
    {
        var c = preset switch
        {
            "tiny" => new LlamaConfig { VocabSize = vocabSize, HiddenSize = 64, IntermediateSize = 176, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 512 },
            "small" => new LlamaConfig { VocabSize = vocabSize, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 4, NumAttentionHeads = 4, MaxPositionEmbeddings = 1024 },
            "base" => new LlamaConfig { VocabSize = vocabSize, HiddenSize = 768, IntermediateSize = 2048, NumHiddenLayers = 12, NumAttentionHeads = 12, MaxPositionEmbeddings = 2048 },
            _ => throw new ArgumentException($"unknown preset '{preset}'; expected one of: {string.Join(", ", Names)}"),
        };
        c = c with { BosTokenId = bosId, EosTokenId = eosId, RmsNormEps = 1e-5 };
        c.Validate();
        return c;
    }
}
