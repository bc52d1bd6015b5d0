using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using NUnit.Framework;

namespace HftRuntime.Tests.SafeTensors;

[TestFixture]
public class SafeTensorsTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "hft-safetensors-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static string Fixture(string model, string file) =>
        Path.Combine(TestContext.CurrentContext.TestDirectory, "fixtures", model, file);

    private static uint Bits(float f) => BitConverter.SingleToUInt32Bits(f);

    private static float FromBits(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    /// <summary>Writes a file with the given header text (unpadded) and data bytes.</summary>
    private string WriteRaw(string name, string header, int dataBytes, ulong? headerLength = null)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        return WriteRawBytes(name, json, dataBytes, headerLength);
    }

    private string WriteRawBytes(string name, byte[] json, int dataBytes, ulong? headerLength = null)
    {
        string path = Path.Combine(_dir, name);
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        for (int i = 0; i < dataBytes; i++) bytes[8 + json.Length + i] = (byte)i;
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static InvalidInputException OpenFails(string path)
    {
        var e = Assert.Throws<InvalidInputException>(() => SafeTensorsFile.Open(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(Path.GetFileName(path)));
        return e;
    }

    // ---------------------------------------------------------------- round trips

    [Test]
    public void RoundTripOfEveryDType()
    {
        float[] f32 =
        [
            0f, -0f, 1f, -2.5f, float.Epsilon, FromBits(0x007F_FFFF), float.MaxValue, float.MinValue,
            float.PositiveInfinity, float.NegativeInfinity, FromBits(0x7FC0_1234), 3.14159274f,
        ];
        double[] f64 = [0.0, -0.0, 0.1, Math.PI, double.Epsilon, double.MaxValue, double.NegativeInfinity, 1e-300];
        long[] i64 = [long.MinValue, -1, 0, 1, long.MaxValue, 75];
        int[] i32 = [int.MinValue, -7, 0, 7, int.MaxValue, 42];
        byte[] i16 = new byte[8];
        BinaryPrimitives.WriteInt16LittleEndian(i16.AsSpan(0), short.MinValue);
        BinaryPrimitives.WriteInt16LittleEndian(i16.AsSpan(2), -1);
        BinaryPrimitives.WriteInt16LittleEndian(i16.AsSpan(4), 300);
        BinaryPrimitives.WriteInt16LittleEndian(i16.AsSpan(6), short.MaxValue);
        byte[] u16 = [0xFF, 0xFF, 0x01, 0x00];
        byte[] u32 = [0xFF, 0xFF, 0xFF, 0xFF];
        byte[] i8 = [0x80, 0xFF, 0x00, 0x7F];
        byte[] u8 = [0, 1, 128, 255];
        byte[] boolean = [1, 0, 1];

        string path = Path.Combine(_dir, "all.safetensors");
        SafeTensorsWriter.Write(path,
        [
            SafeTensorsWriter.Entry.FromFloat32("f32", f32, [3, 4]),
            SafeTensorsWriter.Entry.FromFloat64("f64", f64, [2, 2, 2]),
            SafeTensorsWriter.Entry.FromInt64("i64", i64, [2, 3]),
            SafeTensorsWriter.Entry.FromInt32("i32", i32),
            new SafeTensorsWriter.Entry("i16", SafeTensorsDType.I16, [4], i16),
            new SafeTensorsWriter.Entry("u16", SafeTensorsDType.U16, [2], u16),
            new SafeTensorsWriter.Entry("u32", SafeTensorsDType.U32, [1], u32),
            new SafeTensorsWriter.Entry("i8", SafeTensorsDType.I8, [2, 2], i8),
            new SafeTensorsWriter.Entry("u8", SafeTensorsDType.U8, [4], u8),
            new SafeTensorsWriter.Entry("bool", SafeTensorsDType.BOOL, [3], boolean),
            SafeTensorsWriter.Entry.FromFloat32("scalar", new float[] { 7.5f }, []),
            SafeTensorsWriter.Entry.FromFloat32("empty", Array.Empty<float>(), [0, 3]),
        ], new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode ok" });

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(file.Metadata["note"], Is.EqualTo("ünïcode ok"));
        Assert.That(file.Names, Is.EqualTo(new[] { "f32", "f64", "i64", "i32", "i16", "u16", "u32", "i8", "u8", "bool", "scalar", "empty" }));

        var info = file.Get("f32");
        Assert.That(info.DType, Is.EqualTo(SafeTensorsDType.F32));
        Assert.That(info.Shape, Is.EqualTo(new long[] { 3, 4 }));
        Assert.That(info.ElementCount, Is.EqualTo(12));
        Assert.That(info.ByteLength, Is.EqualTo(48));
        Assert.That(info.ByteOffset, Is.EqualTo(file.DataStart));
        Assert.That(file.ReadFloat32("f32").Select(Bits), Is.EqualTo(f32.Select(Bits)));
        Assert.That(file.ReadFloat64("f32"), Is.EqualTo(f32.Select(v => (double)v)));

        Assert.That(file.ReadFloat64("f64").Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(f64.Select(BitConverter.DoubleToInt64Bits)));
        Assert.That(file.ReadFloat32("f64").Select(Bits), Is.EqualTo(f64.Select(v => Bits((float)v))));

        Assert.That(file.ReadInt64("i64"), Is.EqualTo(i64));
        Assert.That(file.ReadInt64("i32"), Is.EqualTo(i32.Select(v => (long)v)));
        Assert.That(file.ReadInt64("i16"), Is.EqualTo(new long[] { short.MinValue, -1, 300, short.MaxValue }));
        Assert.That(file.ReadInt64("u16"), Is.EqualTo(new long[] { 65535, 1 }));
        Assert.That(file.ReadInt64("u32"), Is.EqualTo(new long[] { uint.MaxValue }));
        Assert.That(file.ReadInt64("i8"), Is.EqualTo(new long[] { -128, -1, 0, 127 }));
        Assert.That(file.ReadInt64("u8"), Is.EqualTo(new long[] { 0, 1, 128, 255 }));
        Assert.That(file.ReadInt64("bool"), Is.EqualTo(new long[] { 1, 0, 1 }));

        Assert.That(file.Get("scalar").Shape, Is.Empty);
        Assert.That(file.ReadFloat32("scalar"), Is.EqualTo(new[] { 7.5f }));
        Assert.That(file.Get("empty").ElementCount, Is.EqualTo(0));
        Assert.That(file.ReadFloat32("empty"), Is.Empty);

        var raw = new byte[4];
        file.ReadBytes("u8", raw);
        Assert.That(raw, Is.EqualTo(u8));
    }

    [Test]
    public void Float64ToFloat32RoundsToNearestEven()
    {
        double[] values = [1.0 + Math.Pow(2, -24), 1.0 + 3 * Math.Pow(2, -24), 0.1, 1e300, -1e-50];
        string path = Path.Combine(_dir, "f64.safetensors");
        SafeTensorsWriter.Write(path, [SafeTensorsWriter.Entry.FromFloat64("x", values)]);
        using var file = SafeTensorsFile.Open(path);
        float[] read = file.ReadFloat32("x");
        Assert.That(Bits(read[0]), Is.EqualTo(0x3F80_0000u), "tie rounds to the even neighbour 1.0");
        Assert.That(Bits(read[1]), Is.EqualTo(0x3F80_0002u), "tie rounds to the even neighbour 1+2^-22");
        Assert.That(read[2], Is.EqualTo(0.1f));
        Assert.That(read[3], Is.EqualTo(float.PositiveInfinity));
        Assert.That(Bits(read[4]), Is.EqualTo(0x8000_0000u));
    }

    // Known bfloat16 patterns: (float bits, bf16 bits after rounding to nearest even)
    private static readonly (uint Float, ushort BFloat16)[] BFloat16Cases =
    [
        (0x3F80_0000, 0x3F80), // 1
        (0xBF80_0000, 0xBF80), // -1
        (0x0000_0000, 0x0000), // +0
        (0x8000_0000, 0x8000), // -0
        (0x3F80_8000, 0x3F80), // halfway, even below: round down
        (0x3F81_8000, 0x3F82), // halfway, odd below: round up
        (0x3F80_8001, 0x3F81), // above halfway
        (0x3F80_7FFF, 0x3F80), // below halfway
        (0x7F7F_FFFF, 0x7F80), // float max overflows to +inf
        (0x7F80_0000, 0x7F80), // +inf
        (0xFF80_0000, 0xFF80), // -inf
        (0x7FC0_0000, 0x7FC0), // quiet NaN
        (0x7F80_0001, 0x7FC0), // signalling NaN with low payload stays NaN (quiet bit set)
        (0xFFC1_2345, 0xFFC1), // negative NaN keeps sign and upper payload
        (0x0001_2345, 0x0001), // subnormal
        (0x0000_0001, 0x0000), // smallest subnormal rounds to zero
        (0x007F_FFFF, 0x0080), // largest subnormal rounds up to the smallest normal
    ];

    [Test]
    public void BFloat16ConversionMatchesKnownBitPatterns()
    {
        float[] input = BFloat16Cases.Select(c => FromBits(c.Float)).ToArray();
        string path = Path.Combine(_dir, "bf16.safetensors");
        SafeTensorsWriter.Write(path, [SafeTensorsWriter.Entry.FromFloat32AsBFloat16("x", input)]);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Get("x").DType, Is.EqualTo(SafeTensorsDType.BF16));
        Assert.That(file.Get("x").ByteLength, Is.EqualTo(2 * input.Length));

        var raw = new byte[2 * input.Length];
        file.ReadBytes("x", raw);
        for (int i = 0; i < input.Length; i++)
        {
            ushort bits = BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(2 * i));
            Assert.That(bits, Is.EqualTo(BFloat16Cases[i].BFloat16), $"case {i}: float 0x{BFloat16Cases[i].Float:X8}");
        }

        // bf16 -> float32 is exact: the bits become the upper half.
        float[] back = file.ReadFloat32("x");
        double[] back64 = file.ReadFloat64("x");
        for (int i = 0; i < input.Length; i++)
        {
            Assert.That(Bits(back[i]), Is.EqualTo((uint)BFloat16Cases[i].BFloat16 << 16), $"case {i}");
            Assert.That(back64[i], Is.EqualTo((double)back[i]).Or.NaN, $"case {i}");
        }
        Assert.That(float.IsNaN(back[12]) && float.IsNaN(back[13]), Is.True);
        Assert.That(FloatConversions.BFloat16ToFloat(0x0001), Is.EqualTo(MathF.Pow(2, -133)));
    }

    // Known IEEE half patterns: (float value, half bits)
    private static readonly (float Value, ushort Half)[] HalfCases =
    [
        (1f, 0x3C00),
        (-2f, 0xC000),
        (0f, 0x0000),
        (-0f, 0x8000),
        (65504f, 0x7BFF), // largest half
        (65519f, 0x7BFF), // below the rounding boundary
        (65520f, 0x7C00), // rounds to +inf
        (float.PositiveInfinity, 0x7C00),
        (float.NegativeInfinity, 0xFC00),
        (1f / 16384f, 0x0400), // smallest normal 2^-14
        (5.9604645e-8f, 0x0001), // smallest subnormal 2^-24
        (2.9802322e-8f, 0x0000), // 2^-25: halfway, rounds to even zero
        (4.4703484e-8f, 0x0001), // 0.75 * 2^-24 rounds up
        (6.0975552e-5f, 0x03FF), // largest subnormal 1023 * 2^-24
        (1.00048828125f, 0x3C00), // 1 + 2^-11: halfway, rounds to even
        (1.00146484375f, 0x3C02), // 1 + 3*2^-11: halfway, rounds to even (up)
        (0.1f, 0x2E66),
    ];

    [Test]
    public void Float16ConversionMatchesKnownBitPatterns()
    {
        float[] input = HalfCases.Select(c => c.Value).Append(float.NaN).ToArray();
        string path = Path.Combine(_dir, "f16.safetensors");
        SafeTensorsWriter.Write(path, [SafeTensorsWriter.Entry.FromFloat32AsFloat16("x", input)]);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Get("x").DType, Is.EqualTo(SafeTensorsDType.F16));

        var raw = new byte[2 * input.Length];
        file.ReadBytes("x", raw);
        for (int i = 0; i < HalfCases.Length; i++)
        {
            ushort bits = BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(2 * i));
            Assert.That(bits, Is.EqualTo(HalfCases[i].Half), $"case {i}: {HalfCases[i].Value:R}");
        }
        ushort nanBits = BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(2 * HalfCases.Length));
        Assert.That(nanBits & 0x7C00, Is.EqualTo(0x7C00));
        Assert.That(nanBits & 0x03FF, Is.Not.EqualTo(0));

        float[] back = file.ReadFloat32("x");
        Assert.That(back[9], Is.EqualTo(MathF.Pow(2, -14)));
        Assert.That(back[10], Is.EqualTo(MathF.Pow(2, -24)));
        Assert.That(back[13], Is.EqualTo(1023 * MathF.Pow(2, -24)));
        Assert.That(back[6], Is.EqualTo(float.PositiveInfinity));
        Assert.That(back[8], Is.EqualTo(float.NegativeInfinity));
        Assert.That(Bits(back[3]), Is.EqualTo(0x8000_0000u));
        Assert.That(back[16], Is.EqualTo(0.0999755859375f));
        Assert.That(float.IsNaN(back[^1]), Is.True);
        Assert.That(file.ReadFloat64("x")[10], Is.EqualTo(Math.Pow(2, -24)));

        Assert.That(FloatConversions.HalfToFloat(0x7E00), Is.NaN);
        Assert.That(FloatConversions.HalfToFloat(0x8001), Is.EqualTo(-MathF.Pow(2, -24)));
    }

    [Test]
    public void LargeConvertedTensorsAreReadInChunks()
    {
        // More than one 1 MiB conversion chunk and more than one 4 MiB write chunk.
        const int n = 3_000_001;
        var values = new float[n];
        for (int i = 0; i < n; i++) values[i] = i * 0.25f - 1000f;
        string path = Path.Combine(_dir, "big.safetensors");
        SafeTensorsWriter.Write(path,
        [
            SafeTensorsWriter.Entry.FromFloat32AsBFloat16("bf16", values),
            SafeTensorsWriter.Entry.FromFloat32("f32", values),
        ]);
        using var file = SafeTensorsFile.Open(path);
        float[] bf16 = file.ReadFloat32("bf16");
        float[] f32 = file.ReadFloat32("f32");
        Assert.That(f32, Is.EqualTo(values));
        for (int i = 0; i < n; i += 9973)
            Assert.That(bf16[i], Is.EqualTo(FloatConversions.BFloat16ToFloat(FloatConversions.FloatToBFloat16(values[i]))));
        Assert.That(bf16[^1], Is.EqualTo(FloatConversions.BFloat16ToFloat(FloatConversions.FloatToBFloat16(values[^1]))));
    }

    [Test]
    public void StreamedEntryReceivesOrderedChunks()
    {
        const long bytes = SafeTensorsWriter.ChunkBytes * 2L + 24;
        var offsets = new List<(long Offset, int Length)>();
        var entry = new SafeTensorsWriter.Entry("s", SafeTensorsDType.I64, [bytes / 8], (offset, destination) =>
        {
            offsets.Add((offset, destination.Length));
            for (int i = 0; i < destination.Length; i += 8)
                BinaryPrimitives.WriteInt64LittleEndian(destination.Slice(i), (offset + i) / 8);
        });
        string path = Path.Combine(_dir, "streamed.safetensors");
        SafeTensorsWriter.Write(path, [entry]);
        Assert.That(offsets, Is.EqualTo(new[]
        {
            (0L, SafeTensorsWriter.ChunkBytes), ((long)SafeTensorsWriter.ChunkBytes, SafeTensorsWriter.ChunkBytes),
            (2L * SafeTensorsWriter.ChunkBytes, 24),
        }));
        using var file = SafeTensorsFile.Open(path);
        long[] values = file.ReadInt64("s");
        Assert.That(values.Length, Is.EqualTo(bytes / 8));
        Assert.That(values.Select((v, i) => v == i).All(ok => ok), Is.True);
    }

    [Test]
    public void HeaderIsPaddedToEightBytesAndOffsetsAreContiguousInOrder()
    {
        string path = Path.Combine(_dir, "layout.safetensors");
        SafeTensorsWriter.Write(path,
        [
            SafeTensorsWriter.Entry.FromFloat32("zeta", new float[3]),
            SafeTensorsWriter.Entry.FromFloat64("alpha", new double[1]),
            SafeTensorsWriter.Entry.FromFloat32AsBFloat16("mid", new float[5]),
            SafeTensorsWriter.Entry.FromInt32("ids", new int[2]),
        ], new Dictionary<string, string> { ["format"] = "pt" });

        byte[] bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That(n % 8, Is.EqualTo(0));
        string header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.That(header[0], Is.EqualTo('{'));
        string trimmed = header.TrimEnd(' ');
        Assert.That(trimmed[^1], Is.EqualTo('}'));
        Assert.That(header.Length - trimmed.Length, Is.LessThan(8));
        Assert.That(trimmed, Does.StartWith("{\"__metadata__\":{\"format\":\"pt\"}"));

        using var doc = JsonDocument.Parse(trimmed);
        var expected = new (string Name, long Bytes)[] { ("zeta", 12), ("alpha", 8), ("mid", 10), ("ids", 8) };
        long offset = 0;
        var names = doc.RootElement.EnumerateObject().Select(p => p.Name).Where(p => p != "__metadata__").ToArray();
        Assert.That(names, Is.EqualTo(expected.Select(e => e.Name)));
        foreach (var (name, size) in expected)
        {
            var offsets = doc.RootElement.GetProperty(name).GetProperty("data_offsets");
            Assert.That(offsets[0].GetInt64(), Is.EqualTo(offset), name);
            Assert.That(offsets[1].GetInt64(), Is.EqualTo(offset + size), name);
            offset += size;
        }
        Assert.That(bytes.Length, Is.EqualTo(8 + n + offset));
    }

    [Test]
    public void GapsBetweenTensorsAreAcceptedWhenReading()
    {
        string path = WriteRaw("gaps.safetensors",
            "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]},\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 10);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadInt64("a"), Is.EqualTo(new long[] { 1, 2 }));
        Assert.That(file.ReadInt64("b"), Is.EqualTo(new long[] { 6, 7 }));
        Assert.That(file.Metadata, Is.Empty);
    }

    // ---------------------------------------------------------------- sharded checkpoints

    private static SafeTensorsWriter.Entry Tensor(string name, int floats, float start) =>
        SafeTensorsWriter.Entry.FromFloat32(name, Enumerable.Range(0, floats).Select(i => start + i).ToArray());

    [Test]
    public void ShardedRoundTrip()
    {
        var entries = new[]
        {
            Tensor("model.embed_tokens.weight", 100, 0), // 400 bytes
            Tensor("model.layers.0.w", 100, 1000),
            Tensor("model.layers.1.w", 100, 2000),
            Tensor("huge", 400, 3000), // 1600 bytes: a shard of its own
            Tensor("model.norm.weight", 10, 4000),
        };
        var files = SafeTensorsWriter.WriteSharded(_dir, entries, maxShardBytes: 1000);
        Assert.That(files, Is.EqualTo(new[]
        {
            "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
        }));
        Assert.That(File.Exists(Path.Combine(_dir, "model.safetensors")), Is.False);

        using (var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "model.safetensors.index.json"))))
        {
            var map = index.RootElement.GetProperty("weight_map");
            Assert.That(map.GetProperty("model.embed_tokens.weight").GetString(), Is.EqualTo("model-00001-of-00003.safetensors"));
            Assert.That(map.GetProperty("model.layers.0.w").GetString(), Is.EqualTo("model-00001-of-00003.safetensors"));
            // huggingface_hub's order: an oversized tensor's shard is emitted before the shard still being filled.
            Assert.That(map.GetProperty("huge").GetString(), Is.EqualTo("model-00002-of-00003.safetensors"));
            Assert.That(map.GetProperty("model.layers.1.w").GetString(), Is.EqualTo("model-00003-of-00003.safetensors"));
            Assert.That(map.GetProperty("model.norm.weight").GetString(), Is.EqualTo("model-00003-of-00003.safetensors"));
            Assert.That(index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64(), Is.EqualTo(3 * 400 + 1600 + 40));
        }

        using var checkpoint = SafeTensorsCheckpoint.Open(_dir);
        Assert.That(checkpoint.IsSharded, Is.True);
        Assert.That(checkpoint.Files, Has.Count.EqualTo(3));
        Assert.That(checkpoint.Names, Is.EquivalentTo(entries.Select(e => e.Name)));
        Assert.That(checkpoint.IndexMetadata["total_size"], Is.EqualTo("2840"));
        Assert.That(checkpoint.Contains("huge"), Is.True);
        Assert.That(checkpoint.TryGet("missing", out _), Is.False);
        Assert.That(checkpoint.TryGet("model.layers.1.w", out var info), Is.True);
        Assert.That(Path.GetFileName(info!.FilePath), Is.EqualTo("model-00003-of-00003.safetensors"));
        Assert.That(checkpoint.ReadFloat32("model.layers.1.w")[5], Is.EqualTo(2005f));
        Assert.That(checkpoint.ReadFloat32("huge")[399], Is.EqualTo(3399f));
        Assert.That(checkpoint.ReadFloat64("model.norm.weight"), Is.EqualTo(Enumerable.Range(4000, 10).Select(i => (double)i)));
        using (var shard = SafeTensorsFile.Open(Path.Combine(_dir, files[0])))
            Assert.That(shard.Metadata["format"], Is.EqualTo("pt"));

        var e = Assert.Throws<InvalidInputException>(() => checkpoint.ReadFloat32("nope"))!;
        Assert.That(e.Message, Does.Contain("nope").And.Contain("model.safetensors.index.json"));
    }

    [Test]
    public void ShardedWriteThatFitsOneShardWritesASingleFileAndRemovesStaleShards()
    {
        var entries = new[] { Tensor("a", 10, 0), Tensor("b", 10, 100), Tensor("c", 10, 200) };
        SafeTensorsWriter.WriteSharded(_dir, entries, maxShardBytes: 40);
        Assert.That(File.Exists(Path.Combine(_dir, "model-00003-of-00003.safetensors")), Is.True);

        var written = SafeTensorsWriter.WriteSharded(_dir, entries, maxShardBytes: 1 << 20);
        Assert.That(written, Is.EqualTo(new[] { "model.safetensors" }));
        Assert.That(Directory.GetFiles(_dir).Select(Path.GetFileName), Is.EqualTo(new[] { "model.safetensors" }));

        using var checkpoint = SafeTensorsCheckpoint.Open(_dir);
        Assert.That(checkpoint.IsSharded, Is.False);
        Assert.That(checkpoint.Names, Is.EqualTo(new[] { "a", "b", "c" }));
        Assert.That(checkpoint.ReadFloat32("c")[9], Is.EqualTo(209f));

        // And back to shards: the single file goes away so that readers cannot pick it up.
        SafeTensorsWriter.WriteSharded(_dir, entries, maxShardBytes: 80);
        Assert.That(Directory.GetFiles(_dir).Select(Path.GetFileName).Order(), Is.EqualTo(new[]
        {
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        }));
    }

    [Test]
    public void CheckpointWithoutWeightsNamesTheDirectory()
    {
        var e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain(_dir).And.Contain("model.safetensors"));
        string missing = Path.Combine(_dir, "nothing-here");
        e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(missing))!;
        Assert.That(e.Message, Does.Contain("nothing-here"));
    }

    [Test]
    public void IndexEntryMissingFromItsShardIsReported()
    {
        SafeTensorsWriter.WriteSharded(_dir, [Tensor("a", 10, 0), Tensor("b", 10, 0)], maxShardBytes: 40);
        string indexPath = Path.Combine(_dir, "model.safetensors.index.json");
        File.WriteAllText(indexPath,
            "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\"}}");
        var e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("model.safetensors.index.json").And.Contain("'b'").And.Contain("model-00001-of-00002.safetensors"));

        File.WriteAllText(indexPath, "{\"weight_map\":{\"a\":\"model-00009-of-00009.safetensors\"}}");
        e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("model.safetensors.index.json").And.Contain("'a'").And.Contain("model-00009-of-00009.safetensors"));

        File.WriteAllText(indexPath, "{\"weight_map\":{\"a\":\"../elsewhere.safetensors\"}}");
        e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("model.safetensors.index.json").And.Contain("'a'"));

        File.WriteAllText(indexPath, "{\"metadata\":{}}");
        e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("model.safetensors.index.json").And.Contain("weight_map"));

        File.WriteAllText(indexPath, "{\"weight_map\": {");
        e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("model.safetensors.index.json"));

        File.WriteAllText(indexPath, "{\"weight_map\":{\"a\":3}}");
        e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("model.safetensors.index.json").And.Contain("'a'"));
    }

    [Test]
    public void CorruptShardIsReportedWithTheShardName()
    {
        SafeTensorsWriter.WriteSharded(_dir, [Tensor("a", 10, 0), Tensor("b", 10, 0)], maxShardBytes: 40);
        string shard = Path.Combine(_dir, "model-00002-of-00002.safetensors");
        byte[] bytes = File.ReadAllBytes(shard);
        File.WriteAllBytes(shard, bytes[..^4]);
        var e = Assert.Throws<InvalidInputException>(() => SafeTensorsCheckpoint.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("model-00002-of-00002.safetensors").And.Contain("'b'").And.Contain("truncated"));
    }

    // ---------------------------------------------------------------- validation of bad files

    private const string Ok = "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    private static IEnumerable<TestCaseData> BadHeaders()
    {
        TestCaseData Case(string name, string header, int dataBytes, string tensor, string why) =>
            new TestCaseData(header, dataBytes, tensor, why).SetName("BadHeader_" + name);

        yield return Case("MissingDType", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "w", "dtype");
        yield return Case("MissingShape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "w", "shape");
        yield return Case("MissingOffsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "w", "data_offsets");
        yield return Case("DTypeNotString", "{\"w\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "w", "dtype");
        yield return Case("ShapeNotArray", "{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8, "w", "shape");
        yield return Case("ShapeNotIntegers", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "w", "shape");
        yield return Case("OffsetsNotPair", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8, "w", "data_offsets");
        yield return Case("OffsetsNegative", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "w", "data_offsets");
        yield return Case("OffsetsNotNumbers", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 8, "w", "data_offsets");
        yield return Case("EntryNotObject", "{\"w\":[1,2,3]}", 8, "w", "not an object");
        yield return Case("UnknownDType", "{\"w\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "w", "F128");
        yield return Case("LowerCaseDType", "{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "w", "f32");
        yield return Case("NegativeDim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "w", "negative");
        yield return Case("CountOverflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}}", 8, "w", "overflow");
        yield return Case("ByteSizeOverflow", "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8, "w", "overflow");
        yield return Case("BeginAfterEnd", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8, "w", "begin");
        yield return Case("Truncated", "{\"a\":" + Ok + ",\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 12, "w", "truncated");
        yield return Case("SizeMismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12, "w", "needs 12");
        yield return Case("Overlap", "{\"a\":" + Ok + ",\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "w", "overlap");
        yield return Case("Duplicate", "{\"w\":" + Ok + ",\"w\":" + Ok + "}", 8, "w", "duplicate");
        yield return Case("MetadataNotStrings", "{\"__metadata__\":{\"format\":1},\"w\":" + Ok + "}", 8, "format", "__metadata__");
        yield return Case("MetadataNotObject", "{\"__metadata__\":[],\"w\":" + Ok + "}", 8, "", "\"__metadata__\" is a JSON array");
        yield return Case("NotJson", "{\"w\": nope}", 8, "", "not valid JSON");
        yield return Case("NotAnObject", "[1, 2]", 8, "", "not an object");
    }

    [TestCaseSource(nameof(BadHeaders))]
    public void BadHeaderIsRejected(string header, int dataBytes, string tensor, string why)
    {
        string path = WriteRaw("bad.safetensors", header, dataBytes);
        var e = OpenFails(path);
        Assert.That(e.Message, Does.Contain(why));
        if (tensor.Length > 0) Assert.That(e.Message, Does.Contain($"'{tensor}'"));
        Assert.That(e.Source, Is.EqualTo(path));
    }

    [Test]
    public void FileShorterThanEightBytesIsRejected()
    {
        string path = Path.Combine(_dir, "short.safetensors");
        File.WriteAllBytes(path, [1, 0, 0, 0, 0]);
        Assert.That(OpenFails(path).Message, Does.Contain("shorter than"));
        File.WriteAllBytes(path, []);
        Assert.That(OpenFails(path).Message, Does.Contain("0 bytes"));
    }

    [Test]
    public void HeaderLengthZeroIsRejected() =>
        Assert.That(OpenFails(WriteRaw("zero.safetensors", "{}", 0, headerLength: 0)).Message, Does.Contain("header length is 0"));

    [Test]
    public void HeaderLengthBeyondTheFileIsRejected() =>
        Assert.That(OpenFails(WriteRaw("beyond.safetensors", "{}", 0, headerLength: 50)).Message, Does.Contain("beyond the end"));

    [Test]
    public void HeaderLengthAboveTheCapIsRejectedBeforeAllocating()
    {
        // Both above the cap and beyond the file: the cap is reported, and nothing near 2^63 bytes is allocated.
        Assert.That(OpenFails(WriteRaw("cap.safetensors", "{}", 0, headerLength: 100_000_001)).Message, Does.Contain("limit"));
        Assert.That(OpenFails(WriteRaw("huge.safetensors", "{}", 0, headerLength: ulong.MaxValue)).Message, Does.Contain("limit"));
    }

    [Test]
    public void HeaderThatIsNotUtf8IsRejected()
    {
        byte[] json = Encoding.UTF8.GetBytes("{\"wX\":" + Ok + "}");
        json[3] = 0xFF;
        Assert.That(OpenFails(WriteRawBytes("utf8.safetensors", json, 8)).Message, Does.Contain("UTF-8"));
    }

    [Test]
    public void MissingFileNamesThePath()
    {
        string path = Path.Combine(_dir, "absent.safetensors");
        var e = Assert.Throws<InvalidInputException>(() => SafeTensorsFile.Open(path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("not found"));
        e = Assert.Throws<InvalidInputException>(() => SafeTensorsFile.Open(_dir))!;
        Assert.That(e.Message, Does.Contain("directory"));
    }

    [Test]
    public void BadReadsNameTheTensor()
    {
        string path = Path.Combine(_dir, "reads.safetensors");
        SafeTensorsWriter.Write(path,
        [
            SafeTensorsWriter.Entry.FromFloat32("weights", new float[6], [2, 3]),
            SafeTensorsWriter.Entry.FromInt64("ids", new long[2]),
        ]);
        using var file = SafeTensorsFile.Open(path);

        var e = Assert.Throws<InvalidInputException>(() => file.ReadFloat32("weights", new float[5]))!;
        Assert.That(e.Message, Does.Contain("reads.safetensors").And.Contain("'weights'").And.Contain("[2, 3]"));
        e = Assert.Throws<InvalidInputException>(() => file.ReadInt64("weights", new long[6]))!;
        Assert.That(e.Message, Does.Contain("'weights'").And.Contain("F32"));
        e = Assert.Throws<InvalidInputException>(() => file.ReadFloat32("ids"))!;
        Assert.That(e.Message, Does.Contain("'ids'").And.Contain("I64"));
        e = Assert.Throws<InvalidInputException>(() => file.ReadFloat64("lm_head.weight"))!;
        Assert.That(e.Message, Does.Contain("reads.safetensors").And.Contain("'lm_head.weight'").And.Contain("not found"));
        e = Assert.Throws<InvalidInputException>(() => file.ReadBytes("ids", new byte[8]))!;
        Assert.That(e.Message, Does.Contain("'ids'"));
    }

    // ---------------------------------------------------------------- atomic writes

    [Test]
    public void FailedWriteLeavesThePreviousFileUntouched()
    {
        string path = Path.Combine(_dir, "model.safetensors");
        SafeTensorsWriter.Write(path, [Tensor("w", 1000, 1)], new Dictionary<string, string> { ["format"] = "pt" });
        byte[] before = File.ReadAllBytes(path);

        // A tensor spanning several chunks whose data source fails in the middle.
        long floats = SafeTensorsWriter.ChunkBytes;
        var failing = new SafeTensorsWriter.Entry("big", SafeTensorsDType.F32, [floats], (offset, destination) =>
        {
            if (offset >= 2L * SafeTensorsWriter.ChunkBytes) throw new InvalidOperationException("device lost");
            destination.Fill(1);
        });
        var e = Assert.Throws<InvalidOperationException>(() =>
            SafeTensorsWriter.Write(path, [Tensor("first", 10, 0), failing, Tensor("last", 10, 0)]))!;
        Assert.That(e.Message, Is.EqualTo("device lost"));

        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(_dir).Select(Path.GetFileName), Is.EqualTo(new[] { "model.safetensors" }));

        // Failing before anything existed leaves nothing behind.
        string fresh = Path.Combine(_dir, "fresh.safetensors");
        Assert.Throws<InvalidOperationException>(() => SafeTensorsWriter.Write(fresh, [failing]));
        Assert.That(File.Exists(fresh), Is.False);
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1));
    }

    [Test]
    public void SuccessfulWriteReplacesTheFile()
    {
        string path = Path.Combine(_dir, "w.safetensors");
        SafeTensorsWriter.Write(path, [Tensor("a", 4, 0)]);
        SafeTensorsWriter.Write(path, [Tensor("b", 2, 10)]);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { "b" }));
        Assert.That(file.ReadFloat32("b"), Is.EqualTo(new[] { 10f, 11f }));
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1));
    }

    [Test]
    public void WriterRejectsInconsistentEntries()
    {
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Entry.FromFloat32("x", new float[6], [4]));
        Assert.Throws<ArgumentException>(() => new SafeTensorsWriter.Entry("x", SafeTensorsDType.F32, [2], new byte[7]));
        Assert.Throws<ArgumentException>(() => new SafeTensorsWriter.Entry("__metadata__", SafeTensorsDType.U8, [1], new byte[1]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(Path.Combine(_dir, "dup.safetensors"),
            [Tensor("a", 1, 0), Tensor("a", 1, 0)]));
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }

    // ---------------------------------------------------------------- fixtures

    [Test]
    public void ReadsTheModelFixture()
    {
        using var file = SafeTensorsFile.Open(Fixture("llama-mha", "model.safetensors"));
        Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
        var embed = file.Get("model.embed_tokens.weight");
        Assert.That(embed.DType, Is.EqualTo(SafeTensorsDType.F32));
        Assert.That(embed.Shape, Is.EqualTo(new long[] { 96, 64 }));
        Assert.That(file.Contains("lm_head.weight"), Is.True);
        Assert.That(file.Get("lm_head.weight").Shape, Is.EqualTo(new long[] { 96, 64 }));
        float[] values = file.ReadFloat32("model.embed_tokens.weight");
        Assert.That(values[0], Is.EqualTo((float)-0.013809639029204845));
        Assert.That(values[1], Is.EqualTo((float)0.004329139366745949));
        Assert.That(values.All(float.IsFinite), Is.True);

        using var checkpoint = SafeTensorsCheckpoint.Open(Path.GetDirectoryName(file.Path)!);
        Assert.That(checkpoint.Names, Has.Count.EqualTo(file.Names.Count));
        Assert.That(checkpoint.ReadFloat32("model.norm.weight"), Is.EqualTo(file.ReadFloat32("model.norm.weight")));

        using var tied = SafeTensorsFile.Open(Fixture("llama-gqa-tied-hft", "model.safetensors"));
        Assert.That(tied.Contains("lm_head.weight"), Is.False);
        Assert.That(tied.Get("model.layers.0.self_attn.k_proj.weight").Shape, Is.EqualTo(new long[] { 32, 64 }));
    }

    [Test]
    public void ReadsTheGoldenFixture()
    {
        using var file = SafeTensorsFile.Open(Fixture("llama-mha", "golden.safetensors"));
        var ids = file.Get("input_ids");
        Assert.That(ids.DType, Is.EqualTo(SafeTensorsDType.I64));
        Assert.That(ids.Shape, Is.EqualTo(new long[] { 2, 24 }));
        Assert.That(file.ReadInt64("input_ids").Take(4), Is.EqualTo(new long[] { 75, 91, 70, 93 }));
        var logits = file.Get("logits");
        Assert.That(logits.DType, Is.EqualTo(SafeTensorsDType.F64));
        Assert.That(logits.Shape, Is.EqualTo(new long[] { 2, 24, 96 }));
        double[] values = file.ReadFloat64("logits");
        Assert.That(values[0], Is.EqualTo(-0.3674613630036409));
        Assert.That(file.ReadFloat32("logits")[1], Is.EqualTo((float)0.13805840767015506));
    }

    [Test]
    public void FixtureRewrittenByTheWriterReadsBackIdentically()
    {
        using var source = SafeTensorsFile.Open(Fixture("llama-gqa-tied-hft", "model.safetensors"));
        var entries = source.Names
            .Select(n => SafeTensorsWriter.Entry.FromFloat32(n, source.ReadFloat32(n), source.Get(n).Shape))
            .ToList();
        string copy = Path.Combine(_dir, "copy.safetensors");
        SafeTensorsWriter.Write(copy, entries, source.Metadata);
        using var reread = SafeTensorsFile.Open(copy);
        Assert.That(reread.Names, Is.EqualTo(source.Names));
        foreach (var name in source.Names)
            Assert.That(reread.ReadFloat32(name), Is.EqualTo(source.ReadFloat32(name)), name);
        // The fixture was written by Hugging Face's safetensors; same tensors in the same order give the same bytes.
        Assert.That(File.ReadAllBytes(copy), Is.EqualTo(File.ReadAllBytes(source.Path)));
    }
}
