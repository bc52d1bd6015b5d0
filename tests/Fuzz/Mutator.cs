using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace HftRuntime.Tests.Fuzz;

/// <summary>
/// Deterministic mutations of valid seed inputs for the fuzz tests: byte edits (bit flips, interesting bytes and
/// words, insertions, deletions, duplicated chunks), truncation at structural boundaries, JSON structural edits
/// (values swapped for other types or extreme numbers, deep nesting, duplicate keys, unicode escapes with lone
/// surrogates, very long strings, removed members) and protobuf structural edits (field values, lengths, numbers and
/// wire types, duplicated, deleted and injected fields). Every edit appends a line to <see cref="Log"/>; the same seed
/// gives the same edits, so an input is reproduced from the base seed and its iteration number.
/// </summary>
public sealed class Mutator
{
    /// <summary>Bytes that matter to JSON, UTF-8 and binary length fields.</summary>
    private static readonly byte[] InterestingBytes =
    [
        0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, (byte)'"', (byte)'{', (byte)'}', (byte)'[', (byte)']', (byte)',', (byte)':',
        (byte)'\\', (byte)'0', (byte)'1', (byte)'5', (byte)'9', (byte)'-', (byte)'.', (byte)'e', (byte)'\n', (byte)'\r',
        (byte)' ', (byte)'\t', 0xC0, 0xC3, 0xED, 0xEF, 0xF4, 0xF8, 0xBF,
    ];

    /// <summary>Little-endian words written over 2, 4 or 8 bytes.</summary>
    private static readonly ulong[] InterestingWords =
    [
        0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000,
        0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, ulong.MaxValue, 0x7FC0_0000, 0x7F80_0000, 100_000_000, 100_000_001,
    ];

    /// <summary>JSON numbers at the edges of int, long, ulong and double.</summary>
    public static readonly string[] InterestingNumbers =
    [
        "0", "-0", "1", "-1", "2", "3", "7", "8", "1.5", "-1.5", "0.1", "1e2", "1E+2", "2.0", "1e309", "-1e309", "1e-400",
        "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967295", "4294967296", "9007199254740993",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
        "18446744073709551615", "18446744073709551616", "100000000000000000000000000000000000000", "123456789.123456789",
        "1" + new string('0', 400), "0." + new string('0', 400) + "1", "1e1000000000",
    ];

    /// <summary>JSON values of every type, small and odd.</summary>
    public static readonly string[] InterestingValues =
    [
        "null", "true", "false", "\"\"", "\" \"", "\"x\"", "\"0\"", "\"-1\"", "\"1e309\"", "\"null\"", "\"\\ud800\"",
        "\"\\udc00\\ud800\"", "\"a\\ud800b\"", "\"\\u0000\"", "\"\\uffff\"", "\"\\ud83d\\ude00\"", "[]", "{}", "[1]", "[null]",
        "[\"a\"]", "[[]]", "[{}]", "{\"\":null}", "[1,2,3]", "{\"a\":{}}", "[-1]", "[0,0]", "[1,2,3,4,5,6,7,8,9,10]",
    ];

    private static readonly string[] StringInserts =
    [
        "\\ud800", "\\udfff", "\\udbff\\udfff", "\\ud800\\u0041", "\\u0000", "\\u001f", "\\uffff", "\\ufeff", "\\u2028",
        "\\\"", "\\\\", "\\/", "\\n", "\\r\\n", "\\x", "\\u12", "\\", "é", "😀", "\u2028", " ", "\t",
    ];

    private static readonly byte[][] RawStringInserts =
    [
        [0x00], [0x1F], [0x0A], [0x0D], [0x0D, 0x0A], [0xC3], [0xED, 0xA0, 0x80], [0xC0, 0x80], [0xFF], [0xF4, 0x90, 0x80, 0x80],
        [0xEF, 0xBB, 0xBF], [0xE2, 0x82], [0x80],
    ];

    private static readonly string[] LongStringUnits = ["a", " ", "é", "\\u00e9", "\\ud83d\\ude00", "😀", "\\n", "ab cd "];

    private static readonly int[] NestingDepths = [2, 10, 63, 64, 65, 100, 256, 1000, 5000];

    private readonly string[] _extraStrings;

