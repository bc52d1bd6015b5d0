using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Marks a static method as an ILGPU kernel of <see cref="IlgpuBackend"/>. Every loaded kernel must carry it (the
/// back-end refuses to load one that does not), so reflection over this attribute finds every kernel: the PTX
/// compile test uses it to compile each one for the GPU without a GPU.
/// </summary>
[AttributeUsage(AttributeTargets.Method, Inherited = false)]
public sealed class IlgpuKernelAttribute : Attribute
{
    /// <summary>
    /// True for an implicitly grouped kernel (first parameter an <c>Index1D</c>); false (the default) for an
    /// explicitly grouped one launched with a <c>KernelConfig</c>.
    /// </summary>
    public bool ImplicitlyGrouped { get; init; }

    /// <summary>
    /// With <see cref="MinGroupsPerMultiprocessor"/>: the largest group the kernel is launched with (PTX
    /// <c>.maxntid</c>); 0 (the default) for no occupancy specialization.
    /// </summary>
    public int MaxGroupThreads { get; init; }

    /// <summary>
    /// How many groups of <see cref="MaxGroupThreads"/> threads must fit on one multiprocessor at once (PTX
    /// <c>.minnctapersm</c>: ptxas then keeps the registers per thread within 65536 / (groups · threads)); 0 for none.
    /// </summary>
    public int MinGroupsPerMultiprocessor { get; init; }

    /// <summary>The kernel's specialization: the two limits, or none.</summary>
    public KernelSpecialization Specialization => MaxGroupThreads > 0 && MinGroupsPerMultiprocessor > 0
        ? new KernelSpecialization(MaxGroupThreads, MinGroupsPerMultiprocessor)
        : KernelSpecialization.Empty;
}
