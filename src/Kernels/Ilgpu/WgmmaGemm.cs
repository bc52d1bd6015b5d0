using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The wgmma bf16 GEMM (<see cref="WgmmaGemmPtx"/>) loaded on a CUDA accelerator of compute capability 9.0 through
/// ILGPU's driver API, launched on the accelerator's default stream (so in order with ILGPU's own kernels).
/// </summary>
internal sealed class WgmmaGemm : IDisposable
{
    private const int MaxDynamicSharedSizeAttribute = 8; // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate CudaError FuncSetAttribute(IntPtr function, int attribute, int value);

    private readonly CudaAccelerator _acc;
    private readonly IntPtr _module;
    private readonly Dictionary<string, IntPtr> _functions = new(StringComparer.Ordinal);

    private WgmmaGemm(CudaAccelerator acc, IntPtr module)
    {
        _acc = acc;
        _module = module;
    }

    /// <summary>Whether the module can run on <paramref name="acc"/>: CUDA, compute capability 9.0 (sm_90a code runs there only).</summary>
    public static bool Supports(Accelerator acc) => acc is CudaAccelerator cuda && cuda.Architecture.Major == 9 && cuda.Architecture.Minor == 0;

    /// <summary>Loads the module on <paramref name="acc"/> and allows its functions their dynamic shared memory.</summary>
    public static WgmmaGemm Load(CudaAccelerator acc)
    {
        acc.Bind();
        var error = CudaAPI.CurrentAPI.LoadModule(out var module, WgmmaGemmPtx.Module, out string? log);
        if (error != CudaError.CUDA_SUCCESS)
            throw new InvalidOperationException($"the wgmma GEMM module did not load on {acc.Name}: {error} {log?.TrimEnd('\0').Trim()}");
        var gemm = new WgmmaGemm(acc, module);
        try
        {
            var setAttribute = Marshal.GetDelegateForFunctionPointer<FuncSetAttribute>(
                NativeLibrary.GetExport(LoadDriver(), "cuFuncSetAttribute"));
            foreach (var name in new[] { WgmmaGemmPtx.EntryNT, WgmmaGemmPtx.EntryNN, WgmmaGemmPtx.EntryTN })
            {
                Check(CudaAPI.CurrentAPI.GetModuleFunction(out var function, module, name), "find " + name);
                Check(setAttribute(function, MaxDynamicSharedSizeAttribute, WgmmaGemmPtx.SharedBytes), $"allow {name} {WgmmaGemmPtx.SharedBytes} bytes of shared memory");
                gemm._functions[name] = function;
            }
            return gemm;
        }
        catch
        {
            gemm.Dispose();
            throw;
        }
    }

    private static IntPtr LoadDriver()
    {
        foreach (var name in new[] { "libcuda.so.1", "libcuda.so", "nvcuda.dll" })
            if (NativeLibrary.TryLoad(name, out var handle)) return handle;
        throw new InvalidOperationException("the CUDA driver library (libcuda) was not found");
    }

    private static void Check(CudaError error, string what)
    {
        if (error != CudaError.CUDA_SUCCESS) throw new InvalidOperationException($"wgmma GEMM: could not {what}: {error}");
    }

    /// <summary>
    /// Queues c (+)= op(a)·op(b) on the default stream: <paramref name="grid"/> blocks over tilesM × tilesN tiles and
    /// the k slices of <paramref name="kPer"/>; slice z writes at c + z·<paramref name="slice"/> floats. The MN-major
    /// operands' descriptors take <see cref="WgmmaGemmPtx.DescriptorBits"/> with <paramref name="swappedStrides"/>.
    /// </summary>
    public void Launch(bool transA, bool transB, int grid, IntPtr c, IntPtr a, IntPtr b, int m, int n, int k, bool accumulate,
        int tilesM, int tilesN, int kPer, int slice, bool swappedStrides = false)
    {
        var function = _functions[WgmmaGemmPtx.EntryOf(transA, transB)];
        var (aLo, aHi) = WgmmaGemmPtx.DescriptorBits(kMajor: !transA, swappedStrides);
        var (bLo, bHi) = WgmmaGemmPtx.DescriptorBits(kMajor: transB, swappedStrides);
        int count = WgmmaGemmPtx.Parameters.Length;
        var values = Marshal.AllocHGlobal(count * 8);
        var pointers = Marshal.AllocHGlobal(count * IntPtr.Size);
        try
        {
            long[] args = [c.ToInt64(), a.ToInt64(), b.ToInt64(), m, n, k, accumulate ? 1 : 0, tilesM, tilesN, kPer, slice, aLo, aHi, bLo, bHi, WgmmaGemmPtx.Group];
            for (int i = 0; i < count; i++)
            {
                var slot = values + i * 8;
                if (i < 3) Marshal.WriteInt64(slot, args[i]);
                else Marshal.WriteInt32(slot, (int)args[i]);
                Marshal.WriteIntPtr(pointers + i * IntPtr.Size, slot);
            }
            _acc.Bind();
            var stream = ((CudaStream)_acc.DefaultStream).StreamPtr;
            Check(CudaAPI.CurrentAPI.LaunchKernel(function, grid, 1, 1, WgmmaGemmPtx.Threads, 1, 1, WgmmaGemmPtx.SharedBytes,
                stream, pointers, IntPtr.Zero), "launch " + WgmmaGemmPtx.EntryOf(transA, transB));
        }
        finally
        {
            Marshal.FreeHGlobal(values);
            Marshal.FreeHGlobal(pointers);
        }
    }

    public void Dispose()
    {
        if (_module == IntPtr.Zero) return;
        _acc.Bind();
        CudaAPI.CurrentAPI.DestroyModule(_module);
    }
}