    /// <summary>A mutator drawing from <c>new Random(seed)</c>; <paramref name="extraStrings"/> are reader-specific
    /// strings (field names, dtype names, file names) that string and key edits also use.</summary>
    public Mutator(int seed, params string[] extraStrings)
    {
        Rng = new Random(seed);
        _extraStrings = extraStrings;
    }

    /// <summary>The generator the edits draw from (tests may draw their own choices from it).</summary>
    public Random Rng { get; }

    /// <summary>The edits made so far, in order.</summary>
    public List<string> Log { get; } = new();

    /// <summary>The edits made, on one line.</summary>
    public string Describe() => Log.Count == 0 ? "(unchanged)" : string.Join("; ", Log);

    /// <summary>A seed for one input: a stable hash of the base seed, the test's name and the iteration.</summary>
    public static int SeedFor(int baseSeed, string test, int iteration)
    {
        uint h = 2166136261;
        void Mix(int v)
        {
            for (int i = 0; i < 4; i++) { h ^= (byte)(v >> (8 * i)); h *= 16777619; }
        }
        Mix(baseSeed);
        foreach (char c in test) Mix(c);
        Mix(iteration);
        return (int)(h & 0x7FFF_FFFF);
    }

    /// <summary>One of <paramref name="items"/>, uniformly.</summary>
    public T Pick<T>(IReadOnlyList<T> items) => items[Rng.Next(items.Count)];

    /// <summary>True with probability <paramref name="p"/>.</summary>
    public bool Chance(double p) => Rng.NextDouble() < p;

    // ---- byte edits --------------------------------------------------------------------------------------------

    /// <summary>
    /// 1 to <paramref name="maxEdits"/> random byte edits. Positions fall in [<paramref name="regionStart"/>,
    /// <paramref name="regionEnd"/>) (the whole input by default) so a test can aim at a header.
    /// </summary>
    public byte[] Bytes(byte[] input, int maxEdits = 4, int regionStart = 0, int regionEnd = -1)
    {
        int edits = 1 + Rng.Next(Math.Max(1, maxEdits));
        var data = input;
        for (int e = 0; e < edits; e++)
        {
            int end = regionEnd < 0 ? data.Length : Math.Min(regionEnd, data.Length);
            int start = Math.Min(regionStart, end);
            data = Rng.Next(7) switch
            {
                0 => BitFlip(data, start, end),
                1 => ReplaceByte(data, start, end),
                2 => ReplaceWord(data, start, end),
                3 => Insert(data, start, end),
                4 => Delete(data, start, end),
                5 => DuplicateChunk(data, start, end),
                _ => Chance(0.5) ? BitFlip(data, start, end) : ReplaceByte(data, start, end),
            };
        }
        return data;
    }

    private int Position(int start, int end) => end > start ? Rng.Next(start, end) : Math.Max(0, start);

    /// <summary>Flips one bit.</summary>
    public byte[] BitFlip(byte[] data, int start, int end)
    {
        if (data.Length == 0) return data;
        var r = (byte[])data.Clone();
        int p = Math.Min(Position(start, end), r.Length - 1), bit = Rng.Next(8);
        r[p] ^= (byte)(1 << bit);
        Log.Add($"flip bit {bit} at {p}");
        return r;
    }

    /// <summary>Overwrites one byte with an interesting value.</summary>
    public byte[] ReplaceByte(byte[] data, int start, int end)
    {
        if (data.Length == 0) return data;
        var r = (byte[])data.Clone();
        int p = Math.Min(Position(start, end), r.Length - 1);
        byte b = Chance(0.8) ? Pick(InterestingBytes) : (byte)Rng.Next(256);
        r[p] = b;
        Log.Add($"byte {p} = 0x{b:X2}");
        return r;
    }

    /// <summary>Overwrites 2, 4 or 8 bytes with an interesting little-endian word.</summary>
    public byte[] ReplaceWord(byte[] data, int start, int end)
    {
        int size = Pick(new[] { 2, 4, 8 });
        if (data.Length < size) return ReplaceByte(data, start, end);
        var r = (byte[])data.Clone();
        int p = Math.Min(Position(start, end), r.Length - size);
        ulong w = Pick(InterestingWords);
        Span<byte> le = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(le, w);
        le[..size].CopyTo(r.AsSpan(p));
        Log.Add($"word{size * 8} at {p} = 0x{w:X}");
        return r;
    }

