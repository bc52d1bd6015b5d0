using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Fuzz;

/// <summary>
/// Fuzzing of the safetensors readers (<see cref="SafeTensorsFile"/>, <see cref="SafeTensorsCheckpoint"/>): mutated and
/// truncated copies of the fixtures' model.safetensors and golden.safetensors, and of a sharded checkpoint's index.
/// An accepted file must keep the header's promises (every tensor inside the file, sizes matching shapes) and every
/// tensor must be readable in each way its dtype allows.
/// </summary>
[TestFixture]
public sealed class SafeTensorsFuzzTests
{
    private static readonly string[] DTypeNames =
    [
        "F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL",
        "f32", "F32 ", "", "F4", "Q4_0", "float32",
    ];

    private sealed record Seed(string Name, byte[] Bytes, int HeaderLength, List<int> Boundaries)
    {
        public int DataStart => 8 + HeaderLength;
        public ReadOnlySpan<byte> Header => Bytes.AsSpan(8, HeaderLength);
        public ReadOnlySpan<byte> Data => Bytes.AsSpan(DataStart);
    }

    private string _dir = "";
    private float[] _f32 = [];
    private double[] _f64 = [];
    private long[] _i64 = [];
    private byte[] _bytes = [];

    [SetUp]
    public void SetUp() => _dir = Fixtures.TempDirectory();

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static Seed LoadSeed(string caseName, string file)
    {
        byte[] bytes = File.ReadAllBytes(Path.Combine(Fixtures.Case(caseName), file));
        int h = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        // Cut points: inside the length field, every JSON boundary of the header, the header's end, and the first,
        // middle and last byte of every tensor's data.
        var boundaries = Mutator.Boundaries(bytes, 8, 8 + h);
        for (int i = 0; i <= 8; i++) boundaries.Add(i);
        var header = (JsonObject)JsonNode.Parse(bytes.AsSpan(8, h))!;
        foreach (var (name, entry) in header)
        {
            if (name == "__metadata__") continue;
            var offsets = entry!["data_offsets"]!.AsArray();
            long b = (long)offsets[0]!, e = (long)offsets[1]!;
            boundaries.AddRange([(int)(8 + h + b), (int)(8 + h + b + 1), (int)(8 + h + (b + e) / 2), (int)(8 + h + e - 1)]);
        }
        return new Seed($"{caseName}/{file}", bytes, h, boundaries);
    }

    private static Seed[] LoadSeeds() =>
    [
        LoadSeed("llama-mha", "model.safetensors"),
        LoadSeed("llama-gqa-tied-hft", "model.safetensors"),
        LoadSeed("llama-mha", "golden.safetensors"),
        LoadSeed("llama-gqa-tied-hft", "golden.safetensors"),
    ];

    /// <summary>
    /// 12,000 mutated files a run: header-length field edits (0, 1, 7, one off, the file length and beyond, the limit
    /// and one past it, 2^31, 2^32, 2^63, 2^64 − 1, random), edits of a parsed header rewritten with a correct or stale
    /// length (data_offsets, shape and dtype values, swapped, shifted and overlapping ranges, overflowing shapes,
    /// removed and added fields and tensors, metadata of the wrong type), JSON structural edits of the header text,
    /// byte edits aimed at the header, and truncation at every boundary.
    /// <para>
    /// Allocation bound: 32 bytes per header byte the length field admits (the header array, the JsonDocument over it,
    /// the names and TensorInfo objects; the data is read into the test's own buffers) plus 2 MB (the 1 MB staging
    /// buffer of converted reads and exceptions). A header length that the file cannot hold admits nothing, so it
    /// must be rejected before anything of that size is allocated.
    /// </para>
    /// </summary>
    [Test]
    public void MutatedFiles()
    {
        var seeds = LoadSeeds();
        var run = new FuzzRun("safetensors-file");
        string path = Path.Combine(_dir, SafeTensorsCheckpoint.SingleFileName);
        foreach (int i in run.Iterations(12_000))
        {
            var m = run.NewMutator(i, DTypeNames);
            var seed = m.Pick(seeds);
            m.Log.Add($"seed {seed.Name}");
            int kind = m.Rng.Next(100);
            byte[] input = kind switch
            {
                < 15 => LengthField(seed, m),
                < 45 => HeaderEdit(seed, m),
                < 62 => Rebuild(seed, m.Json(seed.Header.ToArray(), 3), m),
                < 85 => m.Chance(0.85) ? m.Bytes(seed.Bytes, 4, 0, seed.DataStart + 16) : m.Bytes(seed.Bytes, 4),
                _ => m.Truncate(seed.Bytes, seed.Boundaries),
            };
            if (kind < 85 && m.Chance(0.1)) input = m.Chance(0.5) ? m.Bytes(input, 2) : m.Truncate(input, seed.Boundaries);

            File.WriteAllBytes(path, input);
            Reserve(input.Length);
            long bound = 32 * AdmittedHeaderBytes(input) + (2 << 20);
            bool viaCheckpoint = m.Chance(0.25);
            run.Check(i, m, input, ".safetensors", bound, _dir, () =>
            {
                using ISafeTensorsSource source = viaCheckpoint ? SafeTensorsCheckpoint.Open(_dir) : SafeTensorsFile.Open(path);
                ReadEverything(source, input.Length);
            });
        }
        run.Finish();
    }

