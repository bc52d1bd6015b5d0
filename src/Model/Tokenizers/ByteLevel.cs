using System.Text;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// GPT-2's byte-level alphabet, which byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM, ...) are spelt in: each
/// byte is one printable character — the printable Latin-1 bytes stand for themselves, the other 68 bytes for
/// U+0100 onwards in byte order (space is 'Ġ', newline 'Ċ').
/// </summary>
internal static class ByteLevel
{
    private static readonly char[] ByteToChar = Build();
    private static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    private static char[] Build()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    /// <summary>The text's UTF-8 bytes spelt in the byte-level alphabet.</summary>
    public static string Encode(string text) => Spell(Encoding.UTF8.GetBytes(text));

    /// <summary>The bytes a byte-level string spells, appended to <paramref name="output"/>; false if a character is outside the alphabet.</summary>
    public static bool TryDecode(string text, List<byte> output)
    {
        foreach (char c in text)
            if (!CharToByte.ContainsKey(c)) return false;
        foreach (char c in text) output.Add(CharToByte[c]);
        return true;
    }

    /// <summary>The byte-level spelling of raw bytes.</summary>
    public static string Spell(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }
}
