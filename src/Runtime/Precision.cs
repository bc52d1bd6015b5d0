namespace HftRuntime.Runtime;

/// <summary>The arithmetic a model trains in.</summary>
public enum Precision
{
    /// <summary>float32 everywhere: the reference, what <c>hft verify</c> checks to float rounding.</summary>
    Fp32,

    /// <summary>
    /// Mixed precision: matrix products take bfloat16 operands (weights and the activations or gradients they
    /// multiply) and accumulate in float32, on tensor cores where the back-end has them. Trainable tensors keep a
    /// float32 master copy and float32 AdamW state, from which each step writes the bfloat16 copy; frozen matrices
    /// are held in bfloat16 alone. Norms, embeddings, softmax, attention and the loss stay in float32.
    /// </summary>
    Bf16,
}

/// <summary>Parsing and naming of <see cref="Precision"/> values ("fp32", "bf16").</summary>
public static class PrecisionNames
{
    /// <summary>The command-line name.</summary>
    public static string Name(this Precision p) => p == Precision.Bf16 ? "bf16" : "fp32";

    /// <summary>Parses "fp32" or "bf16" (case-insensitive).</summary>
    public static Precision Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => Precision.Fp32,
        "bf16" or "bfloat16" => Precision.Bf16,
        _ => throw new ArgumentException($"unknown precision '{text}': expected fp32 or bf16"),
    };

    /// <summary>
    /// Parses "fp32", "bf16" or "auto" for a back-end: auto is bf16 on CUDA (tensor cores; fp32 runs there on the CUDA
    /// cores at a fraction of the speed) and fp32 on every other back-end (the CPU back-end rounds bf16 operands in
    /// software: slower there, 19.7 against 17.4 ms per fine-tuning step of the quick demo, and less exact).
    /// </summary>
    public static Precision Resolve(string text, string backendName) =>
        IsAuto(text) ? (backendName == "cuda" ? Precision.Bf16 : Precision.Fp32) : Parse(text);

    /// <summary>Whether <paramref name="text"/> is "auto" (case-insensitive).</summary>
    public static bool IsAuto(string? text) => string.Equals(text?.Trim(), "auto", StringComparison.OrdinalIgnoreCase);
}