    /// <summary>
    /// 8,000 mutated indexes of a sharded checkpoint (three valid shards written from llama-mha): JSON structural and
    /// byte edits and truncation, with shard names that escape the directory, are absolute, empty, missing or another
    /// shard's, and tensor names that are not in their shard. Allocation bound: 64 bytes per index byte plus 4 MB
    /// (the three shard headers, about 1 KB each, and the 1 MB staging buffer).
    /// </summary>
    [Test]
    public void MutatedShardIndex()
    {
        using (var model = SafeTensorsFile.Open(Path.Combine(Fixtures.Case("llama-mha"), "model.safetensors")))
        {
            var entries = model.Names.Select(n => SafeTensorsWriter.Entry.FromFloat32(n, model.ReadFloat32(n), model.Get(n).Shape)).ToList();
            SafeTensorsWriter.WriteSharded(_dir, entries, maxShardBytes: 160_000);
        }
        string indexPath = Path.Combine(_dir, SafeTensorsCheckpoint.IndexFileName);
        byte[] index = File.ReadAllBytes(indexPath);
        var shards = Directory.GetFiles(_dir, "*.safetensors").Select(f => Path.GetFileName(f)).ToArray();
        long largest = Directory.GetFiles(_dir, "*.safetensors").Max(f => new FileInfo(f).Length);
        Assert.That(shards, Has.Length.EqualTo(3), "the seed needs a checkpoint of three shards");
        string[] extra =
        [
            .. shards, "../" + shards[0], "/etc/hosts", "C:\\\\x.safetensors", "model.safetensors", "a/b.safetensors",
            "sub/../" + shards[0], ".", "..", "./" + shards[0], shards[0] + "\\u0000", "lm_head.weight",
            "model.embed_tokens.weight", "model.norm.weight", "weight_map", "metadata", "total_size",
        ];
        var boundaries = Mutator.Boundaries(index);
        var run = new FuzzRun("safetensors-index");
        foreach (int i in run.Iterations(8000))
        {
            var m = run.NewMutator(i, extra);
            int kind = m.Rng.Next(100);
            byte[] input = kind switch
            {
                < 70 => m.Json(index, 3),
                < 90 => m.Bytes(index, 3),
                _ => m.Truncate(index, boundaries),
            };
            File.WriteAllBytes(indexPath, input);
            Reserve(largest);
            run.Check(i, m, input, ".json", 64L * input.Length + (4 << 20), _dir, () =>
            {
                using var checkpoint = SafeTensorsCheckpoint.Open(_dir);
                _ = checkpoint.IndexMetadata.Count;
                ReadEverything(checkpoint, largest);
            });
        }
        run.Finish();
    }

    // ---- inputs ------------------------------------------------------------------------------------------------

