using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace HftRuntime.Runtime.SafeTensors;

/// <summary>
/// Writes safetensors files laid out exactly as the Hugging Face safetensors library writes them (and as its
/// reader demands): the header JSON padded with spaces to a multiple of 8 bytes, then the tensors back to back,
/// in the order given, from data offset 0, with no gaps. Tensor bytes are streamed through a bounded buffer, so a
/// multi-gigabyte model never needs one giant array. Each file is written to a temporary file in the same
/// directory, flushed to disk and renamed over the destination, so a failure leaves any previous file untouched.
/// </summary>
public static partial class SafeTensorsWriter
{
    /// <summary>Bytes handed to a <see cref="FillBytes"/> callback at a time (a multiple of every element size).</summary>
    public const int ChunkBytes = 4 << 20;

    /// <summary>
    /// Supplies a tensor's bytes in order, one chunk at a time: fill <paramref name="destination"/> completely with
    /// the tensor's little-endian bytes starting at <paramref name="byteOffset"/> (always a multiple of the element
    /// size; chunks come in increasing order and together cover the tensor exactly once).
    /// </summary>
    public delegate void FillBytes(long byteOffset, Span<byte> destination);

    /// <summary>One tensor to write: name, dtype, shape and where its bytes come from.</summary>
    public sealed class Entry
    {
        private readonly ReadOnlyMemory<byte> _data;
        private readonly FillBytes? _fill;
        private readonly long[] _shape;

        /// <summary>A tensor whose bytes (little-endian, <see cref="ByteLength"/> of them) are already in memory.</summary>
        public Entry(string name, SafeTensorsDType dtype, IReadOnlyList<long> shape, ReadOnlyMemory<byte> data)
            : this(name, dtype, shape)
        {
            if (data.Length != ByteLength)
                throw new ArgumentException($"tensor '{name}': {dtype} {TensorInfo.FormatShape(_shape)} needs {ByteLength} bytes, got {data.Length}", nameof(data));
            _data = data;
        }

        /// <summary>A tensor whose bytes are produced chunk by chunk while the file is written.</summary>
        public Entry(string name, SafeTensorsDType dtype, IReadOnlyList<long> shape, FillBytes fill)
            : this(name, dtype, shape)
        {
            ArgumentNullException.ThrowIfNull(fill);
            _fill = fill;
        }

        private Entry(string name, SafeTensorsDType dtype, IReadOnlyList<long> shape)
        {
            ArgumentException.ThrowIfNullOrEmpty(name);
            ArgumentNullException.ThrowIfNull(shape);
            if (name == "__metadata__") throw new ArgumentException("'__metadata__' is reserved and cannot name a tensor", nameof(name));
            int size = dtype.SizeOf();
            _shape = shape.ToArray();
            long count = 1;
            foreach (long d in _shape)
            {
                if (d < 0) throw new ArgumentException($"tensor '{name}': negative dimension in shape {TensorInfo.FormatShape(_shape)}", nameof(shape));
                count = checked(count * d);
            }
            Name = name;
            DType = dtype;
            ElementCount = count;
            ByteLength = checked(count * size);
        }

        /// <summary>The tensor's name.</summary>
        public string Name { get; }

        /// <summary>The dtype written to the file.</summary>
        public SafeTensorsDType DType { get; }

        /// <summary>The shape, outermost dimension first.</summary>
        public IReadOnlyList<long> Shape => _shape;

        /// <summary>The number of elements.</summary>
        public long ElementCount { get; }

        /// <summary>The number of bytes written for the tensor.</summary>
        public long ByteLength { get; }

        /// <summary>Float32 values stored as F32. <paramref name="shape"/> defaults to one dimension of all values.</summary>
        public static Entry FromFloat32(string name, ReadOnlyMemory<float> values, IReadOnlyList<long>? shape = null) =>
            FromValues(name, SafeTensorsDType.F32, values, shape);

        /// <summary>Float64 values stored as F64.</summary>
        public static Entry FromFloat64(string name, ReadOnlyMemory<double> values, IReadOnlyList<long>? shape = null) =>
            FromValues(name, SafeTensorsDType.F64, values, shape);

        /// <summary>Int64 values stored as I64.</summary>
        public static Entry FromInt64(string name, ReadOnlyMemory<long> values, IReadOnlyList<long>? shape = null) =>
            FromValues(name, SafeTensorsDType.I64, values, shape);

        /// <summary>Int32 values stored as I32.</summary>
        public static Entry FromInt32(string name, ReadOnlyMemory<int> values, IReadOnlyList<long>? shape = null) =>
            FromValues(name, SafeTensorsDType.I32, values, shape);

        /// <summary>Float32 values stored as BF16, rounded to nearest even (see <see cref="FloatConversions.FloatToBFloat16"/>).</summary>
        public static Entry FromFloat32AsBFloat16(string name, ReadOnlyMemory<float> values, IReadOnlyList<long>? shape = null) =>
            FromConverted(name, SafeTensorsDType.BF16, values, shape, FloatConversions.FloatToBFloat16);

