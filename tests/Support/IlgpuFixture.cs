using HftRuntime.Kernels.Cpu;
using HftRuntime.Kernels.Ilgpu;
using NUnit.Framework;

namespace HftRuntime.Tests.Support;

/// <summary>
/// A fixture with the ILGPU back-end on ILGPU's CPU accelerator (<see cref="Gpu"/>: the kernels, tensor-core ones
/// through their emulated twins) and the CPU back-end as the reference (<see cref="Cpu"/>), created once per fixture.
/// </summary>
public abstract class IlgpuFixture
{
    /// <summary>The ILGPU back-end on the CPU accelerator.</summary>
    protected IlgpuBackend Gpu { get; private set; } = null!;

    /// <summary>The CPU back-end (two threads).</summary>
    protected CpuBackend Cpu { get; private set; } = null!;

    /// <summary>Creates both back-ends.</summary>
    [OneTimeSetUp]
    public void CreateBackends()
    {
        Gpu = IlgpuBackend.CreateCpu();
        Cpu = new CpuBackend(threads: 2);
    }

    /// <summary>Releases both back-ends.</summary>
    [OneTimeTearDown]
    public void DisposeBackends()
    {
        Gpu.Dispose();
        Cpu.Dispose();
    }
}
