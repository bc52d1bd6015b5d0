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
}