        /// <summary>Float32 values stored as F16, rounded to nearest even (see <see cref="FloatConversions.FloatToHalf"/>).</summary>
        public static Entry FromFloat32AsFloat16(string name, ReadOnlyMemory<float> values, IReadOnlyList<long>? shape = null) =>
            FromConverted(name, SafeTensorsDType.F16, values, shape, FloatConversions.FloatToHalf);

        private static Entry FromValues<T>(string name, SafeTensorsDType dtype, ReadOnlyMemory<T> values,
            IReadOnlyList<long>? shape) where T : unmanaged
        {
            int size = dtype.SizeOf();
            var entry = new Entry(name, dtype, CheckShape(name, values.Length, shape), (offset, destination) =>
            {
                var source = values.Span.Slice((int)(offset / size), destination.Length / size);
                MemoryMarshal.AsBytes(source).CopyTo(destination);
                if (!BitConverter.IsLittleEndian)
                {
                    for (int i = 0; i < destination.Length; i += size) destination.Slice(i, size).Reverse();
                }
            });
            return entry;
        }

        private static Entry FromConverted(string name, SafeTensorsDType dtype, ReadOnlyMemory<float> values,
            IReadOnlyList<long>? shape, Func<float, ushort> convert) =>
            new(name, dtype, CheckShape(name, values.Length, shape), (offset, destination) =>
            {
                var source = values.Span.Slice((int)(offset / 2), destination.Length / 2);
                for (int i = 0; i < source.Length; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(destination.Slice(2 * i, 2), convert(source[i]));
            });

        private static IReadOnlyList<long> CheckShape(string name, int length, IReadOnlyList<long>? shape)
        {
            if (shape is null) return [length];
            long count = 1;
            foreach (long d in shape) count = d < 0 ? -1 : checked(count * d);
            if (count != length)
                throw new ArgumentException($"tensor '{name}': shape {TensorInfo.FormatShape(shape)} does not hold {length} values", nameof(shape));
            return shape;
        }

        /// <summary>Writes the tensor's bytes to <paramref name="stream"/>, using <paramref name="buffer"/> for callbacks.</summary>
        internal void WriteData(Stream stream, byte[] buffer)
        {
            if (_fill is null)
            {
                stream.Write(_data.Span);
                return;
            }
            for (long offset = 0; offset < ByteLength; offset += buffer.Length)
            {
                var chunk = buffer.AsSpan(0, (int)Math.Min(buffer.Length, ByteLength - offset));
                _fill(offset, chunk);
                stream.Write(chunk);
            }
        }
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> (whose directory must exist), replacing any
    /// existing file atomically. <paramref name="metadata"/> becomes the header's "__metadata__"; pass
    /// <c>{"format": "pt"}</c> for files that transformers will load (it rejects other formats when metadata is present).
    /// If anything fails, including a data callback, the temporary file is deleted, the exception propagates and any
    /// previous file at <paramref name="path"/> is left as it was.
    /// </summary>
    public static void Write(string path, IReadOnlyList<Entry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        byte[] header = BuildHeader(tensors, metadata);
        long total = 8 + header.Length + tensors.Sum(t => t.ByteLength);
        WriteAtomically(path, total, stream =>
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            stream.Write(prefix);
            stream.Write(header);
            byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
            try
            {
                foreach (var tensor in tensors)
                {
                    long before = stream.Position;
                    tensor.WriteData(stream, buffer);
                    if (stream.Position - before != tensor.ByteLength)
                        throw new InvalidOperationException($"tensor '{tensor.Name}': wrote {stream.Position - before} bytes instead of {tensor.ByteLength}");
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        });
    }

    /// <summary>
    /// Builds the header JSON (without the 8-byte length): "__metadata__" first when given, then each tensor with
    /// contiguous data offsets in the given order; padded with spaces to a multiple of 8 bytes.
    /// </summary>
    public static byte[] BuildHeader(IReadOnlyList<Entry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in tensors)
        {
            ArgumentNullException.ThrowIfNull(tensor, nameof(tensors));
            if (!seen.Add(tensor.Name)) throw new ArgumentException($"duplicate tensor name '{tensor.Name}'", nameof(tensors));
        }

        var json = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            if (metadata is not null)
            {
                writer.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) writer.WriteString(key, value);
                writer.WriteEndObject();
            }
            long offset = 0;
            foreach (var tensor in tensors)
            {
                writer.WriteStartObject(tensor.Name);
                writer.WriteString("dtype", tensor.DType.ToHeaderName());
                writer.WriteStartArray("shape");
                foreach (long d in tensor.Shape) writer.WriteNumberValue(d);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                offset += tensor.ByteLength;
                writer.WriteNumberValue(offset);
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }

        int padded = (json.WrittenCount + 7) / 8 * 8;
        if (padded > SafeTensorsFile.MaxHeaderBytes)
            throw new ArgumentException($"the header would be {padded} bytes, over the limit of {SafeTensorsFile.MaxHeaderBytes}", nameof(tensors));
        var header = new byte[padded];
        json.WrittenSpan.CopyTo(header);
        header.AsSpan(json.WrittenCount).Fill((byte)' ');
        return header;
    }

