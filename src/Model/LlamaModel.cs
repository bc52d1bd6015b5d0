using HftRuntime.Kernels;
using HftRuntime.Runtime;

namespace HftRuntime.Model;

/// <summary>Bytes a model needs, by kind, and what the device has.</summary>
/// <param name="Weights">All parameters: fp32 masters, frozen tensors, and in bf16 the compute copies.</param>
/// <param name="Gradients">Gradients of the trainable parameters.</param>
/// <param name="Optimizer">AdamW moments of the trainable parameters.</param>
/// <param name="Activations">Saved activations and scratch.</param>
/// <param name="Total">The whole arena (the parts plus alignment and small tables).</param>
/// <param name="Available">Memory of the device (the CPU: available RAM).</param>
public sealed record MemoryEstimate(long Weights, long Gradients, long Optimizer, long Activations, long Total, long Available)
{
    /// <summary>Whether the arena fits in the device's memory.</summary>
    public bool Fits => Total <= Available;

    /// <summary>"X MiB (weights …, gradients …, optimizer …, activations …) of Y MiB available".</summary>
    public string Describe() => string.Format(System.Globalization.CultureInfo.InvariantCulture,
        "{0:F1} MiB (weights {1:F1}, gradients {2:F1}, optimizer {3:F1}, activations {4:F1}) of {5:F1} MiB available",
        Total / 1048576.0, Weights / 1048576.0, Gradients / 1048576.0, Optimizer / 1048576.0, Activations / 1048576.0, Available / 1048576.0);
}

/// <summary>How a <see cref="LlamaModel"/> is laid out in memory.</summary>
/// <param name="Batch">Largest batch (sequences) a step will use.</param>
/// <param name="Seq">Largest sequence length a step will use.</param>
/// <param name="Frozen">Hugging Face names of tensors that get no gradient, no optimizer state and no update.</param>
/// <param name="Training">Reserve what the backward pass needs (gradients, saved activations).</param>
/// <param name="Optimizer">Reserve AdamW moments for the trainable tensors.</param>
/// <param name="CheckpointActivations">Keep only each layer's input; recompute the layer's activations during the
/// backward pass (one more forward pass of the layers, for a fraction of the activation memory).</param>
/// <param name="Precision">fp32, or bf16 mixed precision (bf16 matrix products, fp32 masters for trainable tensors
/// only, frozen matrices in bf16 alone).</param>
/// <param name="LossChunkRows">When positive and below batch · seq: the head, the loss and the head's backward run
/// over chunks of this many rows, so only one chunk of logits ([rows, vocab]) exists at a time; <see cref="LlamaModel.Logits"/>
/// is then unavailable. 0: the whole batch at once.</param>
public sealed record LlamaModelOptions(int Batch, int Seq, IReadOnlySet<string>? Frozen = null, bool Training = true, bool Optimizer = true,
    bool CheckpointActivations = false, Precision Precision = Precision.Fp32, int LossChunkRows = 0)
{
    /// <summary>Rows of logits the model holds at once.</summary>
    public int LogitRows => LossChunkRows > 0 && LossChunkRows < Batch * Seq ? LossChunkRows : Batch * Seq;

    /// <summary>
    /// The chunk a training run uses by default: whole batches while the logits stay within 64 Mi floats (256 MiB in
    /// fp32), else as many rows as fit that, rounded down to a multiple of 128 (whole GEMM tiles) where that many fit.
    /// </summary>
    public static int DefaultLossChunkRows(int batch, int seq, int vocab)
    {
        const long budget = 64L << 20;
        if ((long)batch * seq * vocab <= budget) return 0;
        long rows = Math.Max(1, budget / vocab);
        if (rows >= 128) rows -= rows % 128;
        return (int)rows;
    }
}

