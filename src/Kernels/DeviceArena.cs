namespace HftRuntime.Kernels;

/// <summary>
/// One block of device memory for a run. Tensors are reserved first (a bump allocator that only counts), then
/// <see cref="Commit"/> allocates the whole block once, zero-filled. Nothing is allocated or freed afterwards.
/// </summary>
public abstract class DeviceArena : IDisposable
{
    /// <summary>Alignment of every reserved tensor, in bytes (covers AVX-512 lines and GPU coalescing).</summary>
    public const int Alignment = 256;

    private long _reserved;
    private readonly List<(string Name, long Bytes)> _reservations = new();

    /// <summary>Creates an arena for <paramref name="backend"/>.</summary>
    protected DeviceArena(Backend backend) => Backend = backend;

    /// <summary>The back-end whose memory this is.</summary>
    public Backend Backend { get; }

    /// <summary>Bytes reserved so far (the size <see cref="Commit"/> allocates).</summary>
    public long ReservedBytes => _reserved;

    /// <summary>True once the memory exists.</summary>
    public bool IsCommitted { get; private set; }

    /// <summary>Every reservation, in order, for memory reports.</summary>
    public IReadOnlyList<(string Name, long Bytes)> Reservations => _reservations;

    /// <summary>Reserves a tensor of <paramref name="count"/> elements.</summary>
    public Tensor Reserve(string name, long count, DType type = DType.F32)
    {
        if (IsCommitted) throw new InvalidOperationException($"arena already committed; cannot reserve '{name}'");
        if (count < 0 || count > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(count), $"tensor '{name}' has {count} elements; 0 to {int.MaxValue} are supported");
        long offset = _reserved;
        long bytes = count * type.Size();
        _reserved = offset + (bytes + Alignment - 1) / Alignment * Alignment;
        _reservations.Add((name, bytes));
        return new Tensor(this, offset, (int)count, type, name);
    }

    /// <summary>Allocates the reserved bytes (zero-filled).</summary>
    public void Commit()
    {
        if (IsCommitted) throw new InvalidOperationException("arena already committed");
        Allocate(Math.Max(_reserved, Alignment));
        IsCommitted = true;
    }

    /// <summary>Allocates <paramref name="bytes"/> zeroed bytes of device memory.</summary>
    protected abstract void Allocate(long bytes);

    /// <summary>Frees the memory.</summary>
    public abstract void Dispose();
}
