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

    /// <summary>Per parameter of the entries (<see cref="ParameterNames"/>), whether it is a 64-bit address.</summary>
    private readonly bool[] _isPointer;

    private PtxGemm(CudaAccelerator acc, IntPtr module, Func<bool, bool, string> entryOf, int sharedBytes, bool tensorMaps, int threads, int tileN, int maxParts)
    {
        TileN = tileN;
        MaxParts = maxParts;
        _isPointer = [.. ParameterNames(tensorMaps, maxParts).Select(IsPointer)];
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
    /// The most products one launch sums: 1, or <see cref="WgmmaWsGemmPtx.MaxParts"/> for a module whose entries take
    /// <see cref="WgmmaWsGemmPtx.PartStarts"/> and the parts' tensor maps (<see cref="WgmmaWsGemmPtx.TensorMaps"/>).
    /// </summary>
    public int MaxParts { get; }

    /// <summary>
    /// Loads <paramref name="ptx"/> on <paramref name="acc"/> (the driver compiles it for the card) and allows its three
    /// forms' functions (named by <paramref name="entryOf"/>(transA, transB)) <paramref name="sharedBytes"/> of dynamic
    /// shared memory, launched in blocks of <paramref name="threads"/>.
    /// </summary>
    public static PtxGemm Load(CudaAccelerator acc, string what, string ptx, Func<bool, bool, string> entryOf, int sharedBytes, bool tensorMaps = false,
        int threads = GemmPtx.Threads, int tileN = GemmPtx.TileN, int maxParts = 1)
    {
        acc.Bind();
        var error = CudaAPI.CurrentAPI.LoadModule(out var module, ptx, out string? log);
        if (error != CudaError.CUDA_SUCCESS)
            throw new InvalidOperationException($"the {what} module did not load on {acc.Name}: {error} {log?.TrimEnd('\0').Trim()}");
        var gemm = new PtxGemm(acc, module, entryOf, sharedBytes, tensorMaps, threads, tileN, maxParts);
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
    /// <paramref name="more"/> (a module with <see cref="MaxParts"/> above 1): further products summed into the same
    /// tile, k then being the parts' k together (a and b the first part's, of k less the others'; every part but the
    /// last of a multiple of 64). <paramref name="swiGlu"/> (with <see cref="GemmStore.SwiGlu"/>): the NT product of
    /// a = x [m, k] with b = W_gate [n/2, k] and W_up, gate to c, up and h to its outputs (see <see cref="WgmmaWsGemmPtx.SwiGluOutputs"/>).
    /// <paramref name="rope"/> (with <see cref="GemmStore.WriteBf16Rope"/>): the tables c's heads are rotated by.
    /// </summary>
    public unsafe void Launch(bool transA, bool transB, int grid, IntPtr c, IntPtr a, IntPtr b, int m, int n, int k, GemmStore store,
        int tilesM, int tilesN, int kPer, int slice, bool swappedStrides = false, GemmPart[]? more = null, GemmSwiGlu? swiGlu = null, GemmRope? rope = null)
    {
        string entry = _entryOf(transA, transB);
        var function = _functions[entry];
        var (scalars, maps) = Arguments(new GemmLaunchShape(transA, transB, m, n, k, store, tilesM, tilesN, kPer, slice, swappedStrides, Group),
            (ulong)c.ToInt64(), GemmPart.Split(a, b, k, more ?? []), TensorMaps, MaxParts, TileN, swiGlu, rope);
        int count = scalars.Length + maps.Length;
        // The scalars, then (on 64 bytes) the 128-byte tensor maps.
        var values = Marshal.AllocHGlobal(scalars.Length * 8 + 64 + 128 * maps.Length);
        var pointers = Marshal.AllocHGlobal(count * IntPtr.Size);
        try
        {
            for (int i = 0; i < scalars.Length; i++)
            {
                var slot = values + i * 8;
                if (_isPointer[i]) Marshal.WriteInt64(slot, (long)scalars[i]);
                else Marshal.WriteInt32(slot, (int)(uint)scalars[i]);
                Marshal.WriteIntPtr(pointers + i * IntPtr.Size, slot);
            }
            byte* at = (byte*)((values.ToInt64() + scalars.Length * 8 + 63) & ~63L);
            for (int i = 0; i < maps.Length; i++)
            {
                // A map equal to an earlier one (a part the launch does not have) is that one's bytes.
                int same = Array.IndexOf(maps, maps[i]);
                if (same < i) Buffer.MemoryCopy(at + 128 * same, at + 128 * i, 128, 128);
                else GemmTensorMaps.Encode(maps[i], at + 128 * i);
                Marshal.WriteIntPtr(pointers + (scalars.Length + i) * IntPtr.Size, (IntPtr)(at + 128 * i));
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

    /// <summary>The entries' parameter names in order, for a module with or without tensor maps that sums at most <paramref name="maxParts"/> products.</summary>
    internal static string[] ParameterNames(bool tensorMaps, int maxParts) =>
        [.. GemmPtx.Parameters, .. maxParts > 1 ? WgmmaWsGemmPtx.Scalars : [], .. maxParts > 1 ? WgmmaWsGemmPtx.Pointers : [],
            .. !tensorMaps ? [] : maxParts > 1 ? WgmmaWsGemmPtx.TensorMaps : [WgmmaGemmPtx.TensorMapA, WgmmaGemmPtx.TensorMapB]];

    /// <summary>Whether a scalar parameter of <see cref="ParameterNames"/> is a 64-bit address (c, a, b, <see cref="WgmmaWsGemmPtx.Pointers"/>); the others are u32.</summary>
    internal static bool IsPointer(string name) =>
        Array.IndexOf(GemmPtx.Parameters, name) is int i && i >= 0 ? GemmPtx.IsPointerParameter(i) : WgmmaWsGemmPtx.Pointers.Contains(name);

    /// <summary>
    /// A launch's arguments in the entries' parameter order: the scalars (<see cref="GemmPtx.Parameters"/>, then with
    /// <paramref name="maxParts"/> above 1 <see cref="WgmmaWsGemmPtx.PartStarts"/>; the first three are addresses) and,
    /// with <paramref name="tensorMaps"/>, a's and b's map of each part (a part the launch does not have gets the first
    /// part's, never read). What <see cref="Launch"/> passes, and what the tests give the PTX interpreter.
    /// </summary>
    internal static (ulong[] Scalars, TensorMapSpec[] Maps) Arguments(GemmLaunchShape s, ulong c, GemmPart[] parts, bool tensorMaps, int maxParts, int tileN,
        GemmSwiGlu? swiGlu = null, GemmRope? rope = null)
    {
        if ((s.Store == GemmStore.WriteBf16Rope) != rope.HasValue || (rope.HasValue && (maxParts == 1 || s.N % 64 != 0)))
            throw new ArgumentException("a RoPE launch needs the warp-specialized module, n a multiple of 64 (heads of 64) and its tables");
        if (parts.Length > maxParts)
            throw new ArgumentException($"this GEMM module sums at most {maxParts} products, not {parts.Length}", nameof(parts));
        if ((s.Store == GemmStore.SwiGlu) != swiGlu.HasValue || (swiGlu.HasValue && (maxParts == 1 || !tensorMaps || parts.Length > 1 || s.TransA || !s.TransB
            || s.N % tileN != 0)))
            throw new ArgumentException("a SwiGLU launch needs the warp-specialized module, the NT form, one part, n a multiple of the tile's width and its outputs");
        if (tensorMaps && s.KPer % GemmPtx.TileK != 0 && s.KPer < s.K)
            throw new ArgumentException($"the TMA GEMM's k slices must be a multiple of {GemmPtx.TileK}, not {s.KPer}", nameof(s));
        var (aLo, aHi) = WgmmaGemmPtx.DescriptorBits(kMajor: !s.TransA, s.Swapped);
        var (bLo, bHi) = WgmmaGemmPtx.DescriptorBits(kMajor: s.TransB, s.Swapped);
        var scalars = new List<ulong>
        {
            c, (ulong)parts[0].A.ToInt64(), (ulong)parts[0].B.ToInt64(), (uint)s.M, (uint)s.N, (uint)s.K, (uint)s.Store, (uint)s.TilesM, (uint)s.TilesN,
            (uint)s.KPer, (uint)s.Slice, aLo, aHi, bLo, bHi, (uint)s.Group,
        };
        if (maxParts > 1)
        {
            // In the order of WgmmaWsGemmPtx.Scalars, then of its Pointers.
            for (int i = 1; i <= WgmmaWsGemmPtx.PartStarts.Length; i++) scalars.Add(PartStart(parts, i));
            scalars.Add((uint)(rope?.MaxPositions ?? 0));
            scalars.Add((ulong)(swiGlu?.Up.ToInt64() ?? 0));
            scalars.Add((ulong)(swiGlu?.H.ToInt64() ?? 0));
            scalars.Add((ulong)(rope?.Positions.ToInt64() ?? 0));
            scalars.Add((ulong)(rope?.Cos.ToInt64() ?? 0));
            scalars.Add((ulong)(rope?.Sin.ToInt64() ?? 0));
        }
        var maps = new List<TensorMapSpec>();
        if (tensorMaps)
            for (int p = 0; p < maxParts; p++)
            {
                var part = parts[p < parts.Length ? p : 0];
                var (ma, mb) = GemmTensorMaps.For(s.TransA, s.TransB, s.M, s.N, part.K, (ulong)part.A.ToInt64(), (ulong)part.B.ToInt64(), tileN);
                if (swiGlu is { } sw && p < 2)
                {
                    // W_gate's and W_up's maps ([f, k], f = n / 2) in boxes of half a tile's rows; a is part 0's.
                    var weight = p == 0 ? part.B : sw.WUp;
                    mb = GemmTensorMaps.For(false, true, s.M, s.N / 2, part.K, (ulong)part.A.ToInt64(), (ulong)weight.ToInt64(), tileN / 2).B;
                }
                maps.Add(ma);
                maps.Add(mb);
            }
        return ([.. scalars], [.. maps]);
    }

    /// <summary>Where part <paramref name="index"/> starts in the concatenated k (<see cref="WgmmaWsGemmPtx.NoPart"/> past the last).</summary>
    internal static uint PartStart(GemmPart[] parts, int index) =>
        index < parts.Length ? (uint)parts.Take(index).Sum(p => p.K) : WgmmaWsGemmPtx.NoPart;

    public void Dispose()
    {
        if (_module == IntPtr.Zero) return;
        _acc.Bind();
        CudaAPI.CurrentAPI.DestroyModule(_module);
    }
}

/// <summary>One product of a summed launch (<see cref="PtxGemm.Launch"/>): a and b's device addresses and its k.</summary>
internal readonly record struct GemmPart(IntPtr A, IntPtr B, int K)
{
    /// <summary>
    /// The parts of a launch over k in all whose first part is a and b and whose others are <paramref name="more"/>:
    /// the first part's k is what the others leave, and every part but the last a multiple of 64 (whole k steps).
    /// </summary>
    public static GemmPart[] Split(IntPtr a, IntPtr b, int k, GemmPart[] more)
    {
        int first = k - more.Sum(p => p.K);
        var parts = new[] { new GemmPart(a, b, first) }.Concat(more).ToArray();
        for (int i = 0; i < parts.Length; i++)
            if (parts[i].K <= 0 || (i < parts.Length - 1 && parts[i].K % GemmPtx.TileK != 0))
                throw new ArgumentException($"part {i} of a summed GEMM has k = {parts[i].K}: each must be positive, and all but the last a multiple of {GemmPtx.TileK}");
        return parts;
    }

    /// <summary>
    /// k from <paramref name="from"/> to from + <paramref name="count"/> of an operand of <paramref name="other"/> × k
    /// elements (the other dimension m or n), as a tensor of its own: columns of a k-contiguous one ([other, k]), rows of
    /// the other ([k, other]).
    /// </summary>
    public static ushort[] CutK(ushort[] x, int other, int k, bool kContiguous, int from, int count)
    {
        var cut = new ushort[other * count];
        if (kContiguous)
            for (int r = 0; r < other; r++) Array.Copy(x, r * k + from, cut, r * count, count);
        else Array.Copy(x, from * other, cut, 0, count * other);
        return cut;
    }
}

/// <summary>
/// What a PTX GEMM launch computes besides its tensors (see <see cref="PtxGemm.Launch"/>): the form, the sizes (k of all
/// parts together), c's store, the tiles, the k slice, the slices' distance in c, the MN-major descriptors' byte
/// offsets exchanged or not, and the tile rows per band of the blocks' order.
/// </summary>
internal readonly record struct GemmLaunchShape(bool TransA, bool TransB, int M, int N, int K, GemmStore Store, int TilesM, int TilesN, int KPer, int Slice,
    bool Swapped, int Group);

/// <summary>The rest of a <see cref="GemmStore.SwiGlu"/> launch: where up and h go, and W_up's device address (W_gate is b).</summary>
internal readonly record struct GemmSwiGlu(IntPtr Up, IntPtr H, IntPtr WUp);

/// <summary>The tables of a <see cref="GemmStore.WriteBf16Rope"/> launch: positions (i32 per row), cos and sin ([maxPositions, 32] f32).</summary>
internal readonly record struct GemmRope(IntPtr Positions, IntPtr Cos, IntPtr Sin, int MaxPositions);
