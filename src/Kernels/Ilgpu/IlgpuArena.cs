using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// An arena in the memory of an ILGPU accelerator: one <see cref="MemoryBuffer1D{T, TStride}"/> of bytes allocated at
/// <see cref="DeviceArena.Commit"/> (zero-filled); tensors are typed sub-views of it.
/// </summary>
public sealed class IlgpuArena : DeviceArena
{
    private readonly IlgpuBackend _backend;
    private MemoryBuffer1D<byte, Stride1D.Dense>? _buffer;

    internal IlgpuArena(IlgpuBackend backend) : base(backend) => _backend = backend;

    /// <inheritdoc/>
    protected override void Allocate(long bytes)
    {
        var acc = _backend.Accelerator;
        if (bytes > acc.MemorySize) throw new DeviceOutOfMemoryException(_backend.DeviceName, bytes, acc.MemorySize);
        try
        {
            _buffer = acc.Allocate1D<byte>(bytes);
        }
        catch (CudaException e) when (e.Error == nameof(CudaError.CUDA_ERROR_OUT_OF_MEMORY))
        {
            throw new DeviceOutOfMemoryException(_backend.DeviceName, bytes, acc.MemorySize, e);
        }
        catch (OutOfMemoryException e) when (e is not DeviceOutOfMemoryException)
        {
            throw new DeviceOutOfMemoryException(_backend.DeviceName, bytes, acc.MemorySize, e);
        }
        _buffer.View.MemSetToZero(acc.DefaultStream);
        acc.DefaultStream.Synchronize();
    }

    /// <summary>The bytes of a tensor.</summary>
    internal ArrayView<byte> Bytes(Tensor t)
    {
        if (_buffer is null) throw new ObjectDisposedException(nameof(IlgpuArena), "arena is not committed or was disposed");
        return _buffer.View.SubView(t.ByteOffset, t.Bytes);
    }

    /// <summary>The device address of a tensor's first byte (for kernels launched through the driver API).</summary>
    internal IntPtr DeviceAddress(Tensor t)
    {
        if (_buffer is null) throw new ObjectDisposedException(nameof(IlgpuArena), "arena is not committed or was disposed");
        return _buffer.NativePtr + checked((nint)t.ByteOffset);
    }

    /// <summary>An F32 tensor as a float view.</summary>
    internal ArrayView<float> F32(Tensor t) => Bytes(t).Cast<float>();

    /// <summary>An I32 tensor as an int view.</summary>
    internal ArrayView<int> I32(Tensor t) => Bytes(t).Cast<int>();

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (_buffer is null) return;
        // After the back-end (and with it the accelerator that owns the buffer) is gone there is nothing left to free.
        if (!_backend.AcceleratorDisposed)
        {
            _backend.Accelerator.DefaultStream.Synchronize();
            _buffer.Dispose();
        }
        _buffer = null;
    }
}
