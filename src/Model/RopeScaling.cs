namespace HftRuntime.Model;

/// <summary>
/// Llama 3 ("llama3") RoPE frequency scaling, as Hugging Face's <c>_compute_llama3_parameters</c> applies it:
/// wavelengths longer than <c>OriginalMaxPositionEmbeddings / LowFreqFactor</c> are slowed down by
/// <see cref="Factor"/>, those shorter than <c>OriginalMaxPositionEmbeddings / HighFreqFactor</c> are kept, and
/// the band in between is interpolated smoothly.
/// </summary>
/// <param name="Factor">The scaling factor ("factor"; 8 for Llama 3.1).</param>
/// <param name="LowFreqFactor">"low_freq_factor" (1 for Llama 3.1).</param>
/// <param name="HighFreqFactor">"high_freq_factor" (4 for Llama 3.1).</param>
/// <param name="OriginalMaxPositionEmbeddings">"original_max_position_embeddings": the pre-training context (8192 for Llama 3.1).</param>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    /// <summary>The <c>rope_type</c> spelling.</summary>
    public const string RopeType = "llama3";
}
