namespace HftRuntime.Runtime.SafeTensors;

/// <summary>One tensor of a safetensors file, as described by the file's (validated) header.</summary>
public sealed class TensorInfo
{
    /// <summary>Creates the description; the reader does this after validating the header.</summary>
    public TensorInfo(string name, SafeTensorsDType dtype, long[] shape, long elementCount, long byteOffset,
        long byteLength, string filePath)
    {
        Name = name;
        DType = dtype;
        Shape = shape;
        ElementCount = elementCount;
        ByteOffset = byteOffset;
        ByteLength = byteLength;
        FilePath = filePath;
    }

    /// <summary>The tensor's name (the header key).</summary>
    public string Name { get; }

    /// <summary>The element type stored in the file.</summary>
    public SafeTensorsDType DType { get; }

    /// <summary>The dimensions, outermost first; empty for a scalar. Shared with the reader: do not modify.</summary>
    public long[] Shape { get; }

    /// <summary>Number of elements: the product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount { get; }

    /// <summary>Position of the first byte, from the start of the file (not of the data section).</summary>
    public long ByteOffset { get; }

    /// <summary>Number of bytes: <see cref="ElementCount"/> times the size of <see cref="DType"/>.</summary>
    public long ByteLength { get; }

    /// <summary>The file that holds the tensor (a shard, for a sharded checkpoint).</summary>
    public string FilePath { get; }

    /// <summary>The shape as it would be printed in an error message, e.g. "[96, 64]".</summary>
    public string ShapeText => FormatShape(Shape);

    /// <summary>Formats a shape as "[d0, d1, ...]".</summary>
    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {DType} {ShapeText}";
}