    private static byte[] LengthField(Seed seed, Mutator m)
    {
        var r = (byte[])seed.Bytes.Clone();
        ulong length = (ulong)r.Length, h = (ulong)seed.HeaderLength;
        ulong value = m.Rng.Next(20) switch
        {
            0 => 0,
            1 => 1,
            2 => 7,
            3 => h - 1,
            4 => h + 1,
            5 => length - 8,
            6 => length - 7,
            7 => length,
            8 => (ulong)SafeTensorsFile.MaxHeaderBytes,
            9 => (ulong)SafeTensorsFile.MaxHeaderBytes + 1,
            10 => int.MaxValue,
            11 => uint.MaxValue,
            12 => (1UL << 32) + h,
            13 => 1UL << 62,
            14 => 1UL << 63,
            15 => ulong.MaxValue,
            16 => h ^ (1UL << m.Rng.Next(64)),
            17 => (ulong)m.Rng.NextInt64(),
            18 => h + (ulong)m.Rng.Next(1, 64),
            _ => h - (ulong)m.Rng.Next(1, 64),
        };
        BinaryPrimitives.WriteUInt64LittleEndian(r, value);
        m.Log.Add($"header length field = {value}");
        return r;
    }

    /// <summary>The header length field when the file can hold a header of that length, else 0.</summary>
    private static long AdmittedHeaderBytes(byte[] file)
    {
        if (file.Length < 8) return 0;
        ulong h = BinaryPrimitives.ReadUInt64LittleEndian(file);
        return h <= (ulong)(file.Length - 8) ? (long)h : 0;
    }

    /// <summary>Header text + the seed's data, with the header length written correctly (usually) or stale.</summary>
    private static byte[] Rebuild(Seed seed, byte[] header, Mutator m)
    {
        if (m.Chance(0.5))
        {
            int padded = (header.Length + 7) / 8 * 8;
            var p = new byte[padded];
            header.CopyTo(p, 0);
            p.AsSpan(header.Length).Fill((byte)' ');
            header = p;
        }
        ulong length = (ulong)header.Length;
        if (m.Chance(0.1))
        {
            length = (ulong)seed.HeaderLength;
            m.Log.Add("stale header length");
        }
        var data = seed.Data;
        if (m.Chance(0.08))
        {
            int keep = m.Rng.Next(data.Length + 1);
            data = data[..keep];
            m.Log.Add($"data cut to {keep} bytes");
        }
        var r = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(r, length);
        header.CopyTo(r, 8);
        data.CopyTo(r.AsSpan(8 + header.Length));
        return r;
    }

