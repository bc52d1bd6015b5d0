using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Model;

/// <summary>How far one tensor moved from the base model.</summary>
/// <param name="Name">The Hugging Face tensor name.</param>
/// <param name="Count">Number of elements.</param>
/// <param name="DeltaNorm">‖θ − θ₀‖ (Frobenius, accumulated in float64).</param>
/// <param name="BaseNorm">‖θ₀‖.</param>
public sealed record TensorChange(string Name, long Count, double DeltaNorm, double BaseNorm)
{
    /// <summary>‖θ − θ₀‖ / ‖θ₀‖; 0 when both norms are 0, +∞ when only the base norm is.</summary>
    public double Relative => BaseNorm > 0 ? DeltaNorm / BaseNorm : DeltaNorm == 0 ? 0 : double.PositiveInfinity;
}

/// <summary>
/// The relative change ‖θ − θ₀‖ / ‖θ₀‖ of every tensor of a tuned model θ against its base θ₀, computed in float64,
/// and arranged by layer and category (the granularity of Half Fine-Tuning's freeze draw: a model tuned with HFT
/// shows exact zeros where its frozen half sits). <see cref="WriteReports"/> writes <c>diff.md</c> and
/// <c>diff.json</c>; the CLI adds a heat map.
/// </summary>
public sealed class ParameterDiff
{
    /// <summary>The markdown report's file name.</summary>
    public const string MarkdownFileName = "diff.md";

    /// <summary>The JSON report's file name.</summary>
    public const string JsonFileName = "diff.json";

    /// <summary>The columns of the layer table: the nine tensors of a layer, in <see cref="LayerTensorNames.All"/> order.</summary>
    public static readonly IReadOnlyList<string> LayerCategories = ["q", "k", "v", "o", "gate", "up", "down", "input_norm", "post_norm"];

    private readonly Dictionary<string, TensorChange> _byName;
    private readonly ModelTensorNames _names;

    private ParameterDiff(string baseDirectory, string tunedDirectory, LlamaConfig config, IReadOnlyList<TensorChange> tensors)
    {
        BaseDirectory = baseDirectory;
        TunedDirectory = tunedDirectory;
        Config = config;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _names = LlamaModel.TensorNames(config);
    }

    /// <summary>The base model's directory (θ₀).</summary>
    public string BaseDirectory { get; }

    /// <summary>The tuned model's directory (θ).</summary>
    public string TunedDirectory { get; }

    /// <summary>The (shared) architecture.</summary>
    public LlamaConfig Config { get; }

    /// <summary>Every tensor, in model order.</summary>
    public IReadOnlyList<TensorChange> Tensors { get; }

    /// <summary>Number of decoder layers (rows of the layer table).</summary>
    public int Layers => _names.Layers.Count;

    /// <summary>The token embeddings.</summary>
    public TensorChange EmbedTokens => _byName["model.embed_tokens.weight"];

    /// <summary>The LM head; null when tied to the embeddings.</summary>
    public TensorChange? LmHead => _byName.GetValueOrDefault("lm_head.weight");

    /// <summary>The final RMSNorm weight.</summary>
    public TensorChange FinalNorm => _byName[_names.FinalNorm];

    /// <summary>Mean relative change of the attention projections (q, k, v, o of every layer).</summary>
    public double MeanAttention => Mean(_names.Layers.SelectMany(l => l.Attention));

    /// <summary>Mean relative change of the feed-forward projections (gate, up, down of every layer).</summary>
    public double MeanMlp => Mean(_names.Layers.SelectMany(l => l.Mlp));

    /// <summary>Mean relative change of the RMSNorm weights (both of every layer and the final one).</summary>
    public double MeanNorm => Mean(_names.Layers.SelectMany(l => l.Norms).Append(_names.FinalNorm));

    /// <summary>Number of tensors exactly equal to the base (‖θ − θ₀‖ = 0).</summary>
    public int Unchanged => Tensors.Count(t => t.DeltaNorm == 0);

