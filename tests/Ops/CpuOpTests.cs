using HftRuntime.Kernels;
using HftRuntime.Kernels.Cpu;
using NUnit.Framework;

namespace HftRuntime.Tests.Ops;

/// <summary>The op tests on the CPU back-end with two threads.</summary>
[TestFixture]
public sealed class CpuOpTests : BackendOpTests
{
    /// <inheritdoc/>
    protected override Backend CreateBackend() => new CpuBackend(threads: 2);
}