    private static byte[] HeaderEdit(Seed seed, Mutator m)
    {
        var header = (JsonObject)JsonNode.Parse(seed.Header)!;
        long dataLength = seed.Data.Length;
        var names = header.Select(p => p.Key).Where(n => n != "__metadata__").ToList();
        int edits = 1 + m.Rng.Next(2);
        for (int e = 0; e < edits; e++)
        {
            string name = m.Pick(names);
            if (header[name] is not JsonObject tensor) continue;
            var offsets = tensor["data_offsets"] as JsonArray;
            var shape = tensor["shape"] as JsonArray;
            long begin = offsets is [JsonValue b, _] && b.TryGetValue(out long bv) ? bv : 0;
            long end = offsets is [_, JsonValue en] && en.TryGetValue(out long ev) ? ev : 0;
            long size = end - begin;
            switch (m.Rng.Next(12))
            {
                case 0:
                case 1:
                {
                    JsonNode? value = Node(m.Pick(new[]
                    {
                        "-1", "0", "1", $"{begin - 1}", $"{begin + 1}", $"{end - 1}", $"{end + 1}", $"{dataLength}", $"{dataLength + 1}",
                        $"{dataLength - 1}", "2147483648", "4294967296", "9007199254740993", "9223372036854775807",
                        "9223372036854775808", "1e309", "1.5", $"{end}.0", "\"4\"", "null", "true",
                    }));
                    int which = m.Rng.Next(2);
                    if (offsets is { Count: 2 }) offsets[which] = value;
                    m.Log.Add($"'{name}' data_offsets[{which}] = {value?.ToJsonString() ?? "null"}");
                    break;
                }
                case 2:
                {
                    long delta = m.Pick(new[] { -1, 1, 4, -size, size, dataLength, -begin, 1L << 40 });
                    tensor["data_offsets"] = new JsonArray(begin + delta, end + delta);
                    m.Log.Add($"'{name}' data_offsets shifted by {delta}");
                    break;
                }
                case 3:
                {
                    string other = m.Pick(names);
                    var o = header[other]?["data_offsets"]?.DeepClone();
                    if (m.Chance(0.3)) o = new JsonArray(end, begin);
                    else if (m.Chance(0.3)) o = Node(m.Pick(new[] { "[]", $"[{begin}]", $"[{begin}, {end}, {end}]", "\"0,4\"", "{}", "null", $"[{begin}, [{end}]]" }));
                    tensor["data_offsets"] = o;
                    m.Log.Add($"'{name}' data_offsets = {o?.ToJsonString() ?? "null"} (from '{other}' or odd)");
                    break;
                }
                case 4:
                case 5:
                {
                    if (shape is null || shape.Count == 0) goto case 6;
                    int d = m.Rng.Next(shape.Count);
                    long dim = shape[d] is JsonValue v && v.TryGetValue(out long x) ? x : 1;
                    JsonNode? value = Node(m.Pick(new[]
                    {
                        "-1", "0", "1", $"{dim - 1}", $"{dim + 1}", $"{dim * 2}", "2147483648", "4294967296", "4611686018427387904",
                        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1.5", $"{dim}.0", "1e2", "\"4\"", "null", "[]",
                    }));
                    shape[d] = value;
                    m.Log.Add($"'{name}' shape[{d}] = {value?.ToJsonString() ?? "null"}");
                    break;
                }
                case 6:
                {
                    string s = m.Pick(new[]
                    {
                        "[]", "[0]", $"[{size}]", $"[{size / 4}]", $"[{size / 4}, 1, 1]", "[4294967296, 4294967296]",
                        "[1099511627776, 1099511627776, 0]", "[0, 9223372036854775807, 9223372036854775807]",
                        "[4611686018427387904, 4]", "[2305843009213693952, 2, 2]", "[3074457345618258603, 3]",
                        "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]", "null", "\"[4]\"", "{}", "[[4]]",
                    });
                    tensor["shape"] = Node(s);
                    m.Log.Add($"'{name}' shape = {s}");
                    break;
                }
                case 7:
                {
                    string dtype = m.Pick(DTypeNames);
                    tensor["dtype"] = m.Chance(0.9) ? dtype : Node(m.Pick(new[] { "42", "null", "[\"F32\"]", "{}" }));
                    m.Log.Add($"'{name}' dtype = {tensor["dtype"]?.ToJsonString()}");
                    break;
                }
                case 8:
                {
                    string field = m.Pick(new[] { "dtype", "shape", "data_offsets" });
                    tensor.Remove(field);
                    if (m.Chance(0.3)) tensor["extra"] = 1;
                    m.Log.Add($"'{name}' without {field}");
                    break;
                }
                case 9:
                {
                    // A new tensor: a copy under another name (overlapping), or an empty one at an odd place.
                    string newName = m.Pick(new[] { name + ".copy", "", "\u00e9", new string('n', 1000), "__metadata__x", "a\u0000b" });
                    JsonNode entry = m.Chance(0.5)
                        ? tensor.DeepClone()
                        : new JsonObject
                        {
                            ["dtype"] = m.Pick(new[] { "F32", "U8", "BOOL" }),
                            ["shape"] = Node(m.Pick(new[] { "[0]", "[0, 9223372036854775807]", "[]" })),
                            ["data_offsets"] = Node(m.Pick(new[] { "[0, 0]", $"[{dataLength}, {dataLength}]", $"[{dataLength + 1}, {dataLength + 1}]", $"[{begin + 1}, {begin + 1}]" })),
                        };
                    header[newName] = entry;
                    m.Log.Add($"new tensor '{(newName.Length > 20 ? newName[..20] + "..." : newName)}' = {entry.ToJsonString()}");
                    break;
                }
                case 10:
                {
                    header.Remove(name);
                    names.Remove(name);
                    m.Log.Add($"tensor '{name}' removed");
                    if (names.Count == 0) goto done;
                    break;
                }
                default:
                {
                    string meta = m.Pick(new[]
                    {
                        "{\"format\": 1}", "[]", "\"pt\"", "null", "{\"a\": {\"b\": \"c\"}}", "{\"format\": \"pt\", \"x\": null}",
                        "{\"format\": \"" + new string('p', 5000) + "\"}", "{\"\": \"\"}",
                    });
                    header["__metadata__"] = Node(meta);
                    m.Log.Add($"__metadata__ = {(meta.Length > 40 ? meta[..40] : meta)}");
                    break;
                }
            }
        }
    done:
        return Rebuild(seed, Encoding.UTF8.GetBytes(header.ToJsonString()), m);
    }