    /// <summary>A tensor's change; <see cref="KeyNotFoundException"/> for a name outside the model.</summary>
    public TensorChange this[string name] => _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"no tensor '{name}' in the model");

    /// <summary>The change of one tensor of a layer; <paramref name="category"/> indexes <see cref="LayerCategories"/>.</summary>
    public TensorChange At(int layer, int category)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, Layers);
        ArgumentOutOfRangeException.ThrowIfNegative(category);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(category, LayerCategories.Count);
        return _byName[_names.Layers[layer].All.ElementAt(category)];
    }

    /// <summary>The relative changes as a [layers, <see cref="LayerCategories"/>] table.</summary>
    public double[,] LayerTable()
    {
        var table = new double[Layers, LayerCategories.Count];
        for (int l = 0; l < Layers; l++)
        {
            int c = 0;
            foreach (string name in _names.Layers[l].All) table[l, c++] = _byName[name].Relative;
        }
        return table;
    }

    /// <summary>
    /// Compares <paramref name="tunedDirectory"/> (θ) with <paramref name="baseDirectory"/> (θ₀). Tensors are read
    /// one at a time (F64 as float64, other float types as float32) and the norms accumulated in float64.
    /// </summary>
    /// <exception cref="InvalidInputException">
    /// The models differ in architecture (a config field, a missing tensor, a shape) or a file is unreadable.
    /// </exception>
    public static ParameterDiff Compute(string baseDirectory, string tunedDirectory, CancellationToken cancel = default)
    {
        using var pair = ModelPair.Open(baseDirectory, tunedDirectory);
        var changes = new List<TensorChange>(pair.Specs.Count);
        float[] a = [], b = [];
        double[] ad = [], bd = [];
        foreach (var spec in pair.Specs)
        {
            cancel.ThrowIfCancellationRequested();
            int n = (int)spec.Count;
            double delta, norm;
            if (pair.Base.Get(spec.Name).DType == SafeTensorsDType.F64 || pair.Tuned.Get(spec.Name).DType == SafeTensorsDType.F64)
            {
                if (ad.Length < n) { ad = new double[n]; bd = new double[n]; }
                pair.Tuned.ReadFloat64(spec.Name, ad.AsSpan(0, n));
                pair.Base.ReadFloat64(spec.Name, bd.AsSpan(0, n));
                (delta, norm) = Norms(ad.AsSpan(0, n), bd.AsSpan(0, n));
            }
            else
            {
                if (a.Length < n) { a = new float[n]; b = new float[n]; }
                pair.Tuned.ReadFloat32(spec.Name, a.AsSpan(0, n));
                pair.Base.ReadFloat32(spec.Name, b.AsSpan(0, n));
                (delta, norm) = Norms(a.AsSpan(0, n), b.AsSpan(0, n));
            }
            changes.Add(new TensorChange(spec.Name, spec.Count, delta, norm));
        }
        return new ParameterDiff(Path.GetFullPath(baseDirectory), Path.GetFullPath(tunedDirectory), pair.Config, changes);
    }

    /// <summary>(‖a − b‖, ‖b‖) in float64.</summary>
    private static (double Delta, double Norm) Norms(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dd = 0, bb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double x = b[i], d = (double)a[i] - x;
            dd += d * d;
            bb += x * x;
        }
        return (Math.Sqrt(dd), Math.Sqrt(bb));
    }

    private static (double Delta, double Norm) Norms(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double dd = 0, bb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double x = b[i], d = a[i] - x;
            dd += d * d;
            bb += x * x;
        }
        return (Math.Sqrt(dd), Math.Sqrt(bb));
    }

    /// <summary>Writes <see cref="MarkdownFileName"/> and <see cref="JsonFileName"/> into <paramref name="directory"/> (which must exist).</summary>
    public void WriteReports(string directory)
    {
        File.WriteAllText(Path.Combine(directory, MarkdownFileName), ToMarkdown());
        File.WriteAllText(Path.Combine(directory, JsonFileName),
            ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true, IndentSize = 2, NewLine = "\n" }) + "\n");
    }

    /// <summary>
    /// The report as markdown: the layer × category table, the embeddings, head and final norm, and the mean change
    /// of the attention, MLP and norm tensors.
    /// </summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.Append("# Parameter change: tuned vs base\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"- base (θ₀): `{BaseDirectory}`\n");
        sb.Append(CultureInfo.InvariantCulture, $"- tuned (θ): `{TunedDirectory}`\n");
        sb.Append("- relative change ‖θ − θ₀‖ / ‖θ₀‖ of each tensor, accumulated in float64 (0: the tensor is bit-identical to the base)\n\n");

        sb.Append("## By layer\n\n| layer | ").Append(string.Join(" | ", LayerCategories)).Append(" |\n");
        sb.Append("|---:|").Append(string.Concat(Enumerable.Repeat("---:|", LayerCategories.Count))).Append('\n');
        var table = LayerTable();
        for (int l = 0; l < Layers; l++)
        {
            sb.Append(CultureInfo.InvariantCulture, $"| {l} |");
            for (int c = 0; c < LayerCategories.Count; c++) sb.Append(' ').Append(Format(table[l, c])).Append(" |");
            sb.Append('\n');
        }

        sb.Append("\n## Outside the layers\n\n| tensor | relative change |\n|---|---:|\n");
        sb.Append(CultureInfo.InvariantCulture, $"| embed_tokens | {Format(EmbedTokens.Relative)} |\n");
        if (LmHead is { } head) sb.Append(CultureInfo.InvariantCulture, $"| lm_head | {Format(head.Relative)} |\n");
        else sb.Append("| lm_head | tied to embed_tokens |\n");
        sb.Append(CultureInfo.InvariantCulture, $"| final norm | {Format(FinalNorm.Relative)} |\n");

        int attention = _names.Layers.Sum(l => l.Attention.Count), mlp = _names.Layers.Sum(l => l.Mlp.Count);
        int norms = _names.Layers.Sum(l => l.Norms.Count) + 1;
        sb.Append("\n## Summary (mean of the per-tensor relative changes)\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"- attention (q, k, v, o; {attention} tensors): {Format(MeanAttention)}\n");
        sb.Append(CultureInfo.InvariantCulture, $"- MLP (gate, up, down; {mlp} tensors): {Format(MeanMlp)}\n");
        sb.Append(CultureInfo.InvariantCulture, $"- norms (input, post-attention and final RMSNorm; {norms} tensors): {Format(MeanNorm)}\n");
        sb.Append(CultureInfo.InvariantCulture, $"- unchanged (bit-identical to the base): {Unchanged} of {Tensors.Count} tensors\n");
        return sb.ToString();
    }

    /// <summary>
    /// The report as JSON: <c>tensors</c> (every name → relative change), <c>layers</c> (one object per layer,
    /// category → relative change), <c>embed_tokens</c>, <c>lm_head</c> (null when tied), <c>final_norm</c> and
    /// <c>summary</c>. A relative change that is not finite (a base tensor of zeros that moved) is null.
    /// </summary>
    public JsonObject ToJson()
    {
        var tensors = new JsonObject();
        foreach (var t in Tensors) tensors[t.Name] = Number(t.Relative);
        var layers = new JsonArray();
        var table = LayerTable();
        for (int l = 0; l < Layers; l++)
        {
            var row = new JsonObject { ["layer"] = l };
            for (int c = 0; c < LayerCategories.Count; c++) row[LayerCategories[c]] = Number(table[l, c]);
            layers.Add(row);
        }
        return new JsonObject
        {
            ["base"] = BaseDirectory,
            ["tuned"] = TunedDirectory,
            ["metric"] = "relative change ||theta - theta0|| / ||theta0|| per tensor (theta0: base), float64",
            ["categories"] = new JsonArray(LayerCategories.Select(c => (JsonNode)c).ToArray()),
            ["layers"] = layers,
            ["embed_tokens"] = Number(EmbedTokens.Relative),
            ["lm_head"] = LmHead is { } head ? Number(head.Relative) : null,
            ["final_norm"] = Number(FinalNorm.Relative),
            ["summary"] = new JsonObject
            {
                ["attention"] = Number(MeanAttention),
                ["mlp"] = Number(MeanMlp),
                ["norm"] = Number(MeanNorm),
                ["unchanged_tensors"] = Unchanged,
                ["tensors"] = Tensors.Count,
            },
            ["tensors"] = tensors,
        };
    }

    /// <summary>A relative change as the markdown table prints it ("0" for exactly zero, else 4 significant digits).</summary>
    public static string Format(double value) => value switch
    {
        0 => "0",
        double.PositiveInfinity => "inf",
        _ when double.IsNaN(value) => "n/a",
        _ => value.ToString("0.000e+00", CultureInfo.InvariantCulture),
    };

    private double Mean(IEnumerable<string> names)
    {
        double sum = 0;
        int count = 0;
        foreach (string name in names)
        {
            sum += _byName[name].Relative;
            count++;
        }
        return count == 0 ? double.NaN : sum / count;
    }

    private static JsonNode? Number(double value) => double.IsFinite(value) ? JsonValue.Create(value) : null;
}
