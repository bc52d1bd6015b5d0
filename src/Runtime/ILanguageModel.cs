using HftRuntime.Kernels;

namespace HftRuntime.Runtime;

/// <summary>
/// What the trainer, the objectives and the evaluator need from a causal language model: inputs in, per-position
/// losses out, gradients into its <see cref="ParameterStore"/>. <c>HftRuntime.Model.LlamaModel</c> implements it.
/// </summary>
public interface ILanguageModel : IDisposable
{
    /// <summary>The back-end the model runs on.</summary>
    Backend Backend { get; }

    /// <summary>Weights, gradients, optimizer state.</summary>
    ParameterStore Parameters { get; }

    /// <summary>Largest batch (sequences) per forward pass.</summary>
    int MaxBatch { get; }

    /// <summary>Largest sequence length.</summary>
    int MaxSeq { get; }

    /// <summary>Vocabulary size.</summary>
    int VocabSize { get; }

    /// <summary>Bytes of device memory held for saved activations and scratch.</summary>
    long ActivationBytes { get; }

    /// <summary>Per-position cross-entropy of the last forward pass.</summary>
    Tensor RowLosses { get; }

    /// <summary>Logits of the last forward pass, [rows, vocab] (the gradient after a backward pass).</summary>
    Tensor Logits { get; }

    /// <summary>Uploads a batch.</summary>
    void SetInputs(ModelInputs inputs);

    /// <summary>Replaces the per-position loss weights of the current batch.</summary>
    void SetRowScale(ReadOnlySpan<float> rowScale);

    /// <summary>Forward pass; with <paramref name="writeGradient"/> the loss gradient is formed in place for <see cref="Backward"/>.</summary>
    void Forward(bool writeGradient = false);

    /// <summary>Adds the gradient of Σ rowScale · loss to every trainable parameter's gradient.</summary>
    void Backward();

    /// <summary>Sets every gradient to zero.</summary>
    void ZeroGradients();

    /// <summary>Σ rowLoss · rowScale of the last forward pass (one scalar read).</summary>
    float Loss();
}
