using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Unicode;
using Microsoft.Win32.SafeHandles;

namespace HftRuntime.Runtime.SafeTensors;

/// <summary>
/// One safetensors file, opened for reading: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// describing the tensors, then the data section. <see cref="Open"/> validates the whole header (types, dtypes,
/// shapes, offsets inside the file, sizes matching shapes, no overlaps, no duplicates); gaps between tensors are
/// accepted. Tensor data is read on demand with positional reads, converting in bounded chunks, so files larger
/// than memory are fine. Reads are thread-safe.
/// </summary>
public sealed class SafeTensorsFile : ISafeTensorsSource
{
    /// <summary>The largest header accepted, in bytes (100 MB, the limit of the reference implementation). It is
    /// checked before the header is read or allocated.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>The size of the staging buffer used when converting, in bytes.</summary>
    private const int ChunkBytes = 1 << 20;

    /// <summary>The most elements read straight into a destination span at once (keeps byte counts in int range).</summary>
    private const int DirectChunkElements = 1 << 26;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, TensorInfo> _tensors;
    private readonly string[] _names;

    private SafeTensorsFile(string path, SafeFileHandle handle, long length, long dataStart,
        Dictionary<string, TensorInfo> tensors, string[] names, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _handle = handle;
        FileLength = length;
        DataStart = dataStart;
        _tensors = tensors;
        _names = names;
        Metadata = metadata;
    }

    /// <summary>The path the file was opened with.</summary>
    public string Path { get; }

    /// <summary>The file's length in bytes when it was opened.</summary>
    public long FileLength { get; }

    /// <summary>Offset of the data section from the start of the file: 8 plus the header length.</summary>
    public long DataStart { get; }

