using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using MlTiktokenTokenizer = Microsoft.ML.Tokenizers.TiktokenTokenizer;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// An OpenAI tiktoken encoding run by Microsoft.ML.Tokenizers, with its vocabulary taken from a data package
/// compiled into the program (no download): only <c>cl100k_base</c> is available. There is no BOS;
/// <c>&lt;|endoftext|&gt;</c> is EOS. As in Microsoft.ML.Tokenizers, a special-token string that appears in the
/// text (e.g. <c>&lt;|endoftext|&gt;</c>) is encoded as that special id, which <see cref="Decode"/> then drops.
/// </summary>
public sealed class TiktokenTokenizer : ITokenizer
{
    /// <summary>The <see cref="Kind"/> of this tokenizer.</summary>
    public const string KindName = "tiktoken";

    /// <summary>The prefix of a tiktoken spec for <see cref="Tokenizers.Create"/>: <c>tiktoken:NAME</c>.</summary>
    public const string SpecPrefix = "tiktoken:";

    /// <summary>The <c>tokenizer_config.json</c> field holding <see cref="EncodingName"/>.</summary>
    public const string EncodingField = "tiktoken_encoding";

    /// <summary>The encodings whose data package this runtime references.</summary>
    public static readonly IReadOnlyList<string> SupportedEncodings = ["cl100k_base"];

    private const string EndOfText = "<|endoftext|>";

    private readonly MlTiktokenTokenizer _tokenizer;
    private readonly int _firstSpecialId;

    private TiktokenTokenizer(MlTiktokenTokenizer tokenizer, string encodingName, int vocabSize, int firstSpecialId, int? eosId)
    {
        _tokenizer = tokenizer;
        EncodingName = encodingName;
        VocabSize = vocabSize;
        _firstSpecialId = firstSpecialId;
        EosId = eosId;
    }

    /// <inheritdoc/>
    public string Kind => KindName;

    /// <summary>The tiktoken encoding, e.g. <c>cl100k_base</c>.</summary>
    public string EncodingName { get; }

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public int? BosId => null;

    /// <inheritdoc/>
    public int? EosId { get; }

    /// <summary>Creates the tokenizer for a tiktoken encoding name (see <see cref="SupportedEncodings"/>).</summary>
    /// <exception cref="InvalidInputException">The encoding is unknown or its data package is not available.</exception>
    public static TiktokenTokenizer Create(string encodingName)
    {
        ArgumentNullException.ThrowIfNull(encodingName);
        string source = SpecPrefix + encodingName;
        if (!SupportedEncodings.Contains(encodingName, StringComparer.Ordinal))
        {
            throw new InvalidInputException(source,
                $"unknown or unavailable tiktoken encoding '{encodingName}'; available: {string.Join(", ", SupportedEncodings)}");
        }
        MlTiktokenTokenizer tokenizer;
        try
        {
            tokenizer = MlTiktokenTokenizer.CreateForEncoding(encodingName);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException)
        {
            throw new InvalidInputException(source, $"cannot create the tiktoken encoding: {e.Message}", e);
        }

        // The special tokens follow the ordinary vocabulary (e.g. 100257..100276 for cl100k_base).
        var specials = tokenizer.SpecialTokens;
        if (specials is null || specials.Count == 0)
            throw new InvalidInputException(source, "the encoding has no special tokens (no end-of-text token)");
        int firstSpecial = specials.Values.Min();
        int vocabSize = specials.Values.Max() + 1;
        int? eos = specials.TryGetValue(EndOfText, out int eosId) ? eosId : null;
        return new TiktokenTokenizer(tokenizer, encodingName, vocabSize, firstSpecial, eos);
    }

    /// <inheritdoc/>
    public void Encode(string text, List<int> output)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(output);
        if (text.Length == 0) return;
        output.AddRange(_tokenizer.EncodeToIds(text));
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, <see cref="VocabSize"/>).</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        TokenIds.CheckRange(ids, VocabSize);
        var kept = new List<int>(ids.Length);
        foreach (int id in ids)
            if (id < _firstSpecialId) kept.Add(id);
        return kept.Count == 0 ? string.Empty : _tokenizer.Decode(kept);
    }

    /// <summary>
    /// Writes <c>tokenizer_config.json</c> with <c>"hft_tokenizer": "tiktoken"</c>, the encoding name and the EOS id
    /// into <paramref name="directory"/> (created if needed). Other fields of an existing file are kept.
    /// </summary>
    public void Save(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        TokenizerConfigFile.Write(directory, KindName, BosId, EosId, root => root[EncodingField] = EncodingName);
    }
}
