using System.Buffers;
using System.Text;
using HftRuntime.Runtime.Data;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// The simplest tokenizer: ids 0..255 are the bytes of the UTF-8 encoding of the text, 256 is BOS and 257 is EOS.
/// Needs no files; <see cref="Save"/> writes a small <c>tokenizer_config.json</c> so that <see cref="Tokenizers.Load"/>
/// recognises the model directory. Lone surrogates in the text are encoded as U+FFFD; invalid UTF-8 in decoded ids
/// becomes U+FFFD.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    /// <summary>The <see cref="Kind"/> of this tokenizer, also its spec for <see cref="Tokenizers.Create"/>.</summary>
    public const string KindName = "bytes";

    /// <summary>Beginning-of-sequence id.</summary>
    public const int BosTokenId = 256;

    /// <summary>End-of-sequence id.</summary>
    public const int EosTokenId = 257;

    /// <summary>Number of ids: 256 bytes, BOS and EOS.</summary>
    public const int TokenCount = 258;

    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    /// <inheritdoc/>
    public string Kind => KindName;

    /// <inheritdoc/>
    public int VocabSize => TokenCount;

    /// <inheritdoc/>
    public int? BosId => BosTokenId;

    /// <inheritdoc/>
    public int? EosId => EosTokenId;

    /// <inheritdoc/>
    public void Encode(string text, List<int> output)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(output);
        int count = Utf8.GetByteCount(text);
        if (count == 0) return;
        byte[]? rented = null;
        Span<byte> bytes = count <= 1024 ? stackalloc byte[count] : (rented = ArrayPool<byte>.Shared.Rent(count));
        try
        {
            int written = Utf8.GetBytes(text, bytes);
            output.EnsureCapacity(output.Count + written);
            foreach (byte b in bytes[..written]) output.Add(b);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, <see cref="VocabSize"/>).</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        TokenIds.CheckRange(ids, TokenCount);
        byte[]? rented = null;
        Span<byte> bytes = ids.Length <= 1024 ? stackalloc byte[ids.Length] : (rented = ArrayPool<byte>.Shared.Rent(ids.Length));
        try
        {
            int n = 0;
            foreach (int id in ids)
                if (id < 256) bytes[n++] = (byte)id;
            return Utf8.GetString(bytes[..n]);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Writes <c>tokenizer_config.json</c> with <c>"hft_tokenizer": "bytes"</c> and the BOS/EOS ids into
    /// <paramref name="directory"/> (created if needed). Other fields of an existing file are kept.
    /// </summary>
    public void Save(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        TokenizerConfigFile.Write(directory, KindName, BosTokenId, EosTokenId, extra: null);
    }
}
