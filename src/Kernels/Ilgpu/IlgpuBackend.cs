using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The GPU back-end: every operation is an ILGPU kernel (one file per operation family, forward and backward side by
/// side), compiled once in the constructor and launched on the accelerator's default stream. On a CUDA accelerator it
/// is the "cuda" back-end; on ILGPU's CPU accelerator ("ilgpu-cpu") the same kernels run as simulated GPU threads,
/// slowly, which is how they are tested without a GPU. Operations are asynchronous: downloads and
/// <see cref="Synchronize"/> wait for them. No operation allocates, except that the one scratch buffer grows the
/// first time an operation needs more of it.
/// </summary>
/// <remarks>
/// Kernels are explicitly grouped with <see cref="GroupSize"/> threads and loop over their work (rows, tiles,
/// elements) with a grid stride, so the number of groups is a launch choice: as many as the work has on a GPU,
/// a single group on the CPU accelerator (whose cost is per group and per barrier). The accelerator must have a warp
/// size of 32 and allow groups of 256 threads (every CUDA device; <see cref="CpuDevice"/> for the CPU accelerator).
/// </remarks>
public sealed partial class IlgpuBackend : Backend
{
    /// <summary>Threads per group of every kernel.</summary>
    public const int GroupSize = 256;

    /// <summary>Warp size the kernels are written for.</summary>
    public const int WarpSize = 32;

    /// <summary>Warps per group.</summary>
    public const int WarpsPerGroup = GroupSize / WarpSize;

    /// <summary>Shared memory one group may use (the CUDA limit without opt-in), in bytes.</summary>
    public const int SharedMemoryBudget = 48 * 1024;

    private readonly Accelerator _acc;
    private readonly bool _ownsAccelerator;
    private readonly bool _isCpu;
    private readonly int _streamGroups;
    private readonly int _tileGroups;
    private readonly List<MethodInfo> _kernels = new();
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _dummy;
    private MemoryBuffer1D<float, Stride1D.Dense>? _scratch;
    private bool _disposed;

    /// <summary>
    /// The simulated device the "ilgpu-cpu" back-end runs on: one multiprocessor (launch and barrier costs grow with
    /// every simulated thread), warps of 32, 8 warps per group.
    /// </summary>
    public static CPUDevice CpuDevice { get; } = new(numThreadsPerWarp: WarpSize, numWarpsPerMultiprocessor: WarpsPerGroup, numMultiprocessors: 1);

    /// <summary>
    /// Creates the back-end on <paramref name="accelerator"/> and compiles every kernel for it. With
    /// <paramref name="ownsAccelerator"/>, disposing the back-end disposes the accelerator and its context.
    /// </summary>
    public IlgpuBackend(Accelerator accelerator, bool ownsAccelerator = false)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        if (accelerator.WarpSize != WarpSize)
            throw new ArgumentException($"the ILGPU kernels need a warp size of {WarpSize}; accelerator '{accelerator.Name}' has {accelerator.WarpSize}", nameof(accelerator));
        if (accelerator.MaxNumThreadsPerGroup < GroupSize)
            throw new ArgumentException($"the ILGPU kernels need groups of {GroupSize} threads; accelerator '{accelerator.Name}' allows {accelerator.MaxNumThreadsPerGroup}", nameof(accelerator));
        _acc = accelerator;
        _ownsAccelerator = ownsAccelerator;
        var arch = (accelerator as CudaAccelerator)?.Architecture;
        Bf16GemmVariant = Bf16GemmVariantFor(Environment.GetEnvironmentVariable("HFT_BF16_GEMM"), arch is not null, arch?.Major ?? 0, arch?.Minor ?? 0);
        _isCpu = accelerator.AcceleratorType == AcceleratorType.CPU;
        Name = accelerator.AcceleratorType switch
        {
            AcceleratorType.Cuda => "cuda",
            AcceleratorType.CPU => "ilgpu-cpu",
            var t => "ilgpu-" + t.ToString().ToLowerInvariant(),
        };
        DeviceName = _isCpu
            ? $"ILGPU {accelerator.Name} (simulated GPU: warp {accelerator.WarpSize}, {accelerator.MaxNumThreadsPerGroup} threads per group)"
            : accelerator.Name;
        _streamGroups = _isCpu ? 1 : Math.Max(1, accelerator.NumMultiprocessors) * 8;
        _tileGroups = _isCpu ? 1 : int.MaxValue;
        _dummy = accelerator.Allocate1D<int>(16);
        _dummy.View.MemSetToZero(accelerator.DefaultStream);
        LoadKernels();
        accelerator.DefaultStream.Synchronize();
    }

    /// <summary>
    /// Creates an ILGPU context with the settings every kernel of this back-end is compiled with (ILGPU.Algorithms
    /// enabled for the math intrinsics; optimisation level <see cref="OptimizationLevel"/>), for the devices that
    /// <paramref name="devices"/> registers.
    /// </summary>
    public static Context CreateContext(Action<Context.Builder> devices) => CreateContext(devices, OptimizationLevel);

    /// <summary>As <see cref="CreateContext(Action{Context.Builder})"/> with an explicit optimisation level.</summary>
    public static Context CreateContext(Action<Context.Builder> devices, OptimizationLevel level)
    {
        ArgumentNullException.ThrowIfNull(devices);
        EnsureCudaLibraryResolver();
        return Context.Create(b =>
        {
            devices(b);
            b.EnableAlgorithms().Optimize(level);
        });
    }

    /// <summary>
    /// ILGPU's optimisation level for the kernels: O2 (global address spaces inferred for kernel parameters) unless
    /// the environment variable HFT_ILGPU_OPT says O0 or O1, a switch for a GPU machine that has no SDK to rebuild with.
    /// </summary>
    public static OptimizationLevel OptimizationLevel =>
        Environment.GetEnvironmentVariable("HFT_ILGPU_OPT")?.Trim().ToUpperInvariant() switch
        {
            "O0" => OptimizationLevel.O0,
            "O1" => OptimizationLevel.O1,
            _ => OptimizationLevel.O2,
        };

    /// <summary>The back-end on ILGPU's CPU accelerator (<see cref="CpuDevice"/>), owning its context.</summary>
    public static IlgpuBackend CreateCpu()
    {
        var context = CreateContext(b => b.CPU(CpuDevice));
        try
        {
            var accelerator = context.GetCPUDevice(0).CreateCPUAccelerator(context, CPUAcceleratorMode.Parallel);
            return new IlgpuBackend(accelerator, ownsAccelerator: true);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The back-end on CUDA device <paramref name="index"/>, owning its context; null when there is no CUDA device
    /// (no driver, or no GPU).
    /// </summary>
    public static IlgpuBackend? TryCreateCuda(int index = 0)
    {
        var context = CreateContext(b => b.Cuda());
        try
        {
            var devices = context.GetCudaDevices();
            if (devices.Count <= index)
            {
                context.Dispose();
                return null;
            }
            var accelerator = devices[index].CreateCudaAccelerator(context);
            return new IlgpuBackend(accelerator, ownsAccelerator: true);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    private static int _resolverSet;

    /// <summary>
    /// ILGPU imports the CUDA driver as "cuda"; on Linux machines that only have <c>libcuda.so.1</c> (the driver
    /// without the development symlink) the default probing misses it, so this resolver tries that name too.
    /// </summary>
    private static void EnsureCudaLibraryResolver()
    {
        if (Interlocked.Exchange(ref _resolverSet, 1) != 0) return;
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, (name, assembly, path) =>
            {
                if (name != "cuda" || !OperatingSystem.IsLinux()) return IntPtr.Zero;
                foreach (var candidate in new[] { "libcuda.so", "libcuda.so.1" })
                    if (NativeLibrary.TryLoad(candidate, assembly, path, out var handle)) return handle;
                return IntPtr.Zero;
            });
        }
        catch (InvalidOperationException)
        {
            // Someone else set a resolver for ILGPU already: keep theirs.
        }
    }

    /// <summary>True once <see cref="Dispose"/> disposed the accelerator this back-end owned (and every buffer with it).</summary>
    internal bool AcceleratorDisposed => _disposed && _ownsAccelerator;

    /// <summary>The accelerator the kernels run on.</summary>
    public Accelerator Accelerator => _acc;

    /// <inheritdoc/>
    public override string Name { get; }

    /// <inheritdoc/>
    public override string DeviceName { get; }

    /// <summary>The kernel methods loaded by this back-end, in load order (the PTX test checks them against the attribute).</summary>
    internal IReadOnlyList<MethodInfo> LoadedKernels => _kernels;

    /// <inheritdoc/>
    public override DeviceArena CreateArena() => new IlgpuArena(this);

    /// <inheritdoc/>
    public override long MemoryBytes => _acc.MemorySize;

    /// <inheritdoc/>
    public override void Synchronize() => _acc.DefaultStream.Synchronize();

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _acc.DefaultStream.Synchronize();
        _scratch?.Dispose();
        _stagingArena?.Dispose();
        _dummy.Dispose();
        foreach (var slot in new[] { _wgmmaSlot, _mmaSlot, _wgmmaTmaSlot, _wgmmaWsSlot, _wgmmaWsNarrowSlot }) slot.Gemm?.Dispose();
        if (_ownsAccelerator)
        {
            var context = _acc.Context;
            _acc.Dispose();
            context.Dispose();
        }
    }

    // ------------------------------------------------------------------ transfers

    /// <inheritdoc/>
    /// <remarks>
    /// The host memory is pinned for the copy: ILGPU takes a managed reference and hands its address to the driver,
    /// and a garbage collection moving the array meanwhile would copy the wrong bytes. (A copy from pageable memory
    /// has read its source when the call returns.)
    /// </remarks>
    protected override unsafe void UploadCore(Tensor dst, ReadOnlySpan<byte> src)
    {
        if (src.Length == 0) return;
        _acc.Bind();
        fixed (byte* p = src)
            Arena(dst).Bytes(dst).SubView(0, src.Length).CopyFromCPU(_acc.DefaultStream, ref *p, src.Length);
    }

    /// <inheritdoc/>
    /// <remarks>Pinned like <see cref="UploadCore"/>, and complete before it returns.</remarks>
    protected override unsafe void DownloadCore(Tensor src, Span<byte> dst)
    {
        if (dst.Length == 0) { Synchronize(); return; }
        _acc.Bind();
        fixed (byte* p = dst)
        {
            Arena(src).Bytes(src).SubView(0, dst.Length).CopyToCPU(_acc.DefaultStream, ref *p, dst.Length);
            _acc.DefaultStream.Synchronize(); // the bytes must have arrived before the array is unpinned
        }
    }

    /// <inheritdoc/>
    protected override void CopyCore(Tensor dst, Tensor src)
    {
        if (src.Bytes == 0) return;
        _acc.Bind();
        Arena(src).Bytes(src).CopyTo(_acc.DefaultStream, Arena(dst).Bytes(dst));
    }

    // ------------------------------------------------------------------ helpers

    private static IlgpuArena Arena(Tensor t) => (IlgpuArena)t.Arena!;

    private static ArrayView<float> F(Tensor t) => Arena(t).F32(t);

    private static ArrayView<int> I(Tensor t) => Arena(t).I32(t);

    /// <summary>An F32 view of an optional tensor, or a small dummy when it is absent.</summary>
    private ArrayView<float> FOrDummy(Tensor t) => t.IsEmpty ? _dummy.View.BaseView.Cast<float>() : F(t);

    /// <summary>An I32 view of an optional tensor, or a small dummy when it is absent.</summary>
    private ArrayView<int> IOrDummy(Tensor t) => t.IsEmpty ? _dummy.View.BaseView : I(t);

    /// <summary>Groups for a grid-stride loop over <paramref name="count"/> elements.</summary>
    private int StreamGroups(long count) => (int)Math.Clamp((count + GroupSize - 1) / GroupSize, 1, _streamGroups);

    /// <summary>Groups for a loop over <paramref name="items"/> independent rows or tiles (one group each on a GPU).</summary>
    private int TileGroups(long items) => (int)Math.Clamp(items, 1, _tileGroups);

    /// <summary>
    /// Launch configuration of <paramref name="groups"/> groups. Every launch goes through here, which also makes the
    /// accelerator current on the calling thread (CUDA contexts are per thread; a no-op when it already is).
    /// </summary>
    private KernelConfig Config(int groups)
    {
        _acc.Bind();
        return new KernelConfig(groups, GroupSize);
    }

    /// <summary>As <see cref="Config(int)"/>, with <paramref name="sharedFloats"/> floats of dynamic shared memory.</summary>
    private KernelConfig Config(int groups, int sharedFloats)
    {
        _acc.Bind();
        return new KernelConfig(new Index1D(groups), new Index1D(GroupSize), SharedMemoryConfig.RequestDynamic<float>(sharedFloats));
    }

    /// <summary>
    /// A float scratch buffer of at least <paramref name="count"/> elements. Operations on the stream run in order, so
    /// one buffer serves every operation; it only grows (after waiting for the queued work that may still use it).
    /// </summary>
    private ArrayView<float> Scratch(long count)
    {
        count = Math.Max(count, 1);
        if (_scratch is null || _scratch.Length < count)
        {
            _acc.DefaultStream.Synchronize();
            _scratch?.Dispose();
            _scratch = null;
            long size = Math.Max(count, 1L << 16);
            try
            {
                _scratch = _acc.Allocate1D<float>(size);
            }
            catch (CudaException e) when (e.Error == nameof(CudaError.CUDA_ERROR_OUT_OF_MEMORY))
            {
                throw new DeviceOutOfMemoryException(DeviceName, size * sizeof(float), _acc.MemorySize, e);
            }
        }
        return _scratch.View.BaseView.SubView(0, count);
    }

    // ------------------------------------------------------------------ kernel loading

    private void Track(Delegate kernel, bool specializable = false)
    {
        var method = kernel.Method;
        var attribute = method.GetCustomAttribute<IlgpuKernelAttribute>()
            ?? throw new InvalidOperationException($"kernel {method.DeclaringType?.Name}.{method.Name} lacks [{nameof(IlgpuKernelAttribute)}]: the PTX compile test would miss it");
        if (attribute.ImplicitlyGrouped)
            throw new InvalidOperationException($"kernel {method.Name} is marked implicitly grouped but is loaded as an explicitly grouped kernel");
        if (!specializable && attribute.Specialization != KernelSpecialization.Empty)
            throw new InvalidOperationException($"kernel {method.Name} asks for an occupancy specialization that its loader does not apply");
        _kernels.Add(method);
    }

    /// <summary>
    /// The specialization a kernel's attribute asks for (<see cref="IlgpuKernelAttribute.MinGroupsPerMultiprocessor"/>),
    /// unless HFT_OCCUPANCY=off (for measuring without it on a GPU machine).
    /// </summary>
    private static KernelSpecialization SpecializationOf(Delegate kernel) =>
        EnvOff("HFT_OCCUPANCY")
            ? KernelSpecialization.Empty
            : kernel.Method.GetCustomAttribute<IlgpuKernelAttribute>()!.Specialization;

    private Action<KernelConfig, T1, T2> Load<T1, T2>(Action<T1, T2> k)
        where T1 : struct where T2 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3> Load<T1, T2, T3>(Action<T1, T2, T3> k)
        where T1 : struct where T2 : struct where T3 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3, T4> Load<T1, T2, T3, T4>(Action<T1, T2, T3, T4> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3, T4, T5> Load<T1, T2, T3, T4, T5>(Action<T1, T2, T3, T4, T5> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3, T4, T5, T6> Load<T1, T2, T3, T4, T5, T6>(Action<T1, T2, T3, T4, T5, T6> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7> Load<T1, T2, T3, T4, T5, T6, T7>(Action<T1, T2, T3, T4, T5, T6, T7> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8> Load<T1, T2, T3, T4, T5, T6, T7, T8>(Action<T1, T2, T3, T4, T5, T6, T7, T8> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
        where T7 : struct where T8 : struct
    {
        Track(k, specializable: true);
        var spec = SpecializationOf(k);
        if (spec == KernelSpecialization.Empty) return _acc.LoadStreamKernel(k);
        var launch = _acc.LoadKernel(k, spec);
        return (config, a1, a2, a3, a4, a5, a6, a7, a8) => launch(_acc.DefaultStream, config, a1, a2, a3, a4, a5, a6, a7, a8);
    }

    private Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9> Load<T1, T2, T3, T4, T5, T6, T7, T8, T9>(
        Action<T1, T2, T3, T4, T5, T6, T7, T8, T9> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
        where T7 : struct where T8 : struct where T9 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> Load<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10>(
        Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
        where T7 : struct where T8 : struct where T9 : struct where T10 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    private Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> Load<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12>(
        Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
        where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct
    {
        Track(k, specializable: true);
        var spec = SpecializationOf(k);
        if (spec == KernelSpecialization.Empty) return _acc.LoadStreamKernel(k);
        var launch = _acc.LoadKernel(k, spec);
        return (config, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12) => launch(_acc.DefaultStream, config, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12);
    }

    private Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> Load<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13>(
        Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> k)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
        where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct where T13 : struct
    { Track(k); return _acc.LoadStreamKernel(k); }

    /// <summary>Compiles every kernel once (each family's file declares its launchers and loads them here).</summary>
    private void LoadKernels()
    {
        LoadElementwise();
        LoadBf16();
        LoadReduce();
        LoadEmbedding();
        LoadRmsNorm();
        LoadRope();
        LoadAttention();
        LoadAttentionTc();
        LoadDecode();
        LoadSwiGlu();
        LoadMatMul();
        LoadMatMulBf16();
        LoadMatMulBf16Fast();
        LoadCrossEntropy();
        LoadAdamW();
    }
}
