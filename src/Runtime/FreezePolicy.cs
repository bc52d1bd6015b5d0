using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace HftRuntime.Runtime;

/// <summary>The tensors of one transformer layer, by category (Hugging Face names).</summary>
/// <param name="Attention">The attention projections q, k, v, o.</param>
/// <param name="Mlp">The feed-forward projections gate, up, down.</param>
/// <param name="Norms">The two RMSNorm weights (input, post-attention).</param>
public sealed record LayerTensorNames(IReadOnlyList<string> Attention, IReadOnlyList<string> Mlp, IReadOnlyList<string> Norms)
{
    /// <summary>Every tensor of the layer.</summary>
    public IEnumerable<string> All => Attention.Concat(Mlp).Concat(Norms);
}

/// <summary>A decoder's tensors as freeze policies see them.</summary>
/// <param name="Layers">Per-layer tensors.</param>
/// <param name="Embeddings">Token embeddings and (when untied) the LM head.</param>
/// <param name="FinalNorm">The final RMSNorm weight.</param>
public sealed record ModelTensorNames(IReadOnlyList<LayerTensorNames> Layers, IReadOnlyList<string> Embeddings, string FinalNorm)
{
    /// <summary>Every tensor name.</summary>
    public IEnumerable<string> All => Embeddings.Concat(Layers.SelectMany(l => l.All)).Append(FinalNorm);
}

/// <summary>
/// Chooses which tensors a training stage freezes. Every policy is reproducible from its seed; see
/// DESIGN.md §1 for the method (Hui et al., "HFT: Half Fine-Tuning for Large Language Models").
/// </summary>
public abstract class FreezePolicy
{
    /// <summary>The policy's name as the CLI spells it (hft, layer, model, explicit, none).</summary>
    public abstract string Name { get; }

    /// <summary>The names of the tensors to freeze.</summary>
    public abstract IReadOnlySet<string> SelectFrozen(ModelTensorNames model);

    /// <summary>The policy's settings, for run.json.</summary>
    public virtual JsonObject Describe() => new() { ["name"] = Name };

    /// <summary>Nothing frozen (full fine-tuning).</summary>
    public static FreezePolicy None { get; } = new NonePolicy();

    /// <summary>
    /// The paper's category-level draw, per layer: of {q, k, v, o} freeze 2; of {gate, up, down} freeze 2 in a
    /// random half of the layers and 1 in the others; of the two norms freeze 1 (at trainable ratio 0.5; other
    /// ratios scale each category's frozen count, floor(count · (1 − ratio) · layers) spread as evenly as possible
    /// over randomly chosen layers). Embeddings, head and final norm stay trainable unless
    /// <paramref name="freezeEmbeddings"/>.
    /// </summary>
    public static FreezePolicy Hft(ulong seed, double trainableRatio = 0.5, bool freezeEmbeddings = false) =>
        new HftPolicy(seed, CheckRatio(trainableRatio), freezeEmbeddings);

    /// <summary>A random floor(layers · (1 − ratio)) layers frozen whole (the paper's layer-level ablation).</summary>
    public static FreezePolicy Layer(ulong seed, double trainableRatio = 0.5) => new LayerPolicy(seed, CheckRatio(trainableRatio));

    /// <summary>A random (1 − ratio) of all block matrices, and of all block norms, anywhere in the model.</summary>
    public static FreezePolicy Model(ulong seed, double trainableRatio = 0.5) => new ModelPolicy(seed, CheckRatio(trainableRatio));

    /// <summary>
    /// The tensors named in <paramref name="file"/>: one Hugging Face name or glob (<c>*</c>, <c>?</c>) per line,
    /// <c>#</c> starts a comment. A line that matches no tensor is an error naming the file and line.
    /// </summary>
    public static FreezePolicy Explicit(string file)
    {
        if (!File.Exists(file)) throw new InvalidInputException(file, "freeze list not found");
        var lines = File.ReadAllLines(file);
        var patterns = new List<(int Line, string Pattern)>();
        for (int i = 0; i < lines.Length; i++)
        {
            string s = lines[i];
            int hash = s.IndexOf('#');
            if (hash >= 0) s = s[..hash];
            s = s.Trim();
            if (s.Length > 0) patterns.Add((i + 1, s));
        }
        return new ExplicitPolicy(file, patterns);
    }

    /// <summary>Creates a policy from its CLI name and options.</summary>
    public static FreezePolicy Create(string name, ulong seed, double trainableRatio = 0.5, bool freezeEmbeddings = false, string? file = null) => name switch
    {
        "hft" => Hft(seed, trainableRatio, freezeEmbeddings),
        "layer" => Layer(seed, trainableRatio),
        "model" => Model(seed, trainableRatio),
        "none" => None,
        "explicit" => Explicit(file ?? throw new ArgumentException("policy 'explicit' needs a file of names (--freeze-list)")),
        _ => throw new ArgumentException($"unknown freeze policy '{name}'; expected hft, layer, model, explicit or none"),
    };

