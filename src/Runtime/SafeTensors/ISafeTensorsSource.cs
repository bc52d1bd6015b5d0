using System.Diagnostics.CodeAnalysis;

namespace HftRuntime.Runtime.SafeTensors;

/// <summary>
/// Named tensors that can be read with conversion: one safetensors file (<see cref="SafeTensorsFile"/>) or a
/// whole, possibly sharded, checkpoint (<see cref="SafeTensorsCheckpoint"/>). Reads may run concurrently.
/// Problems with the data (a missing tensor, a dtype that cannot be converted, a size mismatch, a truncated
/// file) raise <see cref="InvalidInputException"/> naming the file and the tensor.
/// </summary>
public interface ISafeTensorsSource : IDisposable
{
    /// <summary>The tensor names, in header (or index) order.</summary>
    IReadOnlyList<string> Names { get; }

    /// <summary>True when a tensor of this name exists.</summary>
    bool Contains(string name);

    /// <summary>Looks a tensor up; false when absent.</summary>
    bool TryGet(string name, [MaybeNullWhen(false)] out TensorInfo info);

    /// <summary>Looks a tensor up; throws <see cref="InvalidInputException"/> naming the tensor when absent.</summary>
    TensorInfo Get(string name);

    /// <summary>Reads a F32, F64 (rounded to nearest), BF16 or F16 tensor as float32 into <paramref name="destination"/>,
    /// whose length must equal the element count.</summary>
    void ReadFloat32(string name, Span<float> destination);

    /// <summary>Reads a F64, F32, BF16 or F16 tensor as float64 into <paramref name="destination"/>, whose length must
    /// equal the element count.</summary>
    void ReadFloat64(string name, Span<double> destination);

    /// <summary>Reads an integer tensor (I64, I32, I16, I8, U32, U16, U8 or BOOL) as int64 into
    /// <paramref name="destination"/>, whose length must equal the element count.</summary>
    void ReadInt64(string name, Span<long> destination);

    /// <summary>Copies a tensor's stored bytes (little-endian, as in the file) into <paramref name="destination"/>, whose
    /// length must equal the tensor's byte length.</summary>
    void ReadBytes(string name, Span<byte> destination);
}

/// <summary>Convenience readers that allocate the result array.</summary>
public static class SafeTensorsSourceExtensions
{
    /// <summary>Reads a tensor as a new float32 array (see <see cref="ISafeTensorsSource.ReadFloat32"/>).</summary>
    public static float[] ReadFloat32(this ISafeTensorsSource source, string name)
    {
        var result = new float[ArrayLength(source, name)];
        source.ReadFloat32(name, result);
        return result;
    }

    /// <summary>Reads a tensor as a new float64 array (see <see cref="ISafeTensorsSource.ReadFloat64"/>).</summary>
    public static double[] ReadFloat64(this ISafeTensorsSource source, string name)
    {
        var result = new double[ArrayLength(source, name)];
        source.ReadFloat64(name, result);
        return result;
    }

    /// <summary>Reads a tensor as a new int64 array (see <see cref="ISafeTensorsSource.ReadInt64"/>).</summary>
    public static long[] ReadInt64(this ISafeTensorsSource source, string name)
    {
        var result = new long[ArrayLength(source, name)];
        source.ReadInt64(name, result);
        return result;
    }

    private static int ArrayLength(ISafeTensorsSource source, string name)
    {
        var info = source.Get(name);
        if (info.ElementCount > Array.MaxLength)
            throw new InvalidInputException(info.FilePath,
                $"tensor '{name}' has {info.ElementCount} elements, too many for one array; read it into a span instead");
        return (int)info.ElementCount;
    }
}
