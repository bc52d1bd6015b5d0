using System.Runtime.InteropServices;

namespace HftRuntime.Kernels.Cpu;

/// <summary>An arena in native host memory (aligned, zero-filled), for the CPU back-end.</summary>
public sealed unsafe class CpuArena : DeviceArena
{
    private byte* _base;
    private long _bytes;

    internal CpuArena(CpuBackend backend) : base(backend) { }

    /// <inheritdoc/>
    protected override void Allocate(long bytes)
    {
        _base = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, Alignment);
        if (_base == null) throw new OutOfMemoryException($"could not allocate {bytes} bytes of host memory for the arena");
        NativeMemory.Clear(_base, (nuint)bytes);
        _bytes = bytes;
        GC.AddMemoryPressure(bytes);
    }

    /// <summary>Address of a tensor's first element.</summary>
    public byte* Address(Tensor t)
    {
        if (_base == null) throw new ObjectDisposedException(nameof(CpuArena), "arena is not committed or was disposed");
        return _base + t.ByteOffset;
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (_base == null) return;
        NativeMemory.AlignedFree(_base);
        GC.RemoveMemoryPressure(_bytes);
        _base = null;
    }
}
