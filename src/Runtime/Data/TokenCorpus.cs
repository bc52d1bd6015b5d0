using System.Security.Cryptography;
using System.Text;

namespace HftRuntime.Runtime.Data;

/// <summary>
/// A plain UTF-8 text file as one stream of token ids (BOS first, EOS last when the tokenizer has them), split into
/// a training part and a held-out tail.
/// </summary>
public sealed class TokenCorpus
{
    private TokenCorpus(string path, string sha256, int[] train, int[] heldOut)
    {
        Path = path; Sha256 = sha256; Train = train; HeldOut = heldOut;
    }

    /// <summary>The source file.</summary>
    public string Path { get; }

    /// <summary>SHA-256 of the text's bytes (hex; of the decompressed text for a .gz file), for run.json.</summary>
    public string Sha256 { get; }

    /// <summary>Training tokens.</summary>
    public int[] Train { get; }

    /// <summary>Held-out tokens (the last <c>heldOutFraction</c> of the stream).</summary>
    public int[] HeldOut { get; }

    /// <summary>
    /// Tokenises <paramref name="path"/> (gzip-compressed when its name ends in .gz) line by line (each line keeps its newline) and holds out the last
    /// <paramref name="heldOutFraction"/> of the tokens. Invalid UTF-8 or an empty file is an
    /// <see cref="InvalidInputException"/> naming the file (and the byte offset).
    /// </summary>
    public static TokenCorpus FromTextFile(string path, ITokenizer tokenizer, double heldOutFraction = 0.05)
    {
        if (!(heldOutFraction >= 0 && heldOutFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(heldOutFraction), heldOutFraction, "held-out fraction must lie in [0, 1)");
        if (!File.Exists(path)) throw new InvalidInputException(path, "data file not found");
        byte[] bytes = File.ReadAllBytes(path);
        string text;
        if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
        {
            try
            {
                using var gz = new System.IO.Compression.GZipStream(new MemoryStream(bytes), System.IO.Compression.CompressionMode.Decompress);
                using var plain = new MemoryStream();
                gz.CopyTo(plain);
                bytes = plain.ToArray();
            }
            catch (InvalidDataException e)
            {
                throw new InvalidInputException(path, $"not a valid gzip file: {e.Message}", e);
            }
        }
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidInputException(path, $"not valid UTF-8 near byte {e.Index}", e);
        }
        if (string.IsNullOrWhiteSpace(text)) throw new InvalidInputException(path, "the data file holds no text");
        var ids = new List<int>(text.Length / 3);
        if (tokenizer.BosId is int bos) ids.Add(bos);
        int start = 0;
        while (start < text.Length)
        {
            int nl = text.IndexOf('\n', start);
            int end = nl < 0 ? text.Length : nl + 1;
            tokenizer.Encode(text[start..end], ids);
            start = end;
        }
        if (tokenizer.EosId is int eos) ids.Add(eos);
        int held = (int)(ids.Count * heldOutFraction);
        var all = ids.ToArray();
        return new TokenCorpus(path, Convert.ToHexStringLower(SHA256.HashData(bytes)), all[..(all.Length - held)], all[(all.Length - held)..]);
    }
}