    /// <summary>
    /// Writes a checkpoint the way Hugging Face's <c>save_pretrained</c> does: the tensors, in order, are split into
    /// shards of at most <paramref name="maxShardBytes"/> of tensor data exactly as huggingface_hub's
    /// <c>split_state_dict_into_shards</c> does (a larger tensor gets a shard of its own, placed when it is met),
    /// written as <c>model-00001-of-0000N.safetensors</c>, ... plus <c>model.safetensors.index.json</c>; when
    /// everything fits in one shard, a single <c>model.safetensors</c> is written instead and no index. The directory
    /// is created if needed. Weight files of an earlier save that the new one does not use (<c>model.safetensors</c>,
    /// shards with other names, the index) are then deleted, as save_pretrained does, so that readers cannot pick
    /// them up. Each file is replaced atomically, the set as a whole is not. Every file gets
    /// <paramref name="metadata"/>, by default <c>{"format": "pt"}</c>. Returns the file names written.
    /// </summary>
    public static IReadOnlyList<string> WriteSharded(string directory, IReadOnlyList<Entry> tensors, long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        _ = BuildHeader(tensors); // validates names before anything is written
        metadata ??= new Dictionary<string, string> { ["format"] = "pt" };
        Directory.CreateDirectory(directory);

        // huggingface_hub's split_state_dict_into_shards: a tensor larger than the limit is put in a shard of its
        // own right away; otherwise the current shard is closed when the tensor would take it over the limit.
        var shards = new List<List<Entry>>();
        var currentShard = new List<Entry>();
        long current = 0;
        foreach (var tensor in tensors)
        {
            if (tensor.ByteLength > maxShardBytes)
            {
                shards.Add([tensor]);
                continue;
            }
            if (current + tensor.ByteLength > maxShardBytes)
            {
                shards.Add(currentShard);
                currentShard = [];
                current = 0;
            }
            currentShard.Add(tensor);
            current += tensor.ByteLength;
        }
        if (currentShard.Count > 0 || shards.Count == 0) shards.Add(currentShard);

        var written = new List<string>();
        string indexPath = Path.Combine(directory, SafeTensorsCheckpoint.IndexFileName);
        if (shards.Count == 1)
        {
            Write(Path.Combine(directory, SafeTensorsCheckpoint.SingleFileName), tensors, metadata);
            written.Add(SafeTensorsCheckpoint.SingleFileName);
            if (File.Exists(indexPath)) File.Delete(indexPath);
        }
        else
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                string file = ShardFileName(i + 1, shards.Count);
                Write(Path.Combine(directory, file), shards[i], metadata);
                written.Add(file);
                foreach (var tensor in shards[i]) weightMap[tensor.Name] = file;
            }
            byte[] index = BuildIndex(weightMap, tensors.Sum(t => t.ElementCount), tensors.Sum(t => t.ByteLength));
            WriteAtomically(indexPath, index.Length, stream => stream.Write(index));
            string single = Path.Combine(directory, SafeTensorsCheckpoint.SingleFileName);
            if (File.Exists(single)) File.Delete(single);
        }

        foreach (var stale in Directory.EnumerateFiles(directory, "model-*-of-*.safetensors"))
        {
            string name = Path.GetFileName(stale);
            if (ShardPattern().IsMatch(name) && !written.Contains(name)) File.Delete(stale);
        }
        return written;
    }

    /// <summary>The Hugging Face shard file name, e.g. <c>model-00002-of-00005.safetensors</c> (1-based).</summary>
    public static string ShardFileName(int shard, int count) =>
        string.Create(CultureInfo.InvariantCulture, $"model-{shard:D5}-of-{count:D5}.safetensors");

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$")]
    private static partial Regex ShardPattern();

    private static byte[] BuildIndex(SortedDictionary<string, string> weightMap, long parameters, long bytes)
    {
        var json = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions
        {
            Indented = true,
            Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
            IndentSize = 2,
            NewLine = "\n",
        }))
        {
            writer.WriteStartObject();
            writer.WriteStartObject("metadata");
            writer.WriteNumber("total_parameters", parameters);
            writer.WriteNumber("total_size", bytes);
            writer.WriteEndObject();
            writer.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap) writer.WriteString(name, file);
            writer.WriteEndObject();
            writer.WriteEndObject();
        }
        var result = new byte[json.WrittenCount + 1];
        json.WrittenSpan.CopyTo(result);
        result[^1] = (byte)'\n';
        return result;
    }

    /// <summary>Writes through a temporary file in the destination's directory, flushes it to disk and renames it
    /// over the destination; on failure deletes the temporary file and rethrows.</summary>
    private static void WriteAtomically(string path, long expectedLength, Action<FileStream> write)
    {
        string temp = $"{path}.tmp-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}";
        try
        {
            using (var stream = new FileStream(temp, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                Share = FileShare.None,
                BufferSize = 1 << 20,
                PreallocationSize = expectedLength,
            }))
            {
                write(stream);
                if (stream.Position != expectedLength)
                    throw new InvalidOperationException($"{temp}: wrote {stream.Position} bytes instead of {expectedLength}");
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The original exception matters more than a temporary file we could not remove.
            }
            throw;
        }
    }
}
