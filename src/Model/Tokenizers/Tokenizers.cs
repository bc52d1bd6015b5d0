using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// Creates tokenizers from a command-line spec (<see cref="Create"/>) or from the files of a model directory
/// (<see cref="Load"/>). Inside namespace <c>HftRuntime.Model</c> the class is reached as
/// <c>Tokenizers.Tokenizers</c>, since the namespace of the same name wins there.
/// </summary>
public static class Tokenizers
{
    /// <summary>
    /// A tokenizer from a spec: <c>"bytes"</c>; <c>"tiktoken:NAME"</c> (e.g. <c>tiktoken:cl100k_base</c>); the path
    /// of a SentencePiece <c>tokenizer.model</c> or a byte-level BPE <c>tokenizer.json</c> file; or a model directory,
    /// read as <see cref="Load"/> does.
    /// </summary>
    /// <exception cref="InvalidInputException">The spec is unknown, or names a missing or unusable file.</exception>
    public static ITokenizer Create(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (string.Equals(spec, ByteTokenizer.KindName, StringComparison.OrdinalIgnoreCase)) return new ByteTokenizer();
        if (spec.StartsWith(TiktokenTokenizer.SpecPrefix, StringComparison.OrdinalIgnoreCase))
            return TiktokenTokenizer.Create(spec[TiktokenTokenizer.SpecPrefix.Length..]);
        if (spec.Length > 0 && Directory.Exists(spec)) return Load(spec);
        if (spec.Length > 0 && File.Exists(spec))
            return Path.GetFileName(spec) == HfBpeTokenizer.FileName ? HfBpeTokenizer.Load(Path.GetDirectoryName(Path.GetFullPath(spec))!) : SentencePieceTokenizer.Load(spec);
        throw new InvalidInputException(spec.Length == 0 ? "(empty tokenizer spec)" : spec,
            $"unknown tokenizer: expected \"{ByteTokenizer.KindName}\", \"{TiktokenTokenizer.SpecPrefix}NAME\", " +
            $"the path of a SentencePiece {SentencePieceTokenizer.ModelFileName} or a Hugging Face {HfBpeTokenizer.FileName} file, or a directory containing one " +
            "(no such file or directory)");
    }

    /// <summary>
    /// The tokenizer of a model directory. A <c>tokenizer_config.json</c> with an <c>"hft_tokenizer"</c> field
    /// (written by <see cref="ITokenizer.Save"/>) decides the kind; otherwise a SentencePiece <c>tokenizer.model</c>
    /// is used, or else a Hugging Face <c>tokenizer.json</c> of the byte-level BPE kind (<see cref="HfBpeTokenizer"/>). BOS/EOS ids stated in a config written by this runtime must agree with the tokenizer.
    /// </summary>
    /// <exception cref="InvalidInputException">
    /// The directory is missing, holds no tokenizer this runtime understands, or its tokenizer files are corrupt.
    /// </exception>
    public static ITokenizer Load(string modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        if (!Directory.Exists(modelDirectory)) throw new InvalidInputException(modelDirectory, "model directory not found");

        string modelPath = Path.Combine(modelDirectory, SentencePieceTokenizer.ModelFileName);
        string configPath = Path.Combine(modelDirectory, TokenizerConfigFile.FileName);
        var config = TokenizerConfigFile.TryRead(modelDirectory);
        string? kind = config is null ? null : TokenizerConfigFile.OptionalString(config, TokenizerConfigFile.KindField, configPath);

        ITokenizer tokenizer;
        switch (kind)
        {
            case null when File.Exists(modelPath):
                return SentencePieceTokenizer.Load(modelPath);
            case null when File.Exists(Path.Combine(modelDirectory, HfBpeTokenizer.FileName)):
                return HfBpeTokenizer.Load(modelDirectory);
            case null:
                throw NotFound(modelDirectory);
            case ByteTokenizer.KindName:
                tokenizer = new ByteTokenizer();
                break;
            case SentencePieceTokenizer.KindName:
                if (!File.Exists(modelPath))
                {
                    throw new InvalidInputException(modelPath,
                        $"SentencePiece model file not found ({TokenizerConfigFile.FileName} says \"{TokenizerConfigFile.KindField}\": \"{kind}\")");
                }
                tokenizer = SentencePieceTokenizer.Load(modelPath);
                break;
            case HfBpeTokenizer.KindName:
                tokenizer = HfBpeTokenizer.Load(modelDirectory);
                break;
            case TiktokenTokenizer.KindName:
                string encoding = TokenizerConfigFile.OptionalString(config!, TiktokenTokenizer.EncodingField, configPath)
                    ?? throw new InvalidInputException(configPath, $"\"{TiktokenTokenizer.EncodingField}\" is missing");
                try
                {
                    tokenizer = TiktokenTokenizer.Create(encoding);
                }
                catch (InvalidInputException e)
                {
                    throw new InvalidInputException(configPath, $"\"{TiktokenTokenizer.EncodingField}\": {e.Message}", e);
                }
                break;
            default:
                throw new InvalidInputException(configPath,
                    $"\"{TokenizerConfigFile.KindField}\": unknown tokenizer kind '{kind}' (expected \"{ByteTokenizer.KindName}\", " +
                    $"\"{SentencePieceTokenizer.KindName}\", \"{HfBpeTokenizer.KindName}\" or \"{TiktokenTokenizer.KindName}\")");
        }

        string what = $"the {tokenizer.Kind} tokenizer";
        TokenizerConfigFile.CheckId(config!, TokenizerConfigFile.BosField, tokenizer.BosId, configPath, what);
        TokenizerConfigFile.CheckId(config!, TokenizerConfigFile.EosField, tokenizer.EosId, configPath, what);
        return tokenizer;
    }

    private static InvalidInputException NotFound(string modelDirectory)
    {
        return new InvalidInputException(modelDirectory, $"no tokenizer found: looked for {SentencePieceTokenizer.ModelFileName} (SentencePiece), " +
            $"{HfBpeTokenizer.FileName} (Hugging Face byte-level BPE) and {TokenizerConfigFile.FileName} with an \"{TokenizerConfigFile.KindField}\" field");
    }
}