    /// <summary>Inserts 1 to 16 interesting or random bytes.</summary>
    public byte[] Insert(byte[] data, int start, int end)
    {
        int p = Math.Min(Position(start, end + 1), data.Length);
        int n = 1 + Rng.Next(Chance(0.7) ? 2 : 16);
        var ins = new byte[n];
        for (int i = 0; i < n; i++) ins[i] = Chance(0.7) ? Pick(InterestingBytes) : (byte)Rng.Next(256);
        Log.Add($"insert {Convert.ToHexString(ins)} at {p}");
        return Splice(data, p, 0, ins);
    }

    /// <summary>Deletes 1 to 64 bytes.</summary>
    public byte[] Delete(byte[] data, int start, int end)
    {
        if (data.Length == 0) return data;
        int p = Math.Min(Position(start, end), data.Length - 1);
        int n = Math.Min(data.Length - p, 1 + Rng.Next(Chance(0.6) ? 4 : 64));
        Log.Add($"delete {n} bytes at {p}");
        return Splice(data, p, n, []);
    }

    /// <summary>Copies a chunk of up to 256 bytes to another place (often right after itself).</summary>
    public byte[] DuplicateChunk(byte[] data, int start, int end)
    {
        if (data.Length == 0) return data;
        int p = Math.Min(Position(start, end), data.Length - 1);
        int n = Math.Min(data.Length - p, 1 + Rng.Next(256));
        int at = Chance(0.5) ? p + n : Math.Min(Position(start, end + 1), data.Length);
        Log.Add($"duplicate {n} bytes from {p} at {at}");
        return Splice(data, at, 0, data.AsSpan(p, n).ToArray());
    }

    /// <summary>Cuts the input at a boundary (or one byte either side of it) chosen from <paramref name="boundaries"/>.</summary>
    public byte[] Truncate(byte[] data, IReadOnlyList<int> boundaries)
    {
        int b = boundaries.Count > 0 ? Pick(boundaries) : Rng.Next(data.Length + 1);
        int delta = Rng.Next(5) switch { 0 => -1, 1 => 1, _ => 0 };
        int at = Math.Clamp(b + delta, 0, data.Length);
        Log.Add($"truncate to {at} bytes (of {data.Length})");
        return data.AsSpan(0, at).ToArray();
    }

    /// <summary>
    /// Positions worth cutting at in <paramref name="data"/>[start, end): before and after JSON punctuation, quotes,
    /// backslashes and line breaks, inside multi-byte UTF-8 characters, and the first and last bytes.
    /// </summary>
    public static List<int> Boundaries(ReadOnlySpan<byte> data, int start = 0, int end = -1)
    {
        if (end < 0) end = data.Length;
        var r = new List<int> { 0, 1, start, end, Math.Max(0, end - 1) };
        for (int i = start; i < end; i++)
        {
            byte b = data[i];
            if (b is (byte)'{' or (byte)'}' or (byte)'[' or (byte)']' or (byte)',' or (byte)':' or (byte)'"' or (byte)'\\'
                or (byte)'\n' or (byte)'\r')
            {
                r.Add(i);
                r.Add(i + 1);
            }
            else if ((b & 0xC0) == 0x80 && (i == start || (data[i - 1] & 0xC0) != 0x80))
            {
                r.Add(i); // inside a multi-byte character
            }
        }
        return r;
    }

    /// <summary>Replaces <paramref name="count"/> bytes at <paramref name="at"/> with <paramref name="insert"/>.</summary>
    public static byte[] Splice(ReadOnlySpan<byte> data, int at, int count, ReadOnlySpan<byte> insert)
    {
        var r = new byte[data.Length - count + insert.Length];
        data[..at].CopyTo(r);
        insert.CopyTo(r.AsSpan(at));
        data[(at + count)..].CopyTo(r.AsSpan(at + insert.Length));
        return r;
    }

    // ---- JSON structural edits -----------------------------------------------------------------------------------

    /// <summary>A value or container of a JSON text: bytes [Start, End); NameStart is its property's name or -1.</summary>
    private readonly record struct JsonNodeSpan(int Start, int End, JsonTokenType Kind, int NameStart, int NameEnd);

