using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using MlSentencePieceTokenizer = Microsoft.ML.Tokenizers.SentencePieceTokenizer;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// A SentencePiece tokenizer (BPE as in Llama 1 and 2, or unigram without byte fallback) read from a <c>tokenizer.model</c> file, run by
/// Microsoft.ML.Tokenizers. The vocabulary size and the BOS/EOS ids come from the model (usually BOS 1, EOS 2 and
/// the unknown piece 0). <see cref="Encode"/> adds no BOS/EOS; <see cref="Decode"/> drops the control pieces
/// (BOS, EOS, unknown). <see cref="Save"/> copies the original model bytes, so a saved model directory holds exactly
/// the file that was loaded.
/// <para>
/// BPE models encode exactly as the reference implementation (spm_encode) does. Unigram models do too, except that
/// a run of characters missing from the vocabulary becomes one unknown piece per character rather than one in all;
/// unigram models with byte fallback are rejected, because Microsoft.ML.Tokenizers 2.0.1 gives their byte pieces
/// wrong ids.
/// </para>
/// </summary>
public sealed class SentencePieceTokenizer : ITokenizer
{
    /// <summary>The <see cref="Kind"/> of this tokenizer.</summary>
    public const string KindName = "sentencepiece";

    /// <summary>The file name of a SentencePiece model in a model directory.</summary>
    public const string ModelFileName = "tokenizer.model";

    private readonly MlSentencePieceTokenizer _tokenizer;
    private readonly byte[] _modelBytes;
    private readonly bool[] _decodable;

    private SentencePieceTokenizer(MlSentencePieceTokenizer tokenizer, byte[] modelBytes, bool[] decodable, string sourceName,
        string modelType, int vocabSize, int? bosId, int? eosId, int? unknownId)
    {
        ModelType = modelType;
        _tokenizer = tokenizer;
        _modelBytes = modelBytes;
        _decodable = decodable;
        SourceName = sourceName;
        VocabSize = vocabSize;
        BosId = bosId;
        EosId = eosId;
        UnknownId = unknownId;
    }

    /// <inheritdoc/>
    public string Kind => KindName;

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int? EosId { get; }

    /// <summary>The SentencePiece algorithm: "bpe" or "unigram".</summary>
    public string ModelType { get; }

    /// <summary>The id of the unknown piece, if the model has one.</summary>
    public int? UnknownId { get; }

    /// <summary>Where the model came from (the file path for <see cref="Load"/>), used in error messages.</summary>
    public string SourceName { get; }

