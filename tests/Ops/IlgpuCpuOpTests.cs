using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;
using NUnit.Framework;

namespace HftRuntime.Tests.Ops;

/// <summary>
/// The op tests on the ILGPU kernels, run by ILGPU's CPU accelerator (the same kernels the "cuda" back-end runs,
/// executed as simulated GPU threads).
/// </summary>
[TestFixture]
public sealed class IlgpuCpuOpTests : BackendOpTests
{
    /// <inheritdoc/>
    protected override Backend CreateBackend() => IlgpuBackend.CreateCpu();
}