    /// <summary>The values of a JSON text (null when it does not parse).</summary>
    private static List<JsonNodeSpan>? Scan(byte[] json)
    {
        var nodes = new List<JsonNodeSpan>();
        var stack = new Stack<(int Start, JsonTokenType Kind, int NameStart, int NameEnd)>();
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 100_000, CommentHandling = JsonCommentHandling.Skip });
        int nameStart = -1, nameEnd = -1;
        try
        {
            while (reader.Read())
            {
                int start = (int)reader.TokenStartIndex;
                switch (reader.TokenType)
                {
                    case JsonTokenType.PropertyName:
                        nameStart = start;
                        nameEnd = start + reader.ValueSpan.Length + 2;
                        break;
                    case JsonTokenType.StartObject:
                    case JsonTokenType.StartArray:
                        stack.Push((start, reader.TokenType, nameStart, nameEnd));
                        nameStart = nameEnd = -1;
                        break;
                    case JsonTokenType.EndObject:
                    case JsonTokenType.EndArray:
                        var (s, k, ns, ne) = stack.Pop();
                        nodes.Add(new JsonNodeSpan(s, (int)reader.BytesConsumed, k, ns, ne));
                        break;
                    default:
                        int len = reader.ValueSpan.Length + (reader.TokenType == JsonTokenType.String ? 2 : 0);
                        nodes.Add(new JsonNodeSpan(start, start + len, reader.TokenType, nameStart, nameEnd));
                        nameStart = nameEnd = -1;
                        break;
                }
            }
        }
        catch (JsonException)
        {
            return null;
        }
        return nodes.Count > 0 ? nodes : null;
    }

    /// <summary>
    /// 1 to <paramref name="maxEdits"/> structural edits of a JSON text. An edit that leaves text that no longer scans
    /// ends the series (the result is still returned: invalid JSON is a fine input too).
    /// </summary>
    public byte[] Json(byte[] json, int maxEdits = 3)
    {
        int edits = 1 + Rng.Next(Math.Max(1, maxEdits));
        for (int e = 0; e < edits; e++)
        {
            var nodes = Scan(json);
            if (nodes is null)
            {
                if (e == 0) return Bytes(json, 2);
                break;
            }
            json = JsonEdit(json, nodes);
        }
        return json;
    }

    private byte[] JsonEdit(byte[] json, List<JsonNodeSpan> nodes)
    {
        var node = Pick(nodes);
        string text = Encoding.UTF8.GetString(json, node.Start, node.End - node.Start);
        switch (Rng.Next(11))
        {
            case 0:
            {
                string v = Pick(InterestingValues);
                Log.Add($"json value at {node.Start} = {Short(v)}");
                return Replace(json, node.Start, node.End, v);
            }
            case 1:
            {
                string v = SwapType(node, text);
                Log.Add($"json type swap at {node.Start}: {Short(text)} -> {Short(v)}");
                return Replace(json, node.Start, node.End, v);
            }
            case 2:
            {
                var numbers = nodes.Where(n => n.Kind == JsonTokenType.Number).ToList();
                if (numbers.Count > 0) node = Pick(numbers);
                string v = Pick(InterestingNumbers);
                Log.Add($"json number at {node.Start} = {Short(v)}");
                return Replace(json, node.Start, node.End, v);
            }
            case 3:
            {
                var props = nodes.Where(n => n.NameStart >= 0).ToList();
                if (props.Count == 0) goto case 0;
                var p = Pick(props);
                string member = Encoding.UTF8.GetString(json, p.NameStart, p.End - p.NameStart);
                if (Chance(0.5))
                {
                    string name = Encoding.UTF8.GetString(json, p.NameStart, p.NameEnd - p.NameStart);
                    member = name + ": " + (Chance(0.5) ? Pick(InterestingValues) : Pick(InterestingNumbers));
                }
                Log.Add($"json duplicate member at {p.End}: {Short(member)}");
                return Replace(json, p.End, p.End, ", " + member);
            }
            case 4:
            {
                int start = node.NameStart >= 0 ? node.NameStart : node.Start;
                int end = node.End;
                int after = SkipWhitespace(json, end);
                if (after < json.Length && json[after] == ',') end = after + 1;
                else
                {
                    int before = start - 1;
                    while (before >= 0 && json[before] is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r') before--;
                    if (before >= 0 && json[before] == ',') start = before;
                }
                Log.Add($"json remove [{start}, {end})");
                return Replace(json, start, end, "");
            }
            case 5:
            {
                int depth = Pick(NestingDepths);
                bool arrays = Chance(0.6);
                var sb = new StringBuilder();
                for (int i = 0; i < depth; i++) sb.Append(arrays ? "[" : "{\"a\":");
                sb.Append(text);
                sb.Append(arrays ? ']' : '}', depth);
                Log.Add($"json nest {depth} {(arrays ? "arrays" : "objects")} at {node.Start}");
                return Replace(json, node.Start, node.End, sb.ToString());
            }
            case 6:
            case 7:
            {
                var strings = nodes.Where(n => n.Kind == JsonTokenType.String).ToList();
                if (strings.Count == 0) goto case 0;
                var s = Pick(strings);
                int at = s.Start + 1 + Rng.Next(s.End - s.Start - 1);
                while (at > s.Start + 1 && json[at - 1] == '\\') at--; // do not split an escape
                if (Chance(0.7))
                {
                    string ins = Pick(StringInserts);
                    Log.Add($"json string insert {Short(ins)} at {at}");
                    return Replace(json, at, at, ins);
                }
                var raw = Pick(RawStringInserts);
                Log.Add($"json string insert raw {Convert.ToHexString(raw)} at {at}");
                return Splice(json, at, 0, raw);
            }
            case 8:
            {
                var strings = nodes.Where(n => n.Kind == JsonTokenType.String).ToList();
                if (strings.Count == 0) goto case 0;
                var s = Pick(strings);
                string unit = Pick(LongStringUnits);
                int count = Pick(new[] { 1000, 10_000, 100_000 }) / Math.Max(1, unit.Length / 2);
                var sb = new StringBuilder(unit.Length * count + 2).Append('"');
                for (int i = 0; i < count; i++) sb.Append(unit);
                sb.Append('"');
                Log.Add($"json long string at {s.Start}: {count} x {Short(unit)}");
                return Replace(json, s.Start, s.End, sb.ToString());
            }
            case 9:
            {
                var props = nodes.Where(n => n.NameStart >= 0).ToList();
                if (props.Count == 0) goto case 1;
                var p = Pick(props);
                string name;
                if (Chance(0.4))
                {
                    var other = Pick(props);
                    name = Encoding.UTF8.GetString(json, other.NameStart, other.NameEnd - other.NameStart);
                }
                else
                {
                    var choices = new List<string> { "", "__metadata__", "\\u0000", "a\\ud800", new string('k', 300), "te\\u0078t", "X" };
                    choices.AddRange(_extraStrings);
                    name = JsonSerializerString(Pick(choices));
                }
                Log.Add($"json rename key at {p.NameStart} to {Short(name)}");
                return Replace(json, p.NameStart, p.NameEnd, name);
            }
            default:
            {
                if (_extraStrings.Length > 0 && Chance(0.6))
                {
                    var strings = nodes.Where(n => n.Kind == JsonTokenType.String).ToList();
                    if (strings.Count > 0) node = Pick(strings);
                    string v = JsonSerializerString(Pick(_extraStrings));
                    Log.Add($"json value at {node.Start} = {Short(v)}");
                    return Replace(json, node.Start, node.End, v);
                }
                string copy = Encoding.UTF8.GetString(json, node.Start, node.End - node.Start);
                var target = Pick(nodes);
                Log.Add($"json copy value from {node.Start} to {target.Start}");
                return Replace(json, target.Start, target.End, copy);
            }
        }
    }

    private string SwapType(JsonNodeSpan node, string text)
    {
        switch (node.Kind)
        {
            case JsonTokenType.String:
                string inner = text[1..^1];
                return Rng.Next(3) switch { 0 => inner.Length > 0 ? inner : "0", 1 => "[" + text + "]", _ => "{" + text + ": 1}" };
            case JsonTokenType.Number:
                return Rng.Next(3) switch { 0 => "\"" + text + "\"", 1 => "[" + text + "]", _ => "{\"v\": " + text + "}" };
            case JsonTokenType.True:
            case JsonTokenType.False:
                return Pick(new[] { "\"" + text + "\"", "1", "0", "null" });
            case JsonTokenType.Null:
                return Pick(new[] { "\"null\"", "0", "{}", "[]", "false" });
            default:
                return Rng.Next(3) switch { 0 => JsonSerializerString(text), 1 => "[" + text + "]", _ => "null" };
        }
    }

    private static string JsonSerializerString(string s)
    {
        // Escaping that keeps the caller's own escapes: only quotes are added unless the text holds a raw quote.
        if (!s.Contains('"') && !s.Contains('\n')) return "\"" + s + "\"";
        return JsonSerializer.Serialize(s);
    }

    private static int SkipWhitespace(byte[] json, int i)
    {
        while (i < json.Length && json[i] is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r') i++;
        return i;
    }

    private static byte[] Replace(byte[] json, int start, int end, string text) =>
        Splice(json, start, end - start, Encoding.UTF8.GetBytes(text));

    private static string Short(string s) => s.Length <= 40 ? s : s[..37] + "...";

    // ---- protobuf structural edits -----------------------------------------------------------------------------

    /// <summary>One protobuf field; a length-delimited field that parses as a message also has its children.</summary>
    private sealed class PbField
    {
        public int Number;
        public int Wire;
        public ulong Value;           // varint, fixed32, fixed64
        public byte[] Bytes = [];     // length-delimited
        public List<PbField>? Children;
        public bool Dirty;            // children changed: serialise them instead of Bytes
        public long? LengthLie;       // a wrong length written for a length-delimited field
        public PbField? Parent;
        public PbField Clone() => new()
        {
            Number = Number, Wire = Wire, Value = Value, Bytes = Bytes, Children = Children, Dirty = Dirty, Parent = Parent,
        };
    }

    /// <summary>Known field numbers by message (sentencepiece_model.proto): root, pieces, trainer spec, normalizer.</summary>
    private static readonly int[] RootFields = [1, 2, 3, 4, 5];
    private static readonly int[] PieceFields = [1, 2, 3];
    private static readonly int[] TrainerFields = [1, 3, 4, 24, 25, 35, 40, 41, 42, 43, 45, 46, 47, 48, 50];
    private static readonly int[] NormalizerFields = [1, 2, 3, 4, 5];

    private static readonly ulong[] InterestingVarints =
    [
        0, 1, 2, 3, 4, 5, 6, 7, 0x7F, 0x80, 0xFF, 256, 258, 511, 512, 513, 100_000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
        0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, ulong.MaxValue, ulong.MaxValue - 1,
    ];

    private static readonly uint[] InterestingFloats =
    [
        0x7FC0_0000, 0x7F80_0000, 0xFF80_0000, 0x8000_0000, 0x7F7F_FFFF, 0x0000_0001, 0, 0xC61C_4000, 0x4B00_0000,
    ];

    private static readonly byte[][] InterestingPieces =
    [
        [], "<unk>"u8.ToArray(), "<s>"u8.ToArray(), "</s>"u8.ToArray(), "<pad>"u8.ToArray(), "▁"u8.ToArray(),
        "<0x41>"u8.ToArray(), "<0xZZ>"u8.ToArray(), "<0x>"u8.ToArray(), " "u8.ToArray(), "a"u8.ToArray(),
        [0xFF, 0xFE], [0xED, 0xA0, 0x80], [0xC3], [0x00], [0x7F, 0x00], [0x61, 0x00], "▁▁▁▁"u8.ToArray(), "\n"u8.ToArray(),
    ];

    private static List<PbField>? ParsePb(ReadOnlySpan<byte> data, int depth, PbField? parent)
    {
        var fields = new List<PbField>();
        int pos = 0;
        while (pos < data.Length)
        {
            if (!TryVarint(data, ref pos, out ulong key)) return null;
            ulong number = key >> 3;
            int wire = (int)(key & 7);
            if (number == 0 || number > 0x1FFF_FFFF) return null;
            var f = new PbField { Number = (int)number, Wire = wire, Parent = parent };
            switch (wire)
            {
                case 0:
                    if (!TryVarint(data, ref pos, out f.Value)) return null;
                    break;
                case 1:
                    if (data.Length - pos < 8) return null;
                    f.Value = BinaryPrimitives.ReadUInt64LittleEndian(data[pos..]);
                    pos += 8;
                    break;
                case 5:
                    if (data.Length - pos < 4) return null;
                    f.Value = BinaryPrimitives.ReadUInt32LittleEndian(data[pos..]);
                    pos += 4;
                    break;
                case 2:
                    if (!TryVarint(data, ref pos, out ulong len) || len > (ulong)(data.Length - pos)) return null;
                    f.Bytes = data.Slice(pos, (int)len).ToArray();
                    pos += (int)len;
                    if (depth < 2 && len > 0) f.Children = ParsePb(f.Bytes, depth + 1, f);
                    break;
                default:
                    return null;
            }
            fields.Add(f);
        }
        return fields;
    }

    /// <summary>
    /// Positions worth cutting a protobuf message at: the start of every field's key, value and (for length-delimited
    /// fields) body and the middle of the body, two levels deep, plus the first and last bytes.
    /// </summary>
    public static List<int> ProtobufBoundaries(ReadOnlySpan<byte> data)
    {
        var r = new List<int> { 0, 1, data.Length, Math.Max(0, data.Length - 1) };
        void Walk(ReadOnlySpan<byte> d, int offset, int depth)
        {
            int pos = 0;
            while (pos < d.Length)
            {
                r.Add(offset + pos);
                if (!TryVarint(d, ref pos, out ulong key)) return;
                r.Add(offset + pos);
                switch ((int)(key & 7))
                {
                    case 0:
                        if (!TryVarint(d, ref pos, out _)) return;
                        break;
                    case 1:
                        pos += 8;
                        break;
                    case 5:
                        pos += 4;
                        break;
                    case 2:
                        if (!TryVarint(d, ref pos, out ulong len) || len > (ulong)(d.Length - pos)) return;
                        r.Add(offset + pos);
                        r.Add(offset + pos + (int)len / 2);
                        if (depth < 1) Walk(d.Slice(pos, (int)len), offset + pos, depth + 1);
                        pos += (int)len;
                        break;
                    default:
                        return;
                }
            }
        }
        Walk(data, 0, 0);
        int length = data.Length;
        r.RemoveAll(x => x > length);
        return r;
    }

    private static bool TryVarint(ReadOnlySpan<byte> data, ref int pos, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64 && pos < data.Length; shift += 7)
        {
            byte b = data[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return true;
        }
        return false;
    }

    private static void WriteVarint(List<byte> output, ulong value)
    {
        while (value >= 0x80)
        {
            output.Add((byte)(value | 0x80));
            value >>= 7;
        }
        output.Add((byte)value);
    }

    private static void WritePb(List<byte> output, List<PbField> fields)
    {
        foreach (var f in fields)
        {
            WriteVarint(output, ((ulong)(uint)f.Number << 3) | (uint)f.Wire);
            switch (f.Wire)
            {
                case 0:
                    WriteVarint(output, f.Value);
                    break;
                case 1:
                    for (int i = 0; i < 8; i++) output.Add((byte)(f.Value >> (8 * i)));
                    break;
                case 5:
                    for (int i = 0; i < 4; i++) output.Add((byte)(f.Value >> (8 * i)));
                    break;
                case 2:
                    byte[] body = f.Bytes;
                    if (f.Dirty && f.Children is not null)
                    {
                        var inner = new List<byte>();
                        WritePb(inner, f.Children);
                        body = inner.ToArray();
                    }
                    WriteVarint(output, f.LengthLie is long lie ? (ulong)lie : (ulong)body.Length);
                    output.AddRange(body);
                    break;
                default:
                    break; // group or invalid wire types: the bare key
            }
        }
    }

    /// <summary>
    /// 1 to <paramref name="maxEdits"/> structural edits of a protobuf message (falls back to byte edits when the
    /// input does not parse).
    /// </summary>
    public byte[] Protobuf(byte[] message, int maxEdits = 3)
    {
        var root = ParsePb(message, 0, null);
        if (root is null || root.Count == 0) return Bytes(message, 2);
        int edits = 1 + Rng.Next(Math.Max(1, maxEdits));
        for (int e = 0; e < edits; e++) PbEdit(root);
        var output = new List<byte>(message.Length + 64);
        WritePb(output, root);
        return output.ToArray();
    }

    private void PbEdit(List<PbField> root)
    {
        var all = new List<(PbField Field, List<PbField> Siblings)>();
        void Collect(List<PbField> list)
        {
            foreach (var f in list)
            {
                all.Add((f, list));
                if (f.Children is not null) Collect(f.Children);
            }
        }
        Collect(root);
        // Aim at the trainer and normalizer specs as often as at the (many) pieces.
        var (field, siblings) = Chance(0.5) && all.Any(a => a.Field.Parent is { Number: 2 or 3, Parent: null })
            ? Pick(all.Where(a => a.Field.Parent is { Number: 2 or 3, Parent: null }).ToList())
            : Pick(all);
        string where = $"field {Path(field)}";
        for (var p = field.Parent; p is not null; p = p.Parent) p.Dirty = true;

        switch (Rng.Next(8))
        {
            case 0:
            case 1:
                switch (field.Wire)
                {
                    case 0:
                        field.Value = Pick(InterestingVarints);
                        Log.Add($"pb {where} = {field.Value}");
                        break;
                    case 5:
                        field.Value = Pick(InterestingFloats);
                        Log.Add($"pb {where} = fixed32 0x{field.Value:X8}");
                        break;
                    case 1:
                        field.Value = Pick(InterestingWords);
                        Log.Add($"pb {where} = fixed64 0x{field.Value:X}");
                        break;
                    default:
                        field.Bytes = Rng.Next(3) switch
                        {
                            0 => Pick(InterestingPieces),
                            1 => Pick(all.Where(a => a.Field.Wire == 2).ToList()).Field.Bytes,
                            _ => Encoding.UTF8.GetBytes(new string('a', Pick(new[] { 100, 10_000 }))),
                        };
                        field.Children = null;
                        Log.Add($"pb {where} = {field.Bytes.Length} bytes {Convert.ToHexString(field.Bytes.AsSpan(0, Math.Min(8, field.Bytes.Length)))}");
                        break;
                }
                break;
            case 2:
                if (field.Wire != 2) goto case 0;
                field.LengthLie = Pick(new long[] { 0, 1, field.Bytes.Length - 1, field.Bytes.Length + 1, field.Bytes.Length + 100, 0x7FFF_FFFF, 0xFFFF_FFFF, long.MaxValue });
                Log.Add($"pb {where}: length written as {field.LengthLie}");
                break;
            case 3:
                siblings.Remove(field);
                Log.Add($"pb delete {where}");
                break;
            case 4:
                var copy = field.Clone();
                siblings.Insert(Chance(0.5) ? siblings.IndexOf(field) + 1 : siblings.Count, copy);
                Log.Add($"pb duplicate {where}");
                break;
            case 5:
                if (Chance(0.5))
                {
                    field.Number = Pick(KnownFields(field.Parent));
                    Log.Add($"pb {where}: number changed to {field.Number}");
                }
                else
                {
                    int wire = Pick(new[] { 0, 1, 2, 3, 5, 6 });
                    Log.Add($"pb {where}: wire type {field.Wire} changed to {wire}");
                    if (wire == 2 && field.Wire != 2) field.Bytes = [];
                    field.Wire = wire; // 3 (a group start) and 6 (invalid) are written as a bare key
                }
                break;
            default:
            {
                // Inject a new field into the message that holds this one (or into one of this one's children).
                var parent = field.Parent;
                var list = siblings;
                if (field.Children is not null && Chance(0.5))
                {
                    parent = field;
                    list = field.Children;
                    field.Dirty = true;
                }
                int number = Pick(KnownFields(parent));
                var f = new PbField { Number = number, Parent = parent };
                if (Chance(0.65))
                {
                    f.Wire = 0;
                    f.Value = Pick(InterestingVarints);
                }
                else if (Chance(0.3))
                {
                    f.Wire = 5;
                    f.Value = Pick(InterestingFloats);
                }
                else
                {
                    f.Wire = 2;
                    f.Bytes = Pick(InterestingPieces);
                }
                list.Insert(Rng.Next(list.Count + 1), f);
                Log.Add($"pb inject field {number} (wire {f.Wire}) into {(parent is null ? "root" : Path(parent))}");
                break;
            }
        }
    }

    private static int[] KnownFields(PbField? parent) => parent switch
    {
        null => RootFields,
        { Number: 1, Parent: null } => PieceFields,
        { Number: 2, Parent: null } => TrainerFields,
        { Number: 3 or 5, Parent: null } => NormalizerFields,
        _ => PieceFields,
    };

    private static string Path(PbField f) => f.Parent is null ? f.Number.ToString() : Path(f.Parent) + "." + f.Number;
}
