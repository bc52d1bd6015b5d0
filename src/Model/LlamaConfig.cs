using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Runtime;

namespace HftRuntime.Model;

/// <summary>
/// The hyper-parameters of a Llama model, read from (and written as) a Hugging Face <c>config.json</c>. Both the
/// transformers 4 spelling (top-level <c>rope_theta</c>, <c>rope_scaling</c>) and the transformers 5 one
/// (<c>rope_parameters</c>) are understood. Settings this runtime does not implement (other RoPE scalings, biases,
/// activations other than SiLU, partial rotary embeddings, dropout, quantization, other model types) are rejected
/// with <see cref="InvalidInputException"/> naming the field, rather than silently computing something else.
/// <para>
/// Build one in code with an object initializer and call <see cref="Validate"/>; derive variants with
/// <c>with</c>. <see cref="NumKeyValueHeads"/> and <see cref="HeadDim"/> follow the head count and hidden size
/// unless set explicitly. Equality compares the hyper-parameters only (not <see cref="SourceName"/> or the
/// source JSON).
/// </para>
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>The only supported <c>model_type</c>.</summary>
    public const string LlamaModelType = "llama";

    private static readonly HashSet<string> ManagedKeys = new(StringComparer.Ordinal)
    {
        "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
        "rope_parameters", "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id",
        "initializer_range", "hidden_act", "attention_bias", "mlp_bias", "torch_dtype", "dtype",
        "partial_rotary_factor",
    };

    private readonly int? _numKeyValueHeads;
    private readonly int? _headDim;
    private JsonObject? _source;

    /// <summary>Vocabulary size ("vocab_size").</summary>
    public required int VocabSize { get; init; }

    /// <summary>Model width ("hidden_size").</summary>
    public required int HiddenSize { get; init; }

    /// <summary>MLP inner width ("intermediate_size").</summary>
    public required int IntermediateSize { get; init; }

    /// <summary>Number of decoder layers ("num_hidden_layers").</summary>
    public required int NumHiddenLayers { get; init; }

    /// <summary>Number of query heads ("num_attention_heads").</summary>
    public required int NumAttentionHeads { get; init; }

    /// <summary>Number of key/value heads ("num_key_value_heads"); equals <see cref="NumAttentionHeads"/> unless set.</summary>
    public int NumKeyValueHeads
    {
        get => _numKeyValueHeads ?? NumAttentionHeads;
        init => _numKeyValueHeads = value;
    }

    /// <summary>Width of one head ("head_dim"); <see cref="HiddenSize"/> / <see cref="NumAttentionHeads"/> unless set.</summary>
    public int HeadDim
    {
        get => _headDim ?? (NumAttentionHeads > 0 ? HiddenSize / NumAttentionHeads : 0);
        init => _headDim = value;
    }

    /// <summary>True when <see cref="HeadDim"/> was given explicitly rather than derived.</summary>
    public bool HasExplicitHeadDim => _headDim is not null;

    /// <summary>RMSNorm epsilon ("rms_norm_eps"; Hugging Face's default 1e-6).</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>RoPE base ("rope_theta" or "rope_parameters.rope_theta"; default 10000).</summary>
    public double RopeTheta { get; init; } = 10000.0;

    /// <summary>Llama 3 RoPE scaling; null for plain ("default") RoPE.</summary>
    public Llama3RopeScaling? RopeScaling { get; init; }

    /// <summary>Longest supported sequence ("max_position_embeddings"; default 2048).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>True when the output projection shares the embedding matrix ("tie_word_embeddings"; default false).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Beginning-of-sequence token ("bos_token_id"; the first of a list; null when null; default 1).</summary>
    public int? BosTokenId { get; init; } = 1;

    /// <summary>End-of-sequence token ("eos_token_id"; the first of a list; null when null; default 2).</summary>
    public int? EosTokenId { get; init; } = 2;

    /// <summary>Standard deviation of the weight initialisation ("initializer_range"; default 0.02).</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>"model_type": always "llama" for a valid config (a missing field counts as "llama").</summary>
    public string ModelType { get; init; } = LlamaModelType;

    /// <summary>Where the config came from, used in error messages (the file path for <see cref="Load"/>).</summary>
    public string SourceName { get; init; } = nameof(LlamaConfig);

    /// <summary>
    /// A copy of the JSON object the config was parsed from (null for a config built in code). <see cref="ToJson"/>
    /// keeps its fields that this class does not model (e.g. <c>pad_token_id</c>, <c>use_cache</c>).
    /// </summary>
    public JsonObject? GetSourceJson() => _source?.DeepClone().AsObject();

    /// <summary>Reads a <c>config.json</c> (or the <c>config.json</c> inside a directory) and validates it.</summary>
    public static LlamaConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) path = Path.Combine(path, "config.json");
        if (!File.Exists(path)) throw new InvalidInputException(path, "config file not found");
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidInputException(path, $"cannot read the file: {e.Message}", e);
        }
        return Parse(text, path);
    }

    /// <summary>Parses and validates the text of a <c>config.json</c>; <paramref name="sourceName"/> names it in errors.</summary>
    public static LlamaConfig Parse(string json, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(sourceName);
        JsonObject root;
        try
        {
            var node = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
            root = node as JsonObject ?? throw new InvalidInputException(sourceName, "the config is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(sourceName, $"not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            // The duplicate-key check unescapes every key and throws this for a lone surrogate escape ("\ud800").
            throw new InvalidInputException(sourceName, $"a key is not valid Unicode text (a lone surrogate escape?): {e.Message}", e);
        }
        CheckText(root, "the config", sourceName);

        var reader = new FieldReader(sourceName);

        string? modelType = reader.OptionalString(root, "model_type");
        if (modelType is not null && modelType != LlamaModelType)
            throw reader.Unsupported("model_type", $"'{modelType}'", $"only \"{LlamaModelType}\" models are supported");

        string hiddenAct = reader.OptionalString(root, "hidden_act") ?? "silu";
        if (hiddenAct is not ("silu" or "swish"))
            throw reader.Unsupported("hidden_act", $"'{hiddenAct}'", "only \"silu\" is implemented");
        if (reader.OptionalBool(root, "attention_bias") == true)
            throw reader.Unsupported("attention_bias", "true", "attention projections without bias only");
        if (reader.OptionalBool(root, "mlp_bias") == true)
            throw reader.Unsupported("mlp_bias", "true", "MLP projections without bias only");
        double dropout = reader.OptionalDouble(root, "attention_dropout") ?? 0.0;
        if (dropout != 0.0)
            throw reader.Unsupported("attention_dropout", dropout.ToString("R", CultureInfo.InvariantCulture), "attention dropout is not implemented");
        if (reader.Field(root, "quantization_config") is not null)
            throw reader.Unsupported("quantization_config", "present", "quantized checkpoints are not supported");
        reader.CheckPartialRotaryFactor(root, "");

        int maxPositions = reader.OptionalInt(root, "max_position_embeddings") ?? 2048;
        var (theta, scaling) = reader.Rope(root, maxPositions);

        var config = new LlamaConfig
        {
            VocabSize = reader.RequiredInt(root, "vocab_size"),
            HiddenSize = reader.RequiredInt(root, "hidden_size"),
            IntermediateSize = reader.RequiredInt(root, "intermediate_size"),
            NumHiddenLayers = reader.RequiredInt(root, "num_hidden_layers"),
            NumAttentionHeads = reader.RequiredInt(root, "num_attention_heads"),
            RmsNormEps = reader.OptionalDouble(root, "rms_norm_eps") ?? 1e-6,
            RopeTheta = theta,
            RopeScaling = scaling,
            MaxPositionEmbeddings = maxPositions,
            TieWordEmbeddings = reader.OptionalBool(root, "tie_word_embeddings") ?? false,
            BosTokenId = reader.TokenId(root, "bos_token_id", 1),
            EosTokenId = reader.TokenId(root, "eos_token_id", 2),
            InitializerRange = reader.OptionalDouble(root, "initializer_range") ?? 0.02,
            ModelType = modelType ?? LlamaModelType,
            SourceName = sourceName,
            _source = root,
        };
        if (reader.OptionalInt(root, "num_key_value_heads") is int kv) config = config with { NumKeyValueHeads = kv };
        if (reader.OptionalInt(root, "head_dim") is int headDim) config = config with { HeadDim = headDim };
        config.Validate();
        return config;
    }

    /// <summary>
    /// Rejects keys and strings that are not valid Unicode: a JSON escape can encode a lone surrogate
    /// (<c>"\ud800"</c>), which System.Text.Json refuses to turn into a .NET string (InvalidOperationException) when
    /// a field is read or the config is written.
    /// </summary>
    private static void CheckText(JsonNode? node, string where, string sourceName)
    {
        try
        {
            switch (node)
            {
                case JsonObject obj:
                    foreach (var (key, value) in obj) CheckText(value, $"\"{key}\"", sourceName);
                    break;
                case JsonArray array:
                    for (int i = 0; i < array.Count; i++) CheckText(array[i], $"{where}[{i}]", sourceName);
                    break;
                case JsonValue value when value.GetValueKind() == JsonValueKind.String:
                    _ = value.GetValue<string>();
                    break;
            }
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidInputException(sourceName,
                $"a key or string in {where} is not valid Unicode text (a lone surrogate escape?): {e.Message}", e);
        }
    }

    /// <summary>Checks that the values are usable; throws <see cref="InvalidInputException"/> naming
    /// <see cref="SourceName"/> and the (config.json) field otherwise.</summary>
    public void Validate()
    {
        void Positive(int value, string field)
        {
            if (value <= 0) throw new InvalidInputException(SourceName, $"\"{field}\" must be positive, got {value}");
        }

        if (ModelType != LlamaModelType)
            throw new InvalidInputException(SourceName, $"unsupported \"model_type\" '{ModelType}': only \"{LlamaModelType}\" models are supported");
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (_headDim is null && HiddenSize % NumAttentionHeads != 0)
        {
            throw new InvalidInputException(SourceName,
                $"\"hidden_size\" {HiddenSize} is not divisible by \"num_attention_heads\" {NumAttentionHeads} (and \"head_dim\" is not given)");
        }
        Positive(HeadDim, "head_dim");
        if (HeadDim % 2 != 0)
            throw new InvalidInputException(SourceName, $"\"head_dim\" {HeadDim} is odd; rotary embeddings need an even head width");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
        {
            throw new InvalidInputException(SourceName,
                $"\"num_attention_heads\" {NumAttentionHeads} is not a multiple of \"num_key_value_heads\" {NumKeyValueHeads}");
        }
        if (!(RmsNormEps > 0) || !double.IsFinite(RmsNormEps))
            throw new InvalidInputException(SourceName, $"\"rms_norm_eps\" must be a positive number, got {Format(RmsNormEps)}");
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta))
            throw new InvalidInputException(SourceName, $"\"rope_theta\" must be a positive number, got {Format(RopeTheta)}");
        if (!(InitializerRange >= 0) || !double.IsFinite(InitializerRange))
            throw new InvalidInputException(SourceName, $"\"initializer_range\" must be a non-negative number, got {Format(InitializerRange)}");
        if (RopeScaling is { } s)
        {
            if (!(s.Factor > 0) || !double.IsFinite(s.Factor))
                throw new InvalidInputException(SourceName, $"RoPE scaling \"factor\" must be a positive number, got {Format(s.Factor)}");
            if (!(s.LowFreqFactor > 0) || !double.IsFinite(s.LowFreqFactor))
                throw new InvalidInputException(SourceName, $"RoPE scaling \"low_freq_factor\" must be a positive number, got {Format(s.LowFreqFactor)}");
            if (!(s.HighFreqFactor > s.LowFreqFactor) || !double.IsFinite(s.HighFreqFactor))
            {
                throw new InvalidInputException(SourceName,
                    $"RoPE scaling \"high_freq_factor\" ({Format(s.HighFreqFactor)}) must be greater than \"low_freq_factor\" ({Format(s.LowFreqFactor)})");
            }
            if (s.OriginalMaxPositionEmbeddings <= 0)
            {
                throw new InvalidInputException(SourceName,
                    $"RoPE scaling \"original_max_position_embeddings\" must be positive, got {s.OriginalMaxPositionEmbeddings}");
            }
        }
    }

    /// <summary>
    /// The rotary inverse frequencies, <see cref="HeadDim"/>/2 of them, computed in float32 exactly as Hugging Face
    /// does on the CPU. Default RoPE: <c>inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))</c>, i.e.
    /// the exponent 2i/dim is divided in float32, the power is evaluated in float64 with the base rounded to float32
    /// and then rounded to float32 (the correctly rounded float32 power; PyTorch's vectorised powf is accurate to
    /// about 1 ulp, so the two can differ by 1 ulp in rare cases), and the reciprocal is taken in float32.
    /// Llama 3 scaling then follows <c>_compute_llama3_parameters</c> operation by operation in float32, with the
    /// Python scalars rounded to float32 as PyTorch does (a scalar divided by a tensor is a reciprocal times the
    /// scalar): wavelen = 2π/inv_freq; inv_freq_llama = wavelen &gt; low_freq_wavelen ? inv_freq/factor : inv_freq;
    /// smooth = (old_ctx/wavelen − low_freq_factor)/(high_freq_factor − low_freq_factor); in the medium band,
    /// where neither wavelen &lt; high_freq_wavelen nor wavelen &gt; low_freq_wavelen, the result is
    /// (1 − smooth)·inv_freq_llama/factor + smooth·inv_freq_llama.
    /// </summary>
    public float[] RopeInverseFrequencies()
    {
        Validate();
        int dim = HeadDim;
        var inv = new float[dim / 2];
        float theta = (float)RopeTheta;
        for (int i = 0; i < inv.Length; i++)
        {
            float exponent = (float)(2 * i) / dim;
            float power = (float)Math.Pow(theta, exponent);
            inv[i] = 1.0f / power;
        }
        if (RopeScaling is not { } s) return inv;

        float factor = (float)s.Factor;
        float lowFreqFactor = (float)s.LowFreqFactor;
        float bandWidth = (float)(s.HighFreqFactor - s.LowFreqFactor);
        float oldContext = s.OriginalMaxPositionEmbeddings;
        float lowFreqWavelen = (float)(s.OriginalMaxPositionEmbeddings / s.LowFreqFactor);
        float highFreqWavelen = (float)(s.OriginalMaxPositionEmbeddings / s.HighFreqFactor);
        float twoPi = (float)(2 * Math.PI);
        for (int i = 0; i < inv.Length; i++)
        {
            float wavelen = (1.0f / inv[i]) * twoPi;
            float invLlama = wavelen > lowFreqWavelen ? inv[i] / factor : inv[i];
            float smooth = ((1.0f / wavelen) * oldContext - lowFreqFactor) / bandWidth;
            float smoothed = (1.0f - smooth) * invLlama / factor + smooth * invLlama;
            bool medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
            inv[i] = medium ? smoothed : invLlama;
        }
        return inv;
    }

    /// <summary>
    /// Fills row-major [<paramref name="maxPositions"/>, <see cref="HeadDim"/>/2] tables with cos and sin of
    /// pos·inv_freq[i] (see <see cref="RopeInverseFrequencies"/>). As in Hugging Face
    /// (<c>inv_freq.float() @ position_ids.float()</c>) the angle is the float32 product of the float32 position and
    /// frequency; cos and sin are then evaluated in float64 and rounded to float32.
    /// </summary>
    public void RopeTables(int maxPositions, Span<float> cos, Span<float> sin)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxPositions);
        float[] inv = RopeInverseFrequencies();
        long needed = (long)maxPositions * inv.Length;
        if (cos.Length != needed) throw new ArgumentException($"cos holds {cos.Length} values, expected {needed}", nameof(cos));
        if (sin.Length != needed) throw new ArgumentException($"sin holds {sin.Length} values, expected {needed}", nameof(sin));
        for (int pos = 0; pos < maxPositions; pos++)
        {
            int row = pos * inv.Length;
            float position = pos;
            for (int i = 0; i < inv.Length; i++)
            {
                float angle = position * inv[i];
                cos[row + i] = (float)Math.Cos(angle);
                sin[row + i] = (float)Math.Sin(angle);
            }
        }
    }

    /// <summary>
    /// A Hugging Face compatible <c>config.json</c> (keys sorted, two-space indent, trailing newline) that both
    /// transformers 4 and 5 read: architectures <c>["LlamaForCausalLM"]</c>, every field of this class, dtype and
    /// torch_dtype "float32", <c>rope_theta</c> at the top level and in <c>rope_parameters</c>, and Llama 3 scaling
    /// both as <c>rope_scaling</c> (transformers 4) and in <c>rope_parameters</c> (transformers 5). Other fields of
    /// the source JSON (pad_token_id, use_cache, ...) are kept. Validates first.
    /// </summary>
    public string ToJson()
    {
        Validate();
        var fields = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal);
        if (_source is not null)
        {
            foreach (var (key, value) in _source)
            {
                if (!ManagedKeys.Contains(key)) fields[key] = value?.DeepClone();
            }
        }

        fields["architectures"] = new JsonArray("LlamaForCausalLM");
        fields["model_type"] = LlamaModelType;
        fields["vocab_size"] = VocabSize;
        fields["hidden_size"] = HiddenSize;
        fields["intermediate_size"] = IntermediateSize;
        fields["num_hidden_layers"] = NumHiddenLayers;
        fields["num_attention_heads"] = NumAttentionHeads;
        fields["num_key_value_heads"] = NumKeyValueHeads;
        fields["head_dim"] = HeadDim;
        fields["rms_norm_eps"] = Number(RmsNormEps);
        fields["max_position_embeddings"] = MaxPositionEmbeddings;
        fields["tie_word_embeddings"] = TieWordEmbeddings;
        fields["bos_token_id"] = TokenIdNode("bos_token_id", BosTokenId);
        fields["eos_token_id"] = TokenIdNode("eos_token_id", EosTokenId);
        fields["initializer_range"] = Number(InitializerRange);
        fields["hidden_act"] = "silu";
        fields["attention_bias"] = false;
        fields["mlp_bias"] = false;
        fields["dtype"] = "float32";
        fields["torch_dtype"] = "float32";
        fields["rope_theta"] = Number(RopeTheta);

        var ropeParameters = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            ["rope_theta"] = Number(RopeTheta),
            ["rope_type"] = "default",
        };
        if (RopeScaling is { } s)
        {
            var scaling = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
            {
                ["factor"] = Number(s.Factor),
                ["high_freq_factor"] = Number(s.HighFreqFactor),
                ["low_freq_factor"] = Number(s.LowFreqFactor),
                ["original_max_position_embeddings"] = s.OriginalMaxPositionEmbeddings,
                ["rope_type"] = Llama3RopeScaling.RopeType,
            };
            foreach (var (key, value) in scaling) ropeParameters[key] = value?.DeepClone();
            fields["rope_scaling"] = ToObject(scaling);
        }
        else
        {
            fields["rope_scaling"] = null;
        }
        fields["rope_parameters"] = ToObject(ropeParameters);

        string text = ToObject(fields).ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true,
            IndentSize = 2,
            NewLine = "\n",
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        });
        return text + "\n";
    }

    /// <inheritdoc/>
    public bool Equals(LlamaConfig? other) =>
        other is not null
        && VocabSize == other.VocabSize
        && HiddenSize == other.HiddenSize
        && IntermediateSize == other.IntermediateSize
        && NumHiddenLayers == other.NumHiddenLayers
        && NumAttentionHeads == other.NumAttentionHeads
        && NumKeyValueHeads == other.NumKeyValueHeads
        && HeadDim == other.HeadDim
        && RmsNormEps.Equals(other.RmsNormEps)
        && RopeTheta.Equals(other.RopeTheta)
        && Equals(RopeScaling, other.RopeScaling)
        && MaxPositionEmbeddings == other.MaxPositionEmbeddings
        && TieWordEmbeddings == other.TieWordEmbeddings
        && BosTokenId == other.BosTokenId
        && EosTokenId == other.EosTokenId
        && InitializerRange.Equals(other.InitializerRange)
        && ModelType == other.ModelType;

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(VocabSize);
        hash.Add(HiddenSize);
        hash.Add(IntermediateSize);
        hash.Add(NumHiddenLayers);
        hash.Add(NumAttentionHeads);
        hash.Add(NumKeyValueHeads);
        hash.Add(HeadDim);
        hash.Add(RmsNormEps);
        hash.Add(RopeTheta);
        hash.Add(RopeScaling);
        hash.Add(MaxPositionEmbeddings);
        hash.Add(TieWordEmbeddings);
        hash.Add(BosTokenId);
        hash.Add(EosTokenId);
        hash.Add(InitializerRange);
        hash.Add(ModelType);
        return hash.ToHashCode();
    }

    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append(CultureInfo.InvariantCulture,
            $"VocabSize = {VocabSize}, HiddenSize = {HiddenSize}, IntermediateSize = {IntermediateSize}, ");
        builder.Append(CultureInfo.InvariantCulture,
            $"NumHiddenLayers = {NumHiddenLayers}, NumAttentionHeads = {NumAttentionHeads}, NumKeyValueHeads = {NumKeyValueHeads}, ");
        builder.Append(CultureInfo.InvariantCulture,
            $"HeadDim = {HeadDim}, RmsNormEps = {Format(RmsNormEps)}, RopeTheta = {Format(RopeTheta)}, RopeScaling = {RopeScaling?.ToString() ?? "none"}, ");
        builder.Append(CultureInfo.InvariantCulture,
            $"MaxPositionEmbeddings = {MaxPositionEmbeddings}, TieWordEmbeddings = {TieWordEmbeddings}, ");
        builder.Append(CultureInfo.InvariantCulture,
            $"BosTokenId = {BosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "null"}, EosTokenId = {EosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "null"}, ");
        builder.Append(CultureInfo.InvariantCulture, $"InitializerRange = {Format(InitializerRange)}, ModelType = {ModelType}");
        return true;
    }

    /// <summary>Keeps a token-id list of the source when its first element is still the value; else the plain value.</summary>
    private JsonNode? TokenIdNode(string key, int? value)
    {
        if (value is null) return null;
        if (_source is not null && _source[key] is JsonArray list && list.Count > 0
            && list[0] is JsonValue first && first.TryGetValue<int>(out int head) && head == value)
        {
            return list.DeepClone();
        }
        return value.Value;
    }

    private static JsonObject ToObject(SortedDictionary<string, JsonNode?> fields)
    {
        var result = new JsonObject();
        foreach (var (key, value) in fields) result[key] = value;
        return result;
    }

    /// <summary>A JSON number written as Python writes floats: "10000.0", "1e-05", "0.02".</summary>
    private static JsonNode Number(double value)
    {
        string text = Format(value);
        if (!text.Contains('.') && !text.Contains('e')) text += ".0";
        return JsonNode.Parse(text)!;
    }

    private static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture).Replace('E', 'e');

    /// <summary>Typed access to config.json fields with errors naming the field.</summary>
    private sealed class FieldReader(string source)
    {
        public InvalidInputException Unsupported(string field, string value, string detail) =>
            new(source, $"unsupported \"{field}\" {value}: {detail}");

        private InvalidInputException WrongType(string field, JsonNode node, string expected) =>
            new(source, $"\"{field}\" must be {expected}, got {node.ToJsonString()}");

        /// <summary>The field's value; null when absent or JSON null (as Python's None).</summary>
        public JsonNode? Field(JsonObject obj, string name) => obj.TryGetPropertyValue(name, out var value) ? value : null;

        public int RequiredInt(JsonObject obj, string name) =>
            OptionalInt(obj, name) ?? throw new InvalidInputException(source, $"missing required field \"{name}\"");

        public int? OptionalInt(JsonObject obj, string name, string prefix = "")
        {
            var node = Field(obj, name);
            if (node is null) return null;
            return ToInt(node, prefix + name);
        }

        private int ToInt(JsonNode node, string field)
        {
            if (node.GetValueKind() == JsonValueKind.Number)
            {
                var value = node.AsValue();
                if (value.TryGetValue<int>(out int i)) return i;
                if (value.TryGetValue<double>(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue)
                    return (int)d;
            }
            throw WrongType(field, node, "an integer (32-bit)");
        }

        public double? OptionalDouble(JsonObject obj, string name, string prefix = "")
        {
            var node = Field(obj, name);
            if (node is null) return null;
            if (node.GetValueKind() == JsonValueKind.Number && node.AsValue().TryGetValue<double>(out double d)) return d;
            throw WrongType(prefix + name, node, "a number");
        }

        public double RequiredDouble(JsonObject obj, string name, string prefix) =>
            OptionalDouble(obj, name, prefix) ?? throw new InvalidInputException(source, $"missing required field \"{prefix}{name}\"");

        public bool? OptionalBool(JsonObject obj, string name)
        {
            var node = Field(obj, name);
            if (node is null) return null;
            return node.GetValueKind() switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw WrongType(name, node, "true or false"),
            };
        }

        public string? OptionalString(JsonObject obj, string name, string prefix = "")
        {
            var node = Field(obj, name);
            if (node is null) return null;
            if (node.GetValueKind() == JsonValueKind.String) return node.GetValue<string>();
            throw WrongType(prefix + name, node, "a string");
        }

        /// <summary>An int, the first int of a list (null for an empty list), null for JSON null, or the default when absent.</summary>
        public int? TokenId(JsonObject obj, string name, int defaultValue)
        {
            if (!obj.TryGetPropertyValue(name, out var node)) return defaultValue;
            if (node is null) return null;
            if (node is JsonArray list)
            {
                if (list.Count == 0) return null;
                return list[0] is null ? throw WrongType(name, node, "an integer or a list of integers") : ToInt(list[0]!, name + "[0]");
            }
            return ToInt(node, name);
        }

        private JsonObject? OptionalObject(JsonObject obj, string name)
        {
            var node = Field(obj, name);
            if (node is null) return null;
            return node as JsonObject ?? throw WrongType(name, node, "an object");
        }

        public void CheckPartialRotaryFactor(JsonObject obj, string prefix)
        {
            double? factor = OptionalDouble(obj, "partial_rotary_factor", prefix);
            if (factor is double f && f != 1.0)
            {
                throw Unsupported(prefix + "partial_rotary_factor", f.ToString("R", CultureInfo.InvariantCulture),
                    "rotary embeddings over the whole head only (1.0)");
            }
        }

        /// <summary>Reads rope_theta and the scaling from the transformers 4 and 5 spellings, requiring them to agree.</summary>
        public (double Theta, Llama3RopeScaling? Scaling) Rope(JsonObject root, int maxPositions)
        {
            var legacy = OptionalObject(root, "rope_scaling");
            var parameters = OptionalObject(root, "rope_parameters");

            var thetas = new List<(string Field, double Value)>();
            if (OptionalDouble(root, "rope_theta") is double top) thetas.Add(("rope_theta", top));
            Llama3RopeScaling? fromParameters = null, fromLegacy = null;
            if (parameters is not null)
            {
                fromParameters = Scaling(parameters, "rope_parameters", maxPositions);
                if (OptionalDouble(parameters, "rope_theta", "rope_parameters.") is double t) thetas.Add(("rope_parameters.rope_theta", t));
            }
            if (legacy is not null)
            {
                fromLegacy = Scaling(legacy, "rope_scaling", maxPositions);
                if (OptionalDouble(legacy, "rope_theta", "rope_scaling.") is double t) thetas.Add(("rope_scaling.rope_theta", t));
            }

            if (parameters is not null && legacy is not null && !Equals(fromParameters, fromLegacy))
            {
                throw new InvalidInputException(source,
                    $"\"rope_scaling\" ({Describe(fromLegacy)}) and \"rope_parameters\" ({Describe(fromParameters)}) disagree");
            }
            foreach (var (field, value) in thetas)
            {
                if (value != thetas[0].Value)
                {
                    throw new InvalidInputException(source,
                        $"\"{thetas[0].Field}\" ({Format(thetas[0].Value)}) and \"{field}\" ({Format(value)}) disagree");
                }
            }
            double theta = thetas.Count > 0 ? thetas[0].Value : 10000.0;
            return (theta, legacy is not null ? fromLegacy : fromParameters);
        }

        private static string Describe(Llama3RopeScaling? scaling) => scaling is null ? "default" : scaling.ToString();

        private Llama3RopeScaling? Scaling(JsonObject obj, string field, int maxPositions)
        {
            foreach (var (key, value) in obj)
            {
                if (value is JsonObject)
                    throw Unsupported($"{field}.{key}", "(an object)", "per-layer RoPE parameters are not supported");
            }
            string prefix = field + ".";
            CheckPartialRotaryFactor(obj, prefix);
            string typeField = prefix + "rope_type";
            string? type = OptionalString(obj, "rope_type", prefix);
            if (type is null)
            {
                typeField = prefix + "type";
                type = OptionalString(obj, "type", prefix);
            }
            switch (type ?? "default")
            {
                case "default":
                    return null;
                case Llama3RopeScaling.RopeType:
                    return new Llama3RopeScaling(
                        RequiredDouble(obj, "factor", prefix),
                        RequiredDouble(obj, "low_freq_factor", prefix),
                        RequiredDouble(obj, "high_freq_factor", prefix),
                        OptionalInt(obj, "original_max_position_embeddings", prefix) ?? maxPositions);
                default:
                    throw Unsupported(typeField, $"'{type}'", "only \"default\" and \"llama3\" RoPE are implemented");
            }
        }
    }
}