/// <summary>
/// A Llama decoder (Hugging Face's <c>LlamaForCausalLM</c>) on a <see cref="Backend"/>: parameters, saved
/// activations and scratch in one arena sized up front; forward to logits and per-position loss, backward to the
/// gradient of every trainable parameter. Frozen matrices get their input gradient but never a weight gradient.
/// </summary>
public sealed partial class LlamaModel : ILanguageModel
{
    private readonly LayerWeights[] _layers;
    private readonly Parameter _embed, _finalNorm, _head;
    private readonly Activations _act;
    private readonly float _attnScale;
    private int _batch, _seq;
    private bool _inputsSet;

    private sealed record LayerWeights(Parameter Q, Parameter K, Parameter V, Parameter O,
        Parameter Gate, Parameter Up, Parameter Down, Parameter InputNorm, Parameter PostNorm);

    private LlamaModel(Backend backend, LlamaConfig config, LlamaModelOptions options, bool commit = true)
    {
        if (options.Batch <= 0 || options.Seq <= 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"batch and seq must be positive, got {options.Batch} x {options.Seq}");
        if (options.LossChunkRows < 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"LossChunkRows must be 0 or positive, got {options.LossChunkRows}");
        Backend = backend; Config = config; Options = options;
        Arena = backend.CreateArena();
        try
        {
            var frozen = options.Frozen ?? new HashSet<string>();
            Parameters = ParameterStore.Reserve(Arena, ParameterSpecs(config), frozen, options.Training && options.Optimizer,
                options.Precision, MatrixNames(config));
            _embed = Parameters["model.embed_tokens.weight"];
            _finalNorm = Parameters["model.norm.weight"];
            _head = config.TieWordEmbeddings ? _embed : Parameters["lm_head.weight"];
            _layers = new LayerWeights[config.NumHiddenLayers];
            for (int l = 0; l < _layers.Length; l++)
            {
                string p = $"model.layers.{l}.";
                _layers[l] = new LayerWeights(
                    Parameters[p + "self_attn.q_proj.weight"], Parameters[p + "self_attn.k_proj.weight"],
                    Parameters[p + "self_attn.v_proj.weight"], Parameters[p + "self_attn.o_proj.weight"],
                    Parameters[p + "mlp.gate_proj.weight"], Parameters[p + "mlp.up_proj.weight"], Parameters[p + "mlp.down_proj.weight"],
                    Parameters[p + "input_layernorm.weight"], Parameters[p + "post_attention_layernorm.weight"]);
            }
            _act = new Activations(Arena, config, options, _layers);
            Memory = new MemoryEstimate(Parameters.WeightBytes,
                Parameters.Grads.IsEmpty ? 0 : Parameters.Grads.Bytes,
                (Parameters.Moment1.IsEmpty ? 0 : Parameters.Moment1.Bytes) + (Parameters.Moment2.IsEmpty ? 0 : Parameters.Moment2.Bytes),
                _act.Bytes, Arena.ReservedBytes, backend.MemoryBytes);
            if (!commit) return;
            if (!Memory.Fits)
                throw new InvalidInputException(backend.DeviceName, $"this run needs {Memory.Describe()}; " +
                    "reduce --batch or --seq, freeze more (--method hft), or use a smaller model");
            Arena.Commit();
            Parameters.Initialize(backend);
            var cos = new float[options.Seq * config.HeadDim / 2];
            var sin = new float[cos.Length];
            config.RopeTables(options.Seq, cos, sin);
            backend.Upload<float>(_act.RopeCos, cos);
            backend.Upload<float>(_act.RopeSin, sin);
            _attnScale = 1f / MathF.Sqrt(config.HeadDim);
        }
        catch
        {
            Arena.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Creates the model with zero weights; load or initialise them next. A layout larger than the back-end's memory is
    /// refused before anything is allocated (<see cref="InvalidInputException"/> with the estimate).
    /// </summary>
    public static LlamaModel Create(Backend backend, LlamaConfig config, LlamaModelOptions options) => new(backend, config, options);

    /// <summary>The memory a model with this layout needs, without allocating it.</summary>
    public static MemoryEstimate EstimateMemory(Backend backend, LlamaConfig config, LlamaModelOptions options)
    {
        using var probe = new LlamaModel(backend, config, options, commit: false);
        return probe.Memory;
    }

    /// <summary>The memory this model's arena holds, by kind.</summary>
    public MemoryEstimate Memory { get; }

    /// <summary>The back-end everything runs on.</summary>
    public Backend Backend { get; }

    /// <summary>The architecture.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The layout options.</summary>
    public LlamaModelOptions Options { get; }

    /// <summary>The one arena of this model (weights, gradients, optimizer state, activations, scratch).</summary>
    public DeviceArena Arena { get; }

    /// <summary>Weights, gradients and optimizer state.</summary>
    public ParameterStore Parameters { get; }

    /// <summary>
    /// Logits of the last forward pass, [batch · seq, vocab] (in fp32, the gradient after a backward pass; in bf16
    /// precision a pass that forms the gradient keeps its logits and their gradient in bf16 and leaves this buffer
    /// as it was). Not available when the layout computes the loss in chunks (<see cref="LlamaModelOptions.LossChunkRows"/>).
    /// </summary>
    public Tensor Logits => Options.LogitRows < Options.Batch * Options.Seq
        ? throw new InvalidOperationException($"this model computes its loss in chunks of {Options.LogitRows} rows and keeps no full logits (LossChunkRows)")
        : _act.Logits;

    /// <summary>Per-position cross-entropy of the last forward pass, [batch · seq] (0 where ignored).</summary>
    public Tensor RowLosses => _act.RowLosses;

    /// <summary>Bytes of the arena spent on saved activations and scratch.</summary>
    public long ActivationBytes => _act.Bytes;

    /// <summary>
    /// How attention computes: "bf16" where the precision is bf16 and the back-end takes bf16 attention operands for
    /// this head dimension (the tensor-core kernels of the ILGPU back-end; q, k, v and the output kept in bf16), else
    /// "fp32".
    /// </summary>
    public string AttentionPrecision => _act.Bf16Attention ? "bf16" : "fp32";

    /// <inheritdoc/>
    public int MaxBatch => Options.Batch;

    /// <inheritdoc/>
    public int MaxSeq => Options.Seq;

    /// <inheritdoc/>
    public int VocabSize => Config.VocabSize;

    /// <summary>The parameters of a Llama with <paramref name="config"/>, named as Hugging Face names them.</summary>
    public static IReadOnlyList<ParameterSpec> ParameterSpecs(LlamaConfig config)
    {
        int d = config.HiddenSize, f = config.IntermediateSize, hd = config.HeadDim;
        int q = config.NumAttentionHeads * hd, kv = config.NumKeyValueHeads * hd;
        var specs = new List<ParameterSpec> { new("model.embed_tokens.weight", [config.VocabSize, d], true) };
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            specs.Add(new(p + "self_attn.q_proj.weight", [q, d], true));
            specs.Add(new(p + "self_attn.k_proj.weight", [kv, d], true));
            specs.Add(new(p + "self_attn.v_proj.weight", [kv, d], true));
            specs.Add(new(p + "self_attn.o_proj.weight", [d, q], true));
            specs.Add(new(p + "mlp.gate_proj.weight", [f, d], true));
            specs.Add(new(p + "mlp.up_proj.weight", [f, d], true));
            specs.Add(new(p + "mlp.down_proj.weight", [d, f], true));
            specs.Add(new(p + "input_layernorm.weight", [d], false));
            specs.Add(new(p + "post_attention_layernorm.weight", [d], false));
        }
        specs.Add(new("model.norm.weight", [d], false));
        if (!config.TieWordEmbeddings) specs.Add(new("lm_head.weight", [config.VocabSize, d], true));
        return specs;
    }

    /// <summary>
    /// The tensors only matrix products read (every layer's seven projections and an untied head): in bf16
    /// precision these are held in bf16 alone when frozen. The embedding table stays fp32 (it is gathered from).
    /// </summary>
    public static IReadOnlySet<string> MatrixNames(LlamaConfig config)
    {
        var names = TensorNames(config).Layers.SelectMany(l => l.Attention.Concat(l.Mlp)).ToHashSet(StringComparer.Ordinal);
        if (!config.TieWordEmbeddings) names.Add("lm_head.weight");
        return names;
    }

    /// <summary>The model's tensors by category, for freeze policies.</summary>
    public static ModelTensorNames TensorNames(LlamaConfig config)
    {
        var layers = new List<LayerTensorNames>();
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            layers.Add(new LayerTensorNames(
                [p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight", p + "self_attn.o_proj.weight"],
                [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"],
                [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]));
        }
        string[] embeddings = config.TieWordEmbeddings ? ["model.embed_tokens.weight"] : ["model.embed_tokens.weight", "lm_head.weight"];
        return new ModelTensorNames(layers, embeddings, "model.norm.weight");
    }

    /// <summary>Uploads a batch (ids, shifted targets, loss weights, positions, document starts).</summary>
    public void SetInputs(ModelInputs inputs)
    {
        if (inputs.Batch > Options.Batch || inputs.Seq > Options.Seq)
            throw new ArgumentException($"batch {inputs.Batch} x {inputs.Seq} exceeds the model's layout {Options.Batch} x {Options.Seq}");
        int v = Config.VocabSize;
        for (int i = 0; i < inputs.Rows; i++)
        {
            if ((uint)inputs.Ids[i] >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(inputs), inputs.Ids[i], $"token id at position {i} is outside the vocabulary [0, {v})");
            int t = inputs.Targets[i];
            if (t != Backend.IgnoreIndex && (uint)t >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(inputs), t, $"target at position {i} is outside the vocabulary [0, {v})");
            if ((uint)inputs.Positions[i] >= (uint)Options.Seq)
                throw new ArgumentOutOfRangeException(nameof(inputs), inputs.Positions[i], $"position at row {i} is outside [0, {Options.Seq})");
        }
        _batch = inputs.Batch; _seq = inputs.Seq;
        Backend.Upload<int>(_act.Ids, inputs.Ids);
        Backend.Upload<int>(_act.Targets, inputs.Targets);
        Backend.Upload<float>(_act.RowScale, inputs.RowScale);
        Backend.Upload<int>(_act.Positions, inputs.Positions);
        _packed = inputs.IsPacked;
        if (_packed) Backend.Upload<int>(_act.DocStart, inputs.DocStart);
        _inputsSet = true;
    }

    private bool _packed;

    /// <summary>Replaces the per-position loss weights of the current batch (e.g. DPO's per-sequence coefficients).</summary>
    public void SetRowScale(ReadOnlySpan<float> rowScale)
    {
        if (rowScale.Length != _batch * _seq) throw new ArgumentException($"expected {_batch * _seq} row weights, got {rowScale.Length}");
        Backend.Upload(_act.RowScale, rowScale);
    }

    /// <summary>Sets every gradient to zero (start of an optimizer step).</summary>
    public void ZeroGradients()
    {
        if (!Parameters.Grads.IsEmpty) Backend.Fill(Parameters.Grads, 0f);
    }

    /// <summary>The objective of the last forward pass: Σ rowLoss · rowScale, on the host (one small read).</summary>
    public float Loss()
    {
        int n = _batch * _seq;
        Backend.Dot(_act.LossScalar, _act.RowLosses.Slice(0, n), _act.RowScale.Slice(0, n), accumulate: false);
        Span<float> r = stackalloc float[1];
        Backend.Download<float>(_act.LossScalar, r);
        return r[0];
    }

    /// <summary>Frees the arena.</summary>
    public void Dispose() => Arena.Dispose();

    private Tensor DocStartOrEmpty => _packed ? _act.DocStart : default;

    private void RequireInputs()
    {
        if (!_inputsSet) throw new InvalidOperationException("no inputs: call SetInputs first");
    }
}
