using System.Buffers.Binary;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;

namespace HftRuntime.Runtime.Data;

/// <summary>
/// A plain UTF-8 text file as one stream of token ids (BOS first, EOS last when the tokenizer has them), split into
/// a training part and a held-out tail.
/// </summary>
public sealed class TokenCorpus
{
    /// <summary>The most text a corpus may hold, in bytes (decompressed; 1 GB): the text is decoded into one string,
    /// which .NET caps at just under 2^30 characters. Larger data belongs in JSON Lines, which is streamed.</summary>
    public const long MaxTextBytes = 1_000_000_000;

    private static readonly uint[] Crc32Table = BuildCrc32Table();

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
    /// <see cref="InvalidInputException"/> naming the file (and the byte offset); so are a corrupt or truncated .gz
    /// file and text larger than <see cref="MaxTextBytes"/>.
    /// </summary>
    public static TokenCorpus FromTextFile(string path, ITokenizer tokenizer, double heldOutFraction = 0.05)
    {
        if (!(heldOutFraction >= 0 && heldOutFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(heldOutFraction), heldOutFraction, "held-out fraction must lie in [0, 1)");
        if (!File.Exists(path)) throw new InvalidInputException(path, "data file not found");
        long length = new FileInfo(path).Length;
        if (length > MaxTextBytes) throw TooLarge(path, $"the file's {length} bytes are");
        byte[] bytes = File.ReadAllBytes(path);
        string text;
        if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) bytes = Gunzip(path, bytes);
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

    private static InvalidInputException TooLarge(string path, string what) =>
        new(path, $"{what} more than the {MaxTextBytes} bytes a text corpus may hold; use JSON Lines ({{\"text\": ...}} per line), which is streamed");

    /// <summary>
    /// The decompressed bytes of a gzip file (one or more members). GZipStream returns what it decoded of a stream cut
    /// short without complaint, so the trailer is checked too: the last member ends with the CRC-32 and the length
    /// (mod 2^32) of its own output, which is a suffix of the whole.
    /// </summary>
    private static byte[] Gunzip(string path, byte[] compressed)
    {
        using var plain = new MemoryStream();
        try
        {
            using var gz = new GZipStream(new MemoryStream(compressed), CompressionMode.Decompress);
            var buffer = new byte[1 << 16];
            int n;
            while ((n = gz.Read(buffer)) > 0)
            {
                if (plain.Length + n > MaxTextBytes) throw TooLarge(path, "the text decompresses to");
                plain.Write(buffer, 0, n);
            }
        }
        catch (InvalidDataException e)
        {
            throw new InvalidInputException(path, $"not a valid gzip file: {e.Message}", e);
        }
        var text = plain.GetBuffer().AsSpan(0, (int)plain.Length);
        const int Trailer = 8, SmallestMember = 18;
        if (compressed.Length < SmallestMember)
            throw new InvalidInputException(path, $"not a valid gzip file: {compressed.Length} bytes are too few for one gzip member (18)");
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(compressed.AsSpan(compressed.Length - Trailer));
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(compressed.AsSpan(compressed.Length - 4));
        if (size > (uint)text.Length || Crc32(text[(text.Length - (int)size)..]) != crc)
        {
            throw new InvalidInputException(path,
                "not a valid gzip file: it is truncated or corrupt (the CRC-32 and length at its end do not match the decompressed text)");
        }
        return text.ToArray();
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFF_FFFF;
        foreach (byte b in data) c = Crc32Table[(c ^ b) & 0xFF] ^ (c >> 8);
        return ~c;
    }

    private static uint[] BuildCrc32Table()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        return table;
    }
}