    private static double CheckRatio(double ratio) =>
        ratio > 0 && ratio <= 1 ? ratio : throw new ArgumentOutOfRangeException(nameof(ratio), ratio, $"trainable ratio must lie in (0, 1], got {ratio}");

    /// <summary>floor(x) with a little slack for products like 1.5 · 3 computed in binary.</summary>
    private static int Floor(double x) => (int)Math.Floor(x + 1e-9);

    private sealed class NonePolicy : FreezePolicy
    {
        public override string Name => "none";
        public override IReadOnlySet<string> SelectFrozen(ModelTensorNames model) => new HashSet<string>();
    }

    private abstract class SeededPolicy(ulong seed, double ratio) : FreezePolicy
    {
        protected ulong Seed => seed;
        protected double FrozenFraction => 1 - ratio;
        public override JsonObject Describe() => new() { ["name"] = Name, ["seed"] = seed, ["trainable_ratio"] = ratio };
    }

    private sealed class HftPolicy(ulong seed, double ratio, bool freezeEmbeddings) : SeededPolicy(seed, ratio)
    {
        public override string Name => "hft";

        public override JsonObject Describe()
        {
            var o = base.Describe();
            o["freeze_embeddings"] = freezeEmbeddings;
            return o;
        }

        public override IReadOnlySet<string> SelectFrozen(ModelTensorNames model)
        {
            var rng = new Rng(Rng.Derive(Seed, 0x484654));
            var frozen = new HashSet<string>(StringComparer.Ordinal);
            int layers = model.Layers.Count;
            DrawCategory(rng, model, l => l.Attention, frozen, layers);
            DrawCategory(rng, model, l => l.Mlp, frozen, layers);
            DrawCategory(rng, model, l => l.Norms, frozen, layers);
            if (freezeEmbeddings) frozen.UnionWith(model.Embeddings);
            return frozen;
        }

        private void DrawCategory(Rng rng, ModelTensorNames model, Func<LayerTensorNames, IReadOnlyList<string>> pick,
            HashSet<string> frozen, int layers)
        {
            if (layers == 0) return;
            int perLayer = pick(model.Layers[0]).Count;
            int total = Floor(perLayer * FrozenFraction * layers);
            int baseCount = total / layers, extra = total % layers;
            var extraLayers = new HashSet<int>(rng.Choose(layers, extra));
            for (int l = 0; l < layers; l++)
            {
                var names = pick(model.Layers[l]);
                int count = Math.Min(names.Count, baseCount + (extraLayers.Contains(l) ? 1 : 0));
                foreach (int i in rng.Choose(names.Count, count)) frozen.Add(names[i]);
            }
        }
    }

    private sealed class LayerPolicy(ulong seed, double ratio) : SeededPolicy(seed, ratio)
    {
        public override string Name => "layer";

        public override IReadOnlySet<string> SelectFrozen(ModelTensorNames model)
        {
            var rng = new Rng(Rng.Derive(Seed, 0x4C4159));
            int layers = model.Layers.Count;
            return rng.Choose(layers, Floor(layers * FrozenFraction)).SelectMany(l => model.Layers[l].All).ToHashSet(StringComparer.Ordinal);
        }
    }

    private sealed class ModelPolicy(ulong seed, double ratio) : SeededPolicy(seed, ratio)
    {
        public override string Name => "model";

        public override IReadOnlySet<string> SelectFrozen(ModelTensorNames model)
        {
            var rng = new Rng(Rng.Derive(Seed, 0x4D4F44));
            var matrices = model.Layers.SelectMany(l => l.Attention.Concat(l.Mlp)).ToList();
            var norms = model.Layers.SelectMany(l => l.Norms).ToList();
            var frozen = rng.Choose(matrices.Count, Floor(matrices.Count * FrozenFraction)).Select(i => matrices[i]).ToHashSet(StringComparer.Ordinal);
            frozen.UnionWith(rng.Choose(norms.Count, Floor(norms.Count * FrozenFraction)).Select(i => norms[i]));
            return frozen;
        }
    }

    private sealed class ExplicitPolicy(string file, List<(int Line, string Pattern)> patterns) : FreezePolicy
    {
        public override string Name => "explicit";

        public override JsonObject Describe() => new() { ["name"] = Name, ["file"] = file, ["patterns"] = new JsonArray(patterns.Select(p => (JsonNode)p.Pattern).ToArray()) };

        public override IReadOnlySet<string> SelectFrozen(ModelTensorNames model)
        {
            var names = model.All.ToList();
            var frozen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (line, pattern) in patterns)
            {
                var re = new Regex("^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$", RegexOptions.CultureInvariant);
                var hits = names.Where(n => re.IsMatch(n)).ToList();
                if (hits.Count == 0)
                    throw new InvalidInputException($"{file}:{line}", $"'{pattern}' matches no tensor of this model (e.g. {names[0]}, {names[^1]})");
                frozen.UnionWith(hits);
            }
            return frozen;
        }
    }
}
