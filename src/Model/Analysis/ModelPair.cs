using System.Globalization;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Model;

/// <summary>
/// A base model and a model tuned from it, opened side by side and checked to be comparable: the same
/// architecture in config.json, and every tensor the architecture names present in both checkpoints with the
/// expected shape and a floating-point dtype. Shared by <see cref="HalfReset"/> and <see cref="ParameterDiff"/>.
/// Every mismatch is an <see cref="InvalidInputException"/> that names both directories and the field or tensor.
/// </summary>
internal sealed class ModelPair : IDisposable
{
    /// <summary>The config fields that decide the tensors and the function they compute.</summary>
    private static readonly (string Field, Func<LlamaConfig, string> Value)[] ArchitectureFields =
    [
        ("model_type", c => c.ModelType),
        ("vocab_size", c => Text(c.VocabSize)),
        ("hidden_size", c => Text(c.HiddenSize)),
        ("intermediate_size", c => Text(c.IntermediateSize)),
        ("num_hidden_layers", c => Text(c.NumHiddenLayers)),
        ("num_attention_heads", c => Text(c.NumAttentionHeads)),
        ("num_key_value_heads", c => Text(c.NumKeyValueHeads)),
        ("head_dim", c => Text(c.HeadDim)),
        ("tie_word_embeddings", c => c.TieWordEmbeddings ? "true" : "false"),
        ("rms_norm_eps", c => c.RmsNormEps.ToString("R", CultureInfo.InvariantCulture)),
        ("rope_theta", c => c.RopeTheta.ToString("R", CultureInfo.InvariantCulture)),
        ("rope_scaling", c => c.RopeScaling?.ToString() ?? "none"),
    ];

    private ModelPair(string baseDir, string tunedDir, LlamaConfig baseConfig, LlamaConfig tunedConfig,
        SafeTensorsCheckpoint baseWeights, SafeTensorsCheckpoint tunedWeights)
    {
        BaseDirectory = baseDir;
        TunedDirectory = tunedDir;
        BaseConfig = baseConfig;
        Config = tunedConfig;
        Base = baseWeights;
        Tuned = tunedWeights;
        Specs = LlamaModel.ParameterSpecs(tunedConfig);
    }

    /// <summary>The base model's directory (θ₀).</summary>
    public string BaseDirectory { get; }

    /// <summary>The tuned model's directory (θ).</summary>
    public string TunedDirectory { get; }

    /// <summary>The base model's config.</summary>
    public LlamaConfig BaseConfig { get; }

    /// <summary>The tuned model's config (architecture equal to the base's).</summary>
    public LlamaConfig Config { get; }

    /// <summary>The base model's weights.</summary>
    public SafeTensorsCheckpoint Base { get; }

    /// <summary>The tuned model's weights.</summary>
    public SafeTensorsCheckpoint Tuned { get; }

    /// <summary>The tensors of the architecture, in model order (embeddings, layers, final norm, head).</summary>
    public IReadOnlyList<ParameterSpec> Specs { get; }

    /// <summary>Opens and checks both models; nothing stays open when a check fails.</summary>
    public static ModelPair Open(string baseDir, string tunedDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(baseDir);
        ArgumentException.ThrowIfNullOrEmpty(tunedDir);
        if (!Directory.Exists(baseDir)) throw new InvalidInputException(baseDir, "base model directory not found");
        if (!Directory.Exists(tunedDir)) throw new InvalidInputException(tunedDir, "tuned model directory not found");
        var baseConfig = LlamaConfig.Load(baseDir);
        var tunedConfig = LlamaConfig.Load(tunedDir);
        foreach (var (field, value) in ArchitectureFields)
        {
            string b = value(baseConfig), t = value(tunedConfig);
            if (b != t)
            {
                throw new InvalidInputException(tunedDir,
                    $"config.json \"{field}\" is {t} in this tuned model but {b} in the base model {baseDir}; both models must share one architecture");
            }
        }

        SafeTensorsCheckpoint? baseWeights = null, tunedWeights = null;
        try
        {
            baseWeights = SafeTensorsCheckpoint.Open(baseDir);
            tunedWeights = SafeTensorsCheckpoint.Open(tunedDir);
            var pair = new ModelPair(baseDir, tunedDir, baseConfig, tunedConfig, baseWeights, tunedWeights);
            pair.CheckTensors();
            return pair;
        }
        catch
        {
            baseWeights?.Dispose();
            tunedWeights?.Dispose();
            throw;
        }
    }

    /// <summary>The base model's weights when <paramref name="fromBase"/>, else the tuned model's.</summary>
    public SafeTensorsCheckpoint Weights(bool fromBase) => fromBase ? Base : Tuned;

    /// <summary>Closes both checkpoints.</summary>
    public void Dispose()
    {
        Base.Dispose();
        Tuned.Dispose();
    }

    private void CheckTensors()
    {
        foreach (var spec in Specs)
        {
            bool inBase = Base.TryGet(spec.Name, out var b), inTuned = Tuned.TryGet(spec.Name, out var t);
            if (!inBase && !inTuned)
            {
                throw new InvalidInputException(TunedDirectory,
                    $"tensor '{spec.Name}' is missing from this tuned model and from the base model {BaseDirectory}, though config.json's architecture has it");
            }
            if (!inBase)
                throw new InvalidInputException(BaseDirectory, $"tensor '{spec.Name}' is missing from this base model but present in the tuned model {TunedDirectory}");
            if (!inTuned)
                throw new InvalidInputException(TunedDirectory, $"tensor '{spec.Name}' is missing from this tuned model but present in the base model {BaseDirectory}");

            string expected = TensorInfo.FormatShape(spec.Shape.Select(d => (long)d));
            if (b!.ShapeText != t!.ShapeText)
            {
                throw new InvalidInputException(TunedDirectory,
                    $"tensor '{spec.Name}' has shape {t.ShapeText} in this tuned model but {b.ShapeText} in the base model {BaseDirectory}");
            }
            if (t.ShapeText != expected)
            {
                throw new InvalidInputException(TunedDirectory,
                    $"tensor '{spec.Name}' has shape {t.ShapeText} in both this tuned model and the base model {BaseDirectory}, but config.json's architecture says {expected}");
            }
            CheckFloat(b, BaseDirectory);
            CheckFloat(t, TunedDirectory);
            if (spec.Count > Array.MaxLength)
                throw new InvalidInputException(TunedDirectory, $"tensor '{spec.Name}' has {spec.Count} elements, more than one array can hold");
        }
    }

    private static void CheckFloat(TensorInfo info, string directory)
    {
        if (info.DType is not (SafeTensorsDType.F32 or SafeTensorsDType.F64 or SafeTensorsDType.BF16 or SafeTensorsDType.F16))
            throw new InvalidInputException(directory, $"tensor '{info.Name}' is stored as {info.DType}; expected F32, F64, BF16 or F16 ({info.FilePath})");
    }

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);
}
