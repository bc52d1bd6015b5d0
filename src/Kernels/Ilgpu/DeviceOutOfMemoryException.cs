namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The device could not allocate an arena. The message gives the bytes requested and the device's memory, and says
/// what to reduce.
/// </summary>
public sealed class DeviceOutOfMemoryException : OutOfMemoryException
{
    /// <summary>Creates the exception for a request of <paramref name="requestedBytes"/> on a device of <paramref name="deviceBytes"/>.</summary>
    public DeviceOutOfMemoryException(string device, long requestedBytes, long deviceBytes, Exception? inner = null)
        : base($"out of device memory: the arena needs {Describe(requestedBytes)} but {device} has {Describe(deviceBytes)} in all" +
               " (less is free); reduce the batch size, the sequence length or the model size", inner)
    {
        RequestedBytes = requestedBytes;
        DeviceBytes = deviceBytes;
    }

    /// <summary>Bytes the arena asked for.</summary>
    public long RequestedBytes { get; }

    /// <summary>Total memory of the device in bytes.</summary>
    public long DeviceBytes { get; }

    private static string Describe(long bytes) =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{bytes} bytes ({bytes / (1024.0 * 1024 * 1024):0.00} GiB)");
}
