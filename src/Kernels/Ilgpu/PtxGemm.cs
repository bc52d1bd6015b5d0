using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// A bf16 GEMM module written as PTX text (<see cref="WgmmaGemmPtx"/>, <see cref="MmaGemmPtx"/>; see
/// <see cref="GemmPtx"/>) loaded on a CUDA accelerator through ILGPU's driver API, launched on the accelerator's
/// default stream (so in order with ILGPU's own kernels).
/// </summary>
internal sealed class PtxGemm : IDisposable
{
    private const int MaxDynamicSharedSizeAttribute = 8; // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate CudaError FuncSetAttribute(IntPtr function, int attribute, int value);

    private readonly CudaAccelerator _acc;
    private readonly IntPtr _module;
    private readonly Dictionary<string, IntPtr> _functions = new(StringComparer.Ordinal);

    /// <summary>Tile rows per band of the blocks' order: HFT_GEMM_GROUP (1 to 1024, for tuning on a GPU machine), else <see cref="GemmPtx.Group"/>.</summary>
    public static int Group { get; } = IlgpuBackend.EnvInt("HFT_GEMM_GROUP", 1, 1024, GemmPtx.Group);
    private readonly Func<bool, bool, string> _entryOf;
    private readonly int _sharedBytes, _threads;

    private PtxGemm(CudaAccelerator acc, IntPtr module, Func<bool, bool, string> entryOf, int sharedBytes, bool tensorMaps, int threads, int tileN)
    {
        TileN = tileN;
        _threads = threads;
        _acc = acc;
        _module = module;
        _entryOf = entryOf;
        _sharedBytes = sharedBytes;
        TensorMaps = tensorMaps;
    }

    /// <summary>Whether the module's entries take the operands' tensor maps after the other parameters (<see cref="WgmmaGemmPtx.TmaModule"/>).</summary>
    public bool TensorMaps { get; }

    /// <summary>The width of the module's tiles of c (<see cref="GemmPtx.TileN"/>, or <see cref="WgmmaWsGemmPtx.NarrowTileN"/>).</summary>
    public int TileN { get; }

