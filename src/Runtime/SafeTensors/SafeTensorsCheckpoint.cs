using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Unicode;

namespace HftRuntime.Runtime.SafeTensors;

/// <summary>
/// The weights of a Hugging Face style checkpoint directory: either one <c>model.safetensors</c>, or, when that
/// is absent, the shards listed by <c>model.safetensors.index.json</c> (<c>{"metadata": {...}, "weight_map":
/// {tensor: shard file}}</c>). Each shard is opened once and every tensor of the weight map is checked to exist in
/// its shard. The tensors of all files are read through one set of methods; reads are thread-safe.
/// </summary>
public sealed class SafeTensorsCheckpoint : ISafeTensorsSource
{
    /// <summary>The name of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The name of the index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly SafeTensorsFile[] _files;
    private readonly Dictionary<string, (TensorInfo Info, SafeTensorsFile File)> _tensors;
    private readonly string[] _names;

    private SafeTensorsCheckpoint(string directory, string? indexPath, SafeTensorsFile[] files,
        Dictionary<string, (TensorInfo, SafeTensorsFile)> tensors, string[] names,
        IReadOnlyDictionary<string, string> indexMetadata)
    {
        Directory = directory;
        IndexPath = indexPath;
        _files = files;
        _tensors = tensors;
        _names = names;
        IndexMetadata = indexMetadata;
    }

    /// <summary>The checkpoint directory.</summary>
    public string Directory { get; }

    /// <summary>The index file of a sharded checkpoint; null for a single <c>model.safetensors</c>.</summary>
    public string? IndexPath { get; }

    /// <summary>True when the checkpoint was opened through an index.</summary>
    public bool IsSharded => IndexPath is not null;

    /// <summary>The opened files (one, or the shards in the order they first appear in the weight map).</summary>
    public IReadOnlyList<SafeTensorsFile> Files => _files;

    /// <summary>The index's "metadata" (values as strings; numbers and other JSON values as their JSON text);
    /// empty for a single-file checkpoint or an index without metadata.</summary>
    public IReadOnlyDictionary<string, string> IndexMetadata { get; }

    /// <inheritdoc/>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Opens the checkpoint in <paramref name="directory"/>. Problems (no weights file, a malformed index, a
    /// missing shard or tensor, a corrupt shard) raise <see cref="InvalidInputException"/> naming the file at fault.</summary>
    public static SafeTensorsCheckpoint Open(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (!System.IO.Directory.Exists(directory))
            throw new InvalidInputException(directory, "checkpoint directory not found");

        string single = Path.Combine(directory, SingleFileName);
        if (File.Exists(single))
        {
            var file = SafeTensorsFile.Open(single);
            var tensors = new Dictionary<string, (TensorInfo, SafeTensorsFile)>(StringComparer.Ordinal);
            foreach (var name in file.Names) tensors.Add(name, (file.Get(name), file));
            return new SafeTensorsCheckpoint(directory, null, [file], tensors, file.Names.ToArray(),
                new Dictionary<string, string>());
        }

        string index = Path.Combine(directory, IndexFileName);
        if (File.Exists(index)) return OpenIndex(directory, index);

        throw new InvalidInputException(directory, $"no weights found: neither {SingleFileName} nor {IndexFileName} exists");
    }

