using System.Text.RegularExpressions;
using HftRuntime.Kernels;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Model;

public sealed partial class LlamaModel
{
    private static readonly Regex LayerIndex = new(@"^model\.layers\.(\d+)\.", RegexOptions.Compiled | RegexOptions.CultureInvariant);

    /// <summary>
    /// Opens a Hugging Face model directory on <paramref name="backend"/>: config.json, the tokenizer and the weights
    /// (model.safetensors or a sharded index), laid out as <paramref name="options"/> says.
    /// </summary>
    public static LlamaModel Load(Backend backend, string directory, LlamaModelOptions options, out ITokenizer tokenizer)
    {
        var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        tokenizer = Tokenizers.Tokenizers.Load(directory);
        var model = Create(backend, config, options);
        try
        {
            using var weights = SafeTensorsCheckpoint.Open(directory);
            model.LoadWeights(weights);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads every parameter from a Hugging Face checkpoint (F32, F64, BF16 or F16 converted to float32). A missing
    /// tensor, a shape that disagrees with config.json, or a layer the config does not have is an
    /// <see cref="InvalidInputException"/> naming the file and the tensor. Tensors we don't use (a saved
    /// <c>lm_head.weight</c> of a tied model, rotary buffers) are ignored.
    /// </summary>
    public void LoadWeights(ISafeTensorsSource source)
    {
        foreach (var name in source.Names)
        {
            var m = LayerIndex.Match(name);
            if (m.Success && (!int.TryParse(m.Groups[1].Value, out int layer) || layer >= Config.NumHiddenLayers))
                throw new InvalidInputException(source.Get(name).FilePath,
                    $"tensor '{name}' belongs to a layer that config.json (num_hidden_layers = {Config.NumHiddenLayers}) does not have");
        }
        ParameterIo.LoadWeights(source, Parameters, Backend);
    }

    /// <summary>Writes every parameter to a Hugging Face safetensors file (float32, loadable by transformers).</summary>
    public void SaveWeights(string path) => ParameterIo.SaveWeights(path, Parameters, Backend);

    /// <summary>
    /// Random initialisation as Hugging Face's LlamaPreTrainedModel does it: every matrix and the embeddings drawn
    /// from N(0, initializer_range²), norm weights 1. Reproducible from <paramref name="seed"/>.
    /// </summary>
    public void InitializeWeights(ulong seed)
    {
        var buffer = new float[Parameters.All.Max(p => p.Count)];
        float std = (float)Config.InitializerRange;
        for (int i = 0; i < Parameters.All.Count; i++)
        {
            var p = Parameters.All[i];
            var span = buffer.AsSpan(0, p.Count);
            if (p.Shape.Length == 1) span.Fill(1f);
            else
            {
                var rng = new Rng(Rng.Derive(seed, i));
                for (int j = 0; j < span.Length; j++) span[j] = std * (float)rng.NextNormal();
            }
            Parameters.Write(Backend, p, span);
        }
    }

    /// <summary>Copies a parameter's weights to a new host array (float32; a bf16-held tensor widened exactly).</summary>
    public float[] DownloadWeights(string name) => ParameterStore.Read(Backend, Parameters[name]);

    /// <summary>Copies a parameter's gradient to a new host array (frozen parameters have none).</summary>
    public float[] DownloadGradient(string name)
    {
        var p = Parameters[name];
        if (!p.Trainable) throw new InvalidOperationException($"'{name}' is frozen and has no gradient");
        return Backend.ToArray<float>(p.Grad);
    }
}