    /// <summary>A JSON node from its text (keeps big and odd numbers exactly as written).</summary>
    private static JsonNode? Node(string json) => JsonNode.Parse(json);

    // ---- exercising an accepted file ---------------------------------------------------------------------------

    private void Reserve(long elements)
    {
        if (_bytes.Length >= elements) return;
        _f32 = new float[elements];
        _f64 = new double[elements];
        _i64 = new long[elements];
        _bytes = new byte[elements];
    }

    /// <summary>Reads every tensor in every way its dtype allows (into the test's buffers) and checks the header's promises.</summary>
    private void ReadEverything(ISafeTensorsSource source, long fileLength)
    {
        bool first = true;
        foreach (string name in source.Names)
        {
            var info = source.Get(name);
            if (!source.Contains(name) || !source.TryGet(name, out var again) || !ReferenceEquals(info, again))
                throw new InvalidOperationException($"tensor '{name}' is listed but cannot be looked up consistently");
            if (info.ElementCount < 0 || info.ByteLength != info.ElementCount * info.DType.SizeOf()
                || info.ByteOffset < 8 || info.ByteOffset + info.ByteLength > fileLength || info.ByteLength > _bytes.Length)
            {
                throw new InvalidOperationException(
                    $"tensor '{name}' breaks the header's promises: {info.ElementCount} elements, {info.ByteLength} bytes at {info.ByteOffset} in a file of {fileLength}");
            }
            int n = (int)info.ElementCount;
            source.ReadBytes(name, _bytes.AsSpan(0, (int)info.ByteLength));
            switch (info.DType)
            {
                case SafeTensorsDType.F32 or SafeTensorsDType.F64 or SafeTensorsDType.F16 or SafeTensorsDType.BF16:
                    source.ReadFloat32(name, _f32.AsSpan(0, n));
                    source.ReadFloat64(name, _f64.AsSpan(0, n));
                    ExpectRejected(() => source.ReadInt64(name, _i64.AsSpan(0, n)));
                    break;
                case SafeTensorsDType.F8_E4M3 or SafeTensorsDType.F8_E5M2 or SafeTensorsDType.U64:
                    ExpectRejected(() => source.ReadFloat32(name, _f32.AsSpan(0, n)));
                    ExpectRejected(() => source.ReadInt64(name, _i64.AsSpan(0, n)));
                    break;
                default:
                    source.ReadInt64(name, _i64.AsSpan(0, n));
                    ExpectRejected(() => source.ReadFloat32(name, _f32.AsSpan(0, n)));
                    break;
            }
            if (first && n < _f32.Length)
            {
                first = false;
                ExpectRejected(() => source.ReadFloat32(name, _f32.AsSpan(0, n + 1))); // wrong destination length
            }
        }
        if (source.TryGet("no such tensor", out _)) throw new InvalidOperationException("found a tensor that does not exist");
        ExpectRejected(() => source.Get("no such tensor"));
    }

    private static void ExpectRejected(Action read)
    {
        try
        {
            read();
        }
        catch (InvalidInputException)
        {
            return;
        }
        throw new InvalidOperationException("a read that must fail (wrong dtype, size or name) succeeded");
    }
}
