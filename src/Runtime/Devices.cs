using System.Runtime.InteropServices;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Kernels.Ilgpu;

namespace HftRuntime.Runtime;

/// <summary>Chooses and creates the back-end for a <c>--device</c> value.</summary>
public static class Devices
{
    /// <summary>The accepted <c>--device</c> values.</summary>
    public static readonly string[] Names = ["auto", "cpu", "cuda", "ilgpu-cpu"];

    /// <summary>
    /// Creates the back-end named <paramref name="device"/>: "cpu" is the SIMD CPU back-end; "cuda" the ILGPU kernels
    /// on the first CUDA GPU (an <see cref="ArgumentException"/> saying "no CUDA device found" when there is none);
    /// "ilgpu-cpu" the same kernels on ILGPU's CPU accelerator (slow; for testing kernel code without a GPU);
    /// "auto" the CUDA GPU when there is one, else the CPU back-end. <paramref name="threads"/> sets the CPU thread
    /// count (0: all cores or HFT_THREADS). The ILGPU back-ends own their context and accelerator.
    /// </summary>
    public static Backend Create(string device, int threads = 0) => device switch
    {
        "cpu" => new CpuBackend(threads),
        "auto" => (Backend?)IlgpuBackend.TryCreateCuda() ?? new CpuBackend(threads),
        "cuda" => IlgpuBackend.TryCreateCuda() ?? throw new ArgumentException(NoCudaMessage()),
        "ilgpu-cpu" => IlgpuBackend.CreateCpu(),
        _ => throw new ArgumentException($"unknown device '{device}'; expected one of: {string.Join(", ", Names)}", nameof(device)),
    };

    private static string NoCudaMessage()
    {
        string why;
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows())
            why = "CUDA needs Linux or Windows";
        else if (!DriverLoads())
            why = "the NVIDIA driver library (libcuda.so.1 or nvcuda.dll) could not be loaded, so this machine has no NVIDIA driver";
        else
            why = "the NVIDIA driver loaded but reports no usable GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
        return $"no CUDA device found: {why}; use --device cpu, or ilgpu-cpu to run the GPU kernels on the CPU";
    }

    private static bool DriverLoads()
    {
        foreach (var name in OperatingSystem.IsWindows() ? new[] { "nvcuda.dll" } : ["libcuda.so.1", "libcuda.so"])
        {
            if (NativeLibrary.TryLoad(name, out var handle))
            {
                NativeLibrary.Free(handle);
                return true;
            }
        }
        return false;
    }
}