    /// <summary>
    /// Loads <paramref name="ptx"/> on <paramref name="acc"/> (the driver compiles it for the card) and allows its three
    /// forms' functions (named by <paramref name="entryOf"/>(transA, transB)) <paramref name="sharedBytes"/> of dynamic
    /// shared memory, launched in blocks of <paramref name="threads"/>.
    /// </summary>
    public static PtxGemm Load(CudaAccelerator acc, string what, string ptx, Func<bool, bool, string> entryOf, int sharedBytes, bool tensorMaps = false,
        int threads = GemmPtx.Threads, int tileN = GemmPtx.TileN)
    {
        acc.Bind();
        var error = CudaAPI.CurrentAPI.LoadModule(out var module, ptx, out string? log);
        if (error != CudaError.CUDA_SUCCESS)
            throw new InvalidOperationException($"the {what} module did not load on {acc.Name}: {error} {log?.TrimEnd('\0').Trim()}");
        var gemm = new PtxGemm(acc, module, entryOf, sharedBytes, tensorMaps, threads, tileN);
        try
        {
            var setAttribute = Marshal.GetDelegateForFunctionPointer<FuncSetAttribute>(
                NativeLibrary.GetExport(LoadDriver(), "cuFuncSetAttribute"));
            foreach (var (transA, transB) in new[] { (false, true), (false, false), (true, false) })
            {
                string name = entryOf(transA, transB);
                Check(CudaAPI.CurrentAPI.GetModuleFunction(out var function, module, name), "find " + name);
                Check(setAttribute(function, MaxDynamicSharedSizeAttribute, sharedBytes), $"allow {name} {sharedBytes} bytes of shared memory");
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

    /// <summary>The CUDA driver library (for the entry points ILGPU does not wrap).</summary>
    internal static IntPtr LoadDriver()
    {
        foreach (var name in new[] { "libcuda.so.1", "libcuda.so", "nvcuda.dll" })
            if (NativeLibrary.TryLoad(name, out var handle)) return handle;
        throw new InvalidOperationException("the CUDA driver library (libcuda) was not found");
    }

    private static void Check(CudaError error, string what)
    {
        if (error != CudaError.CUDA_SUCCESS) throw new InvalidOperationException($"PTX GEMM: could not {what}: {error}");
    }

    /// <summary>
    /// Queues c (+)= op(a)·op(b) on the default stream: <paramref name="grid"/> blocks over tilesM × tilesN tiles and
    /// the k slices of <paramref name="kPer"/>; slice z writes at c + z·<paramref name="slice"/> floats. The MN-major
    /// operands' descriptors take <see cref="WgmmaGemmPtx.DescriptorBits"/> with <paramref name="swappedStrides"/> (the
    /// wgmma module's; the others ignore them). A module with <see cref="TensorMaps"/> gets a's and b's
    /// (<see cref="GemmTensorMaps"/>); its k slices must then be a multiple of 64 (whole boxes), or the whole of k.
    /// <paramref name="store"/>: c written or added to in fp32, or written in bf16 (then slice counts bf16 elements).
    /// </summary>
    public unsafe void Launch(bool transA, bool transB, int grid, IntPtr c, IntPtr a, IntPtr b, int m, int n, int k, GemmStore store,
        int tilesM, int tilesN, int kPer, int slice, bool swappedStrides = false)
    {
        string entry = _entryOf(transA, transB);
        var function = _functions[entry];
        var (aLo, aHi) = WgmmaGemmPtx.DescriptorBits(kMajor: !transA, swappedStrides);
        var (bLo, bHi) = WgmmaGemmPtx.DescriptorBits(kMajor: transB, swappedStrides);
        if (TensorMaps && kPer % GemmPtx.TileK != 0 && kPer < k)
            throw new ArgumentException($"the TMA GEMM's k slices must be a multiple of {GemmPtx.TileK}, not {kPer}", nameof(kPer));
        int scalars = GemmPtx.Parameters.Length, count = scalars + (TensorMaps ? 2 : 0);
        // The scalars, then (on 64 bytes) the two 128-byte tensor maps.
        var values = Marshal.AllocHGlobal(scalars * 8 + 64 + 256);
        var pointers = Marshal.AllocHGlobal(count * IntPtr.Size);
        try
        {
            long[] args = [c.ToInt64(), a.ToInt64(), b.ToInt64(), m, n, k, (int)store, tilesM, tilesN, kPer, slice, aLo, aHi, bLo, bHi, Group];
            for (int i = 0; i < scalars; i++)
            {
                var slot = values + i * 8;
                if (i < 3) Marshal.WriteInt64(slot, args[i]);
                else Marshal.WriteInt32(slot, (int)args[i]);
                Marshal.WriteIntPtr(pointers + i * IntPtr.Size, slot);
            }
            if (TensorMaps)
            {
                byte* maps = (byte*)((values.ToInt64() + scalars * 8 + 63) & ~63L);
                var (ma, mb) = GemmTensorMaps.For(transA, transB, m, n, k, (ulong)a.ToInt64(), (ulong)b.ToInt64(), TileN);
                GemmTensorMaps.Encode(ma, maps);
                GemmTensorMaps.Encode(mb, maps + 128);
                Marshal.WriteIntPtr(pointers + scalars * IntPtr.Size, (IntPtr)maps);
                Marshal.WriteIntPtr(pointers + (scalars + 1) * IntPtr.Size, (IntPtr)(maps + 128));
            }
            _acc.Bind();
            var stream = ((CudaStream)_acc.DefaultStream).StreamPtr;
            Check(CudaAPI.CurrentAPI.LaunchKernel(function, grid, 1, 1, _threads, 1, 1, _sharedBytes,
                stream, pointers, IntPtr.Zero), "launch " + entry);
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