    private static SafeTensorsCheckpoint OpenIndex(string directory, string indexPath)
    {
        JsonDocument document;
        try
        {
            byte[] bytes = File.ReadAllBytes(indexPath);
            if (!Utf8.IsValid(bytes)) throw new InvalidInputException(indexPath, "not valid UTF-8");
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(indexPath, $"not valid JSON: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidInputException(indexPath, $"cannot read the file: {e.Message}", e);
        }

        var files = new List<SafeTensorsFile>();
        try
        {
            using (document)
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object)
                    throw new InvalidInputException(indexPath, "the index is not a JSON object");

                var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
                if (root.TryGetProperty("metadata", out var metadataElement) && metadataElement.ValueKind != JsonValueKind.Null)
                {
                    if (metadataElement.ValueKind != JsonValueKind.Object)
                        throw new InvalidInputException(indexPath, "\"metadata\" is not a JSON object");
                    foreach (var entry in metadataElement.EnumerateObject())
                    {
                        string key = Text(indexPath, () => entry.Name, "a \"metadata\" key");
                        metadata[key] = entry.Value.ValueKind == JsonValueKind.String
                            ? Text(indexPath, () => entry.Value.GetString()!, $"\"metadata\" entry '{key}'")
                            : entry.Value.GetRawText();
                    }
                }

                if (!root.TryGetProperty("weight_map", out var map))
                    throw new InvalidInputException(indexPath, "missing \"weight_map\"");
                if (map.ValueKind != JsonValueKind.Object)
                    throw new InvalidInputException(indexPath, "\"weight_map\" is not a JSON object");

                var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
                var tensors = new Dictionary<string, (TensorInfo, SafeTensorsFile)>(StringComparer.Ordinal);
                var names = new List<string>();
                foreach (var entry in map.EnumerateObject())
                {
                    string name = Text(indexPath, () => entry.Name, "a \"weight_map\" tensor name");
                    if (entry.Value.ValueKind != JsonValueKind.String)
                        throw new InvalidInputException(indexPath, $"\"weight_map\" entry for tensor '{name}' is not a string");
                    string shard = Text(indexPath, () => entry.Value.GetString()!, $"the shard of tensor '{name}'");
                    if (tensors.ContainsKey(name))
                        throw new InvalidInputException(indexPath, $"duplicate \"weight_map\" entry for tensor '{name}'");
                    if (shard.Length == 0 || Path.IsPathRooted(shard)
                        || shard.Split('/', '\\').Any(part => part is ".." or ""))
                    {
                        throw new InvalidInputException(indexPath,
                            $"tensor '{name}' maps to shard '{shard}', which is not a relative file name inside the checkpoint directory");
                    }

                    if (!shards.TryGetValue(shard, out var file))
                    {
                        string shardPath = Path.Combine(directory, shard);
                        if (!File.Exists(shardPath))
                            throw new InvalidInputException(indexPath, $"tensor '{name}' maps to shard '{shard}', which does not exist");
                        file = SafeTensorsFile.Open(shardPath);
                        files.Add(file);
                        shards.Add(shard, file);
                    }

                    if (!file.TryGet(name, out var info))
                        throw new InvalidInputException(indexPath, $"tensor '{name}' is not in its shard '{shard}'");
                    tensors.Add(name, (info, file));
                    names.Add(name);
                }

                return new SafeTensorsCheckpoint(directory, indexPath, files.ToArray(), tensors, names.ToArray(), metadata);
            }
        }
        catch
        {
            foreach (var file in files) file.Dispose();
            throw;
        }
    }

    /// <summary>A JSON string or property name as text; a lone surrogate escape (<c>"\ud800"</c>) is bad input.</summary>
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

    /// <inheritdoc/>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <inheritdoc/>
    public bool TryGet(string name, [MaybeNullWhen(false)] out TensorInfo info)
    {
        if (_tensors.TryGetValue(name, out var entry))
        {
            info = entry.Info;
            return true;
        }
        info = null;
        return false;
    }

    /// <inheritdoc/>
    public TensorInfo Get(string name) => Find(name).Info;

    /// <inheritdoc/>
    public void ReadFloat32(string name, Span<float> destination) => Find(name).File.ReadFloat32(name, destination);

    /// <inheritdoc/>
    public void ReadFloat64(string name, Span<double> destination) => Find(name).File.ReadFloat64(name, destination);

    /// <inheritdoc/>
    public void ReadInt64(string name, Span<long> destination) => Find(name).File.ReadInt64(name, destination);

    /// <inheritdoc/>
    public void ReadBytes(string name, Span<byte> destination) => Find(name).File.ReadBytes(name, destination);

    /// <summary>Closes every file.</summary>
    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
    }

    private (TensorInfo Info, SafeTensorsFile File) Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _tensors.TryGetValue(name, out var entry)
            ? entry
            : throw new InvalidInputException(IndexPath ?? Path.Combine(Directory, SingleFileName), $"tensor '{name}' not found");
    }
}
