namespace HftRuntime.Kernels;

/// <summary>Element types that a <see cref="Tensor"/> can hold.</summary>
public enum DType : byte
{
    /// <summary>32-bit IEEE float.</summary>
    F32 = 0,
    /// <summary>32-bit signed integer (token ids, labels, positions, tables).</summary>
    I32 = 1,
    /// <summary>bfloat16 stored as its 16 raw bits.</summary>
    BF16 = 2,
}

/// <summary>Sizes of <see cref="DType"/> values.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType type) => type switch
    {
        DType.F32 or DType.I32 => 4,
        DType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown dtype"),
    };
}

/// <summary>
/// A typed, one-dimensional window into a <see cref="DeviceArena"/>. Cheap to copy, owns nothing; shapes are
/// given to each operation explicitly. The default value is the empty tensor ("not present").
/// </summary>
public readonly struct Tensor
{
    /// <summary>Creates a view; arenas call this, user code reserves tensors from an arena.</summary>
    internal Tensor(DeviceArena arena, long byteOffset, int count, DType type, string name)
    {
        Arena = arena;
        ByteOffset = byteOffset;
        Count = count;
        Type = type;
        Name = name;
    }

    /// <summary>The arena that holds the data; null for the empty tensor.</summary>
    public DeviceArena? Arena { get; }

    /// <summary>Offset of the first element from the start of the arena, in bytes.</summary>
    public long ByteOffset { get; }

    /// <summary>Number of elements.</summary>
    public int Count { get; }

    /// <summary>Element type.</summary>
    public DType Type { get; }

    /// <summary>A name for error messages.</summary>
    public string Name { get; }

    /// <summary>True for the default (absent) tensor.</summary>
    public bool IsEmpty => Arena is null;

    /// <summary>Bytes covered by this view.</summary>
    public long Bytes => (long)Count * Type.Size();

    /// <summary>A sub-view of <paramref name="count"/> elements starting at element <paramref name="start"/>.</summary>
    public Tensor Slice(long start, int count)
    {
        if (Arena is null) throw new InvalidOperationException("cannot slice the empty tensor");
        if (start < 0 || count < 0 || start + count > Count)
            throw new ArgumentOutOfRangeException(nameof(start), $"slice [{start}, {start + count}) is outside tensor '{Name}' of {Count} elements");
        return new Tensor(Arena, ByteOffset + start * Type.Size(), count, Type, Name);
    }

    /// <summary>The same bytes seen as another element type of the same size.</summary>
    public Tensor As(DType type)
    {
        if (Arena is null) throw new InvalidOperationException("cannot reinterpret the empty tensor");
        if (type.Size() != Type.Size()) throw new ArgumentException($"cannot view '{Name}' ({Type}) as {type}: sizes differ");
        return new Tensor(Arena, ByteOffset, Count, type, Name);
    }

    /// <inheritdoc/>
    public override string ToString() => IsEmpty ? "<empty>" : $"{Name}[{Count} x {Type}]";
}
