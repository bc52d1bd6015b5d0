using System.Runtime.InteropServices;
using HftRuntime.Kernels;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Runtime;

/// <summary>Moves parameter tensors and optimizer state between a <see cref="ParameterStore"/> and safetensors files.</summary>
public static class ParameterIo
{
    /// <summary>Metadata Hugging Face's loader expects in a PyTorch-format safetensors file.</summary>
    public static readonly IReadOnlyDictionary<string, string> PtMetadata = new Dictionary<string, string> { ["format"] = "pt" };

    /// <summary>
    /// Writes every parameter (its Hugging Face name) to <paramref name="path"/>, streaming each tensor from the
    /// device in chunks; the file is replaced atomically. Tensors are written as they are held: float32, and the
    /// frozen matrices of a bf16 model as BF16 (exactly the values it trained with; transformers loads both).
    /// </summary>
    public static void SaveWeights(string path, ParameterStore store, Backend backend) =>
        SafeTensorsWriter.Write(path, store.All.Select(p => Entry(p.Name, p.Shape, p.Value, backend)).ToList(), PtMetadata);

    /// <summary>Writes the AdamW moments of the trainable tensors ("m.NAME", "v.NAME").</summary>
    public static void SaveOptimizer(string path, ParameterStore store, Backend backend)
    {
        if (!store.HasOptimizerState) throw new InvalidOperationException("the store has no optimizer state");
        var entries = new List<SafeTensorsWriter.Entry>();
        foreach (var p in store.All.Where(p => p.Trainable))
        {
            entries.Add(Entry("m." + p.Name, p.Shape, store.Moment1.Slice(p.Offset, p.Count), backend));
            entries.Add(Entry("v." + p.Name, p.Shape, store.Moment2.Slice(p.Offset, p.Count), backend));
        }
        SafeTensorsWriter.Write(path, entries);
    }

    /// <summary>Reads the AdamW moments written by <see cref="SaveOptimizer"/>; every trainable tensor must be present.</summary>
    public static void LoadOptimizer(string path, ParameterStore store, Backend backend)
    {
        using var file = SafeTensorsFile.Open(path);
        foreach (var p in store.All.Where(p => p.Trainable))
        {
            Read(file, "m." + p.Name, p, store.Moment1.Slice(p.Offset, p.Count), backend);
            Read(file, "v." + p.Name, p, store.Moment2.Slice(p.Offset, p.Count), backend);
        }
    }

    /// <summary>Reads every parameter from <paramref name="source"/> with shape checks (F32/F64/BF16/F16 accepted).</summary>
    public static void LoadWeights(ISafeTensorsSource source, ParameterStore store, Backend backend)
    {
        foreach (var p in store.All) CheckShape(source.Get(p.Name), p);
        foreach (var p in store.All) store.Write(backend, p, ReadFloats(source, p.Name, p));
    }

    private static void Read(ISafeTensorsSource source, string name, Parameter p, Tensor dst, Backend backend) =>
        backend.Upload<float>(dst, ReadFloats(source, name, p));

    private static float[] ReadFloats(ISafeTensorsSource source, string name, Parameter p)
    {
        var info = source.Get(name);
        CheckShape(info, p, name);
        var buffer = new float[p.Count];
        source.ReadFloat32(name, buffer);
        return buffer;
    }

    private static void CheckShape(TensorInfo info, Parameter p, string? name = null)
    {
        if (info.Shape.Length != p.Shape.Length || info.Shape.Where((s, i) => s != p.Shape[i]).Any())
            throw new InvalidInputException(info.FilePath,
                $"tensor '{name ?? p.Name}' has shape {info.ShapeText}, but the model expects {TensorInfo.FormatShape(p.Shape.Select(s => (long)s))}");
    }

    private static SafeTensorsWriter.Entry Entry(string name, int[] shape, Tensor t, Backend backend) => t.Type == DType.BF16
        ? new(name, SafeTensorsDType.BF16, shape.Select(s => (long)s).ToArray(), (offset, dst) =>
        {
            var bits = MemoryMarshal.Cast<byte, ushort>(dst);
            backend.Download<ushort>(t.Slice(offset / sizeof(ushort), bits.Length), bits);
        })
        : new(name, SafeTensorsDType.F32, shape.Select(s => (long)s).ToArray(), (offset, dst) =>
        {
            var floats = MemoryMarshal.Cast<byte, float>(dst);
            backend.Download<float>(t.Slice(offset / sizeof(float), floats.Length), floats);
        });
}
