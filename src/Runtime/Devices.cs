using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;

namespace HftRuntime.Runtime;

/// <summary>Chooses and creates the back-end for a <c>--device</c> value.</summary>
public static class Devices
{
    /// <summary>The accepted <c>--device</c> values.</summary>
    public static readonly string[] Names = ["auto", "cpu"];

    /// <summary>
    /// Creates the back-end named <paramref name="device"/>: "cpu" is the SIMD CPU back-end; "auto" picks the best
    /// available device. <paramref name="threads"/> sets the CPU thread count (0: all cores or HFT_THREADS).
    /// </summary>
    public static Backend Create(string device, int threads = 0) => device switch
    {
        "auto" or "cpu" => new CpuBackend(threads),
        _ => throw new ArgumentException($"unknown device '{device}'; expected one of: {string.Join(", ", Names)}", nameof(device)),
    };
}