    /// <summary>Reads a SentencePiece <c>tokenizer.model</c> file.</summary>
    /// <exception cref="InvalidInputException">The file is missing, unreadable, or not a SentencePiece model.</exception>
    public static SentencePieceTokenizer Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new InvalidInputException(path, Directory.Exists(path)
                ? $"is a directory, not a SentencePiece {ModelFileName} file"
                : "SentencePiece model file not found");
        }
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidInputException(path, $"cannot read the file: {e.Message}", e);
        }
        return FromBytes(bytes, path);
    }

    /// <summary>
    /// Parses the bytes of a SentencePiece model; <paramref name="sourceName"/> names them in errors. The array is
    /// kept (not copied) for <see cref="Save"/>; do not change it afterwards.
    /// </summary>
    /// <exception cref="InvalidInputException">The bytes are not a SentencePiece model this runtime can use.</exception>
    public static SentencePieceTokenizer FromBytes(byte[] modelBytes, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(modelBytes);
        ArgumentNullException.ThrowIfNull(sourceName);
        if (modelBytes.Length == 0) throw new InvalidInputException(sourceName, "the SentencePiece model file is empty");

        SentencePieceModelProto proto;
        try
        {
            proto = SentencePieceModelProto.Read(modelBytes);
        }
        catch (FormatException e)
        {
            throw new InvalidInputException(sourceName, $"not a SentencePiece model: {e.Message}", e);
        }
        if (proto.PieceCount == 0) throw new InvalidInputException(sourceName, "not a SentencePiece model: it has no pieces");
        if (proto.ModelType is not (SentencePieceModelProto.Bpe or SentencePieceModelProto.Unigram))
        {
            throw new InvalidInputException(sourceName,
                $"model_type {proto.ModelTypeName} is not supported (only bpe and unigram SentencePiece models are)");
        }
        if (proto.FirstPieceWithNul >= 0)
        {
            throw new InvalidInputException(sourceName,
                $"piece {proto.FirstPieceWithNul} holds a NUL character, which Microsoft.ML.Tokenizers cannot handle");
        }
        if (proto.ModelType == SentencePieceModelProto.Unigram && proto.ByteFallback)
        {
            // Microsoft.ML.Tokenizers 2.0.1 puts the byte pieces of unigram models at the wrong offset, so unknown
            // ASCII characters would silently become unrelated pieces.
            throw new InvalidInputException(sourceName,
                "unigram SentencePiece models with byte_fallback are not supported: Microsoft.ML.Tokenizers 2.0.1 " +
                "encodes their byte pieces with wrong ids");
        }

        MlSentencePieceTokenizer tokenizer;
        try
        {
            using var stream = new MemoryStream(modelBytes, writable: false);
            tokenizer = MlSentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Google.Protobuf reports malformed bytes; the library itself fails with assorted exceptions on protobuf
            // messages that are not SentencePiece models or use settings it does not support.
            throw new InvalidInputException(sourceName,
                $"not a SentencePiece model that Microsoft.ML.Tokenizers can read ({e.GetType().Name}: {e.Message})", e);
        }

        var vocabulary = tokenizer.Vocabulary;
        int vocabSize = proto.PieceCount;
        var decodable = new bool[vocabSize];
        foreach (var (piece, id) in vocabulary)
        {
            if ((uint)id >= (uint)vocabSize)
                throw new InvalidInputException(sourceName, $"piece '{piece}' has id {id}, outside the {vocabSize} pieces of the model");
            decodable[id] = true;
        }
        foreach (int id in (ReadOnlySpan<int>)[tokenizer.BeginningOfSentenceId, tokenizer.EndOfSentenceId, tokenizer.UnknownId])
        {
            if ((uint)id < (uint)vocabSize) decodable[id] = true;
        }

        // The library reports an id even when the model has no such piece (e.g. trained with --bos_id=-1), so only
        // ids whose piece is really in the vocabulary count.
        int? Special(string? piece, int id) =>
            piece is not null && vocabulary.TryGetValue(piece, out int actual) && actual == id ? id : null;

        return new SentencePieceTokenizer(tokenizer, modelBytes, decodable, sourceName, proto.ModelTypeName, vocabSize,
            Special(tokenizer.BeginningOfSentenceToken, tokenizer.BeginningOfSentenceId),
            Special(tokenizer.EndOfSentenceToken, tokenizer.EndOfSentenceId),
            Special(tokenizer.UnknownToken, tokenizer.UnknownId));
    }

    /// <summary>
    /// The id of a piece (e.g. <c>"▁the"</c>), or null when the model has no such piece (or, for unigram models,
    /// when it is a control piece other than BOS, EOS, unknown and padding).
    /// </summary>
    public int? PieceToId(string piece)
    {
        ArgumentNullException.ThrowIfNull(piece);
        return _tokenizer.Vocabulary.TryGetValue(piece, out int id) ? id : null;
    }

    /// <inheritdoc/>
    public void Encode(string text, List<int> output)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(output);
        if (text.Length == 0) return;
        output.AddRange(_tokenizer.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false));
    }

    /// <inheritdoc/>
    /// <remarks>Ids whose piece Microsoft.ML.Tokenizers leaves out of its vocabulary (in a unigram model: unused
    /// pieces, and byte pieces without byte fallback) are dropped like control pieces: the library cannot decode them
    /// (it throws NullReferenceException).</remarks>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, <see cref="VocabSize"/>).</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        TokenIds.CheckRange(ids, VocabSize);
        var kept = new int[ids.Length];
        int n = 0;
        foreach (int id in ids)
            if (_decodable[id]) kept[n++] = id;
        if (n == 0) return string.Empty;
        return _tokenizer.Decode(n == kept.Length ? kept : kept[..n], considerSpecialTokens: false);
    }

    /// <summary>
    /// Writes the original model bytes to <c>tokenizer.model</c> and <c>tokenizer_config.json</c> (with
    /// <c>"hft_tokenizer": "sentencepiece"</c>, the BOS/EOS ids and, where absent, the Hugging Face
    /// <c>bos_token</c>/<c>eos_token</c>/<c>unk_token</c> strings) into <paramref name="directory"/>, created if
    /// needed. Other fields of an existing <c>tokenizer_config.json</c> are kept.
    /// </summary>
    public void Save(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        File.WriteAllBytes(Path.Combine(directory, ModelFileName), _modelBytes);
        TokenizerConfigFile.Write(directory, KindName, BosId, EosId, root =>
        {
            if (BosId is not null) root.TryAdd("bos_token", _tokenizer.BeginningOfSentenceToken);
            if (EosId is not null) root.TryAdd("eos_token", _tokenizer.EndOfSentenceToken);
            if (UnknownId is not null) root.TryAdd("unk_token", _tokenizer.UnknownToken);
        });
    }
}