    /// <summary>The header's "__metadata__" (empty when there is none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensors by name.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    /// <inheritdoc/>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Opens and validates a safetensors file. Any problem with the file, a missing file included, raises
    /// <see cref="InvalidInputException"/> naming the file and the tensor or field at fault.</summary>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new InvalidInputException(path, Directory.Exists(path)
                ? "is a directory, not a safetensors file"
                : "safetensors file not found");
        }

        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidInputException(path, $"cannot open the file: {e.Message}", e);
        }

        try
        {
            long length = RandomAccess.GetLength(handle);
            if (length < 8)
                throw new InvalidInputException(path, $"the file is {length} bytes long, shorter than the 8-byte header length");
            Span<byte> prefix = stackalloc byte[8];
            ReadExact(handle, path, 0, prefix, "the header length");
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength == 0)
                throw new InvalidInputException(path, "the header length is 0");
            if (headerLength > MaxHeaderBytes)
                throw new InvalidInputException(path, $"the header length {headerLength} exceeds the limit of {MaxHeaderBytes} bytes");
            if (headerLength > (ulong)(length - 8))
                throw new InvalidInputException(path,
                    $"the header length {headerLength} reaches beyond the end of the file ({length} bytes): the file is truncated or not a safetensors file");

            var header = new byte[headerLength];
            ReadExact(handle, path, 8, header, "the header");
            long dataStart = 8 + (long)headerLength;
            var (tensors, names, metadata) = ParseHeader(path, header, dataStart, length - dataStart);
            return new SafeTensorsFile(path, handle, length, dataStart, tensors, names, metadata);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <inheritdoc/>
    public bool TryGet(string name, [MaybeNullWhen(false)] out TensorInfo info) => _tensors.TryGetValue(name, out info);

    /// <inheritdoc/>
    public TensorInfo Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _tensors.TryGetValue(name, out var info)
            ? info
            : throw new InvalidInputException(Path, $"tensor '{name}' not found");
    }

    /// <inheritdoc/>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var info = Get(name);
        CheckLength(info, destination.Length);
        switch (info.DType)
        {
            case SafeTensorsDType.F32: ReadDirect(info, destination); break;
            case SafeTensorsDType.F64: ReadNumbers<double, float>(info, destination); break;
            case SafeTensorsDType.BF16: ReadBf16(info, destination); break;
            case SafeTensorsDType.F16: ReadF16(info, destination); break;
            default: throw WrongType(info, "float32", "F32, F64, BF16, F16");
        }
    }

    /// <inheritdoc/>
    public void ReadFloat64(string name, Span<double> destination)
    {
        var info = Get(name);
        CheckLength(info, destination.Length);
        switch (info.DType)
        {
            case SafeTensorsDType.F64: ReadDirect(info, destination); break;
            case SafeTensorsDType.F32: ReadNumbers<float, double>(info, destination); break;
            case SafeTensorsDType.BF16: ReadBf16(info, destination); break;
            case SafeTensorsDType.F16: ReadF16(info, destination); break;
            default: throw WrongType(info, "float64", "F64, F32, BF16, F16");
        }
    }

    /// <inheritdoc/>
    public void ReadInt64(string name, Span<long> destination)
    {
        var info = Get(name);
        CheckLength(info, destination.Length);
        switch (info.DType)
        {
            case SafeTensorsDType.I64: ReadDirect(info, destination); break;
            case SafeTensorsDType.I32: ReadNumbers<int, long>(info, destination); break;
            case SafeTensorsDType.U32: ReadNumbers<uint, long>(info, destination); break;
            case SafeTensorsDType.I16: ReadNumbers<short, long>(info, destination); break;
            case SafeTensorsDType.U16: ReadNumbers<ushort, long>(info, destination); break;
            case SafeTensorsDType.I8: ReadNumbers<sbyte, long>(info, destination); break;
            case SafeTensorsDType.U8:
            case SafeTensorsDType.BOOL: ReadNumbers<byte, long>(info, destination); break;
            default: throw WrongType(info, "int64", "I64, I32, I16, I8, U32, U16, U8, BOOL");
        }
    }

    /// <inheritdoc/>
    public void ReadBytes(string name, Span<byte> destination)
    {
        var info = Get(name);
        if (destination.Length != info.ByteLength)
        {
            throw new InvalidInputException(Path,
                $"tensor '{info.Name}' has {info.ByteLength} bytes ({info.DType} {info.ShapeText}) but the destination holds {destination.Length}");
        }
        long done = 0;
        while (done < info.ByteLength)
        {
            int n = (int)Math.Min(info.ByteLength - done, int.MaxValue / 2);
            ReadExact(_handle, Path, info.ByteOffset + done, destination.Slice((int)done, n), $"tensor '{info.Name}'");
            done += n;
        }
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _handle.Dispose();

    private void CheckLength(TensorInfo info, int destinationLength)
    {
        if (destinationLength != info.ElementCount)
        {
            throw new InvalidInputException(Path,
                $"tensor '{info.Name}' has {info.ElementCount} elements (shape {info.ShapeText}) but the destination holds {destinationLength}");
        }
    }

    private InvalidInputException WrongType(TensorInfo info, string target, string supported) =>
        new(Path, $"tensor '{info.Name}' has dtype {info.DType}, which cannot be read as {target} (readable: {supported})");

    /// <summary>Reads elements stored exactly as <typeparamref name="T"/> straight into the destination.</summary>
    private void ReadDirect<T>(TensorInfo info, Span<T> destination) where T : unmanaged
    {
        int size = info.DType.SizeOf();
        for (int start = 0; start < destination.Length; start += DirectChunkElements)
        {
            var part = destination.Slice(start, Math.Min(DirectChunkElements, destination.Length - start));
            var bytes = MemoryMarshal.AsBytes(part);
            ReadExact(_handle, Path, info.ByteOffset + (long)start * size, bytes, $"tensor '{info.Name}'");
            if (!BitConverter.IsLittleEndian) ReverseEndianness(bytes, size);
        }
    }

    private delegate void ChunkConverter<T>(ReadOnlySpan<byte> source, Span<T> destination);

    /// <summary>
    /// Reads elements stored as <typeparamref name="TStored"/>, each converted to <typeparamref name="T"/> (exactly,
    /// or for float64 to float32 rounded to nearest).
    /// </summary>
    private void ReadNumbers<TStored, T>(TensorInfo info, Span<T> destination)
        where TStored : unmanaged, INumberBase<TStored> where T : INumberBase<T> =>
        ReadConverted(info, destination, static (src, dst) =>
        {
            var s = MemoryMarshal.Cast<byte, TStored>(src);
            for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(s[i]);
        });

    /// <summary>Reads bfloat16 elements as float32 or float64 (both exact).</summary>
    private void ReadBf16<T>(TensorInfo info, Span<T> destination) where T : INumberBase<T> =>
        ReadConverted(info, destination, static (src, dst) =>
        {
            var s = MemoryMarshal.Cast<byte, ushort>(src);
            for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(FloatConversions.BFloat16ToFloat(s[i]));
        });

    /// <summary>Reads IEEE half elements as float32 or float64 (both exact).</summary>
    private void ReadF16<T>(TensorInfo info, Span<T> destination) where T : INumberBase<T> =>
        ReadConverted(info, destination, static (src, dst) =>
        {
            var s = MemoryMarshal.Cast<byte, ushort>(src);
            for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(FloatConversions.HalfToFloat(s[i]));
        });

    /// <summary>Reads the tensor through a bounded staging buffer, converting each chunk.</summary>
    private void ReadConverted<T>(TensorInfo info, Span<T> destination, ChunkConverter<T> convert)
    {
        int size = info.DType.SizeOf();
        int perChunk = ChunkBytes / size;
        int bufferBytes = (int)Math.Min(info.ByteLength, (long)perChunk * size);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Max(bufferBytes, 1));
        try
        {
            for (int start = 0; start < destination.Length; start += perChunk)
            {
                int n = Math.Min(perChunk, destination.Length - start);
                var bytes = buffer.AsSpan(0, n * size);
                ReadExact(_handle, Path, info.ByteOffset + (long)start * size, bytes, $"tensor '{info.Name}'");
                if (!BitConverter.IsLittleEndian) ReverseEndianness(bytes, size);
                convert(bytes, destination.Slice(start, n));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void ReverseEndianness(Span<byte> bytes, int size)
    {
        for (int i = 0; i + size <= bytes.Length; i += size) bytes.Slice(i, size).Reverse();
    }

    private static void ReadExact(SafeFileHandle handle, string path, long offset, Span<byte> destination, string what)
    {
        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(handle, destination, offset);
            if (n <= 0)
                throw new InvalidInputException(path, $"unexpected end of file while reading {what} at offset {offset}");
            destination = destination[n..];
            offset += n;
        }
    }

    private static (Dictionary<string, TensorInfo>, string[], IReadOnlyDictionary<string, string>) ParseHeader(
        string path, byte[] header, long dataStart, long dataLength)
    {
        if (!Utf8.IsValid(header))
            throw new InvalidInputException(path, "the header is not valid UTF-8");

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"the header is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidInputException(path, $"the header is a JSON {Kind(root)}, not an object");

            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            var names = new List<string>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            var ranges = new List<(long Begin, long End, string Name)>();

            foreach (var property in root.EnumerateObject())
            {
                string name = Text(path, () => property.Name, "a tensor name");
                if (name == "__metadata__")
                {
                    if (sawMetadata) throw new InvalidInputException(path, "duplicate \"__metadata__\" entry");
                    sawMetadata = true;
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }

                if (tensors.ContainsKey(name))
                    throw new InvalidInputException(path, $"duplicate tensor name '{name}'");
                var info = ParseEntry(path, name, property.Value, dataStart, dataLength, out long begin, out long end);
                tensors.Add(name, info);
                names.Add(name);
                if (end > begin) ranges.Add((begin, end, name));
            }

            ranges.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            for (int i = 1; i < ranges.Count; i++)
            {
                var previous = ranges[i - 1];
                var current = ranges[i];
                if (current.Begin < previous.End)
                {
                    throw new InvalidInputException(path,
                        $"tensors '{previous.Name}' and '{current.Name}' overlap: data_offsets [{previous.Begin}, {previous.End}] and [{current.Begin}, {current.End}]");
                }
            }

            return (tensors, names.ToArray(), metadata);
        }
    }

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new InvalidInputException(path, $"\"__metadata__\" is a JSON {Kind(value)}, not an object of strings");
        foreach (var entry in value.EnumerateObject())
        {
            string key = Text(path, () => entry.Name, "a \"__metadata__\" key");
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new InvalidInputException(path, $"\"__metadata__\" entry '{key}' is a JSON {Kind(entry.Value)}, not a string");
            if (!metadata.TryAdd(key, Text(path, () => entry.Value.GetString()!, $"\"__metadata__\" entry '{key}'")))
                throw new InvalidInputException(path, $"duplicate \"__metadata__\" entry '{key}'");
        }
    }

    private static TensorInfo ParseEntry(string path, string name, JsonElement entry, long dataStart, long dataLength,
        out long begin, out long end)
    {
        InvalidInputException Bad(string message) => new(path, $"tensor '{name}': {message}");

        if (entry.ValueKind != JsonValueKind.Object)
            throw Bad($"the entry is a JSON {Kind(entry)}, not an object with dtype, shape and data_offsets");

        if (!entry.TryGetProperty("dtype", out var dtypeElement))
            throw Bad("missing \"dtype\"");
        if (dtypeElement.ValueKind != JsonValueKind.String)
            throw Bad($"\"dtype\" is a JSON {Kind(dtypeElement)}, not a string");
        string dtypeName = Text(path, () => dtypeElement.GetString()!, $"tensor '{name}': \"dtype\"");
        if (!SafeTensorsDTypes.TryParse(dtypeName, out var dtype))
            throw Bad($"unknown dtype '{dtypeName}'");

        if (!entry.TryGetProperty("shape", out var shapeElement))
            throw Bad("missing \"shape\"");
        if (shapeElement.ValueKind != JsonValueKind.Array)
            throw Bad($"\"shape\" is a JSON {Kind(shapeElement)}, not an array of integers");
        var shape = new long[shapeElement.GetArrayLength()];
        long count = 1;
        bool overflow = false;
        int d = 0;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long value))
                throw Bad($"\"shape\" element {d} ({dim.GetRawText()}) is not an integer");
            if (value < 0)
                throw Bad($"\"shape\" has the negative dimension {value}");
            shape[d++] = value;
            if (!overflow)
            {
                try { count = checked(count * value); }
                catch (OverflowException) { overflow = true; }
            }
        }
        if (overflow && !shape.Contains(0))
            throw Bad($"the element count of shape {TensorInfo.FormatShape(shape)} overflows");
        if (overflow) count = 0;

        long byteLength;
        try { byteLength = checked(count * dtype.SizeOf()); }
        catch (OverflowException) { throw Bad($"the byte size of shape {TensorInfo.FormatShape(shape)} ({dtypeName}) overflows"); }

        if (!entry.TryGetProperty("data_offsets", out var offsetsElement))
            throw Bad("missing \"data_offsets\"");
        if (offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
            throw Bad($"\"data_offsets\" ({offsetsElement.GetRawText()}) is not an array of two integers");
        var offsets = new long[2];
        for (int i = 0; i < 2; i++)
        {
            var element = offsetsElement[i];
            if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out offsets[i]) || offsets[i] < 0)
                throw Bad($"\"data_offsets\" ({offsetsElement.GetRawText()}) is not an array of two non-negative integers");
        }
        begin = offsets[0];
        end = offsets[1];
        if (begin > end)
            throw Bad($"\"data_offsets\" [{begin}, {end}] has its begin after its end");
        if (end > dataLength)
            throw Bad($"\"data_offsets\" end {end} is beyond the data section ({dataLength} bytes): the file is truncated");
        if (end - begin != byteLength)
            throw Bad($"\"data_offsets\" [{begin}, {end}] cover {end - begin} bytes but {dtypeName} {TensorInfo.FormatShape(shape)} needs {byteLength}");

        return new TensorInfo(name, dtype, shape, count, dataStart + begin, byteLength, path);
    }

    /// <summary>
    /// A JSON string or property name as text. The header is valid UTF-8, but an escape can still encode a lone
    /// surrogate (<c>"\ud800"</c>), which System.Text.Json refuses to turn into a string: that is bad input too.
    /// </summary>
    private static string Text(string path, Func<string> read, string what)
    {
        try
        {
            return read();
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidInputException(path, $"{what} is not valid Unicode text (a lone surrogate escape?): {e.Message}", e);
        }
    }

    private static string Kind(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => "value",
    };
}
