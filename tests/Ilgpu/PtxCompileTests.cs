using System.Reflection;
using System.Text.RegularExpressions;
using HftRuntime.Kernels.Ilgpu;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// Compiles every kernel of the ILGPU back-end to PTX for an H100 (sm_90, PTX ISA 8.8) without a GPU: the kernels
/// are found through <see cref="IlgpuKernelAttribute"/>, and the back-end refuses to load a kernel without it, so a
/// new kernel cannot be forgotten here.
/// </summary>
[TestFixture(OptimizationLevel.O2)]
[TestFixture(OptimizationLevel.O1)]
public sealed class PtxCompileTests
{
    private readonly OptimizationLevel _level;
    private Context _context = null!;
    private PTXBackend _ptx = null!;

    /// <summary>Compiles at <paramref name="level"/> (O2 is the default; O1 the fallback a GPU machine can pick with HFT_ILGPU_OPT).</summary>
    public PtxCompileTests(OptimizationLevel level) => _level = level;

    /// <summary>Every method marked as a kernel.</summary>
    public static IEnumerable<MethodInfo> MarkedKernels() =>
        typeof(IlgpuBackend).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Where(m => m.GetCustomAttribute<IlgpuKernelAttribute>() is not null)
            .OrderBy(m => m.Name, StringComparer.Ordinal);

    private static IEnumerable<string> KernelNames() => MarkedKernels().Select(m => m.Name);

    /// <summary>Creates a context with the back-end's settings and a PTX back-end for sm_90.</summary>
    [OneTimeSetUp]
    public void SetUp()
    {
        _context = IlgpuBackend.CreateContext(_ => { }, _level);
        _ptx = new PTXBackend(_context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null);
    }

    /// <summary>Releases the PTX back-end and the context.</summary>
    [OneTimeTearDown]
    public void TearDown()
    {
        _ptx.Dispose();
        _context.Dispose();
    }

    /// <summary>PTX of one kernel.</summary>
    private string Compile(MethodInfo method)
    {
        var implicitly = method.GetCustomAttribute<IlgpuKernelAttribute>()!.ImplicitlyGrouped;
        var entry = implicitly ? EntryPointDescription.FromImplicitlyGroupedKernel(method) : EntryPointDescription.FromExplicitlyGroupedKernel(method);
        var compiled = (PTXCompiledKernel)_ptx.Compile(entry, method.GetCustomAttribute<IlgpuKernelAttribute>()!.Specialization);
        return compiled.PTXAssembly;
    }

    /// <summary>The kernel compiles and the PTX holds its entry point for sm_90.</summary>
    [TestCaseSource(nameof(KernelNames))]
    public void KernelCompilesToPtx(string name)
    {
        var method = MarkedKernels().Single(m => m.Name == name);
        string ptx = Compile(method);
        Assert.That(ptx, Does.Match(@"\.target sm_\d+"), "ILGPU targets the lowest architecture the kernel needs (sm_80 here); the driver JIT-compiles it for sm_90");
        Assert.That(ptx, Does.Contain(".version 8.8"));
        Assert.That(Regex.IsMatch(ptx, @"\.entry\s+\S*" + Regex.Escape(name)), Is.True, $"no .entry for {name} in the PTX");
        // An occupancy specialization reaches the PTX as the directives ptxas bounds the registers by.
        var attribute = method.GetCustomAttribute<IlgpuKernelAttribute>()!;
        if (attribute.MinGroupsPerMultiprocessor > 0)
        {
            Assert.That(ptx, Does.Match(@"\.maxntid\s+" + attribute.MaxGroupThreads + @"\b"));
            Assert.That(ptx, Does.Match(@"\.minnctapersm\s+" + attribute.MinGroupsPerMultiprocessor + @"\b"));
        }
    }

    /// <summary>The GEMM keeps its 8×8 accumulator block in registers: no local memory in its PTX.</summary>
    [Test]
    public void MatMulAccumulatorsStayInRegisters()
    {
        string ptx = Compile(MarkedKernels().Single(m => m.Name == nameof(IlgpuBackend.MatMulKernel)));
        Assert.That(ptx, Does.Not.Contain(".local"), "the GEMM spills to local memory");
        Assert.That(Regex.Matches(ptx, @"\b(fma\.rn|mul)\.f32").Count, Is.GreaterThanOrEqualTo(64), "the inner loop should hold 64 multiply-adds");
    }

    /// <summary>
    /// With NVIDIA's ptxas available (HFT_PTXAS, or ptxas on PATH; CUDA 11.8 or newer), every kernel assembles for
    /// sm_90 and, at the default O2, none keeps a stack frame: ILGPU passes inline-asm operands and some structs through local memory,
    /// which costs a GEMM ten times its speed when ptxas cannot remove it. Without ptxas the test is inconclusive.
    /// Writes a table of registers and stack bytes per kernel to the test output.
    /// </summary>
    [Test]
    public void PtxasAssemblesEveryKernelWithoutAStackFrame()
    {
        string ptxas = Tool("HFT_PTXAS", "ptxas") ?? "";
        if (!File.Exists(ptxas)) Assert.Inconclusive("no ptxas (set HFT_PTXAS to NVIDIA's ptxas to run this check)");
        string version = RunTool(ptxas, "--version").Output;
        var m = Regex.Match(version, @"release (\d+)\.(\d+)");
        string isa = m.Success ? PtxIsaOf(int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value)) : "8.8";
        string dir = Path.Combine(Path.GetTempPath(), "hft-ptxas-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        var failures = new List<string>();
        foreach (var method in MarkedKernels())
        {
            string file = Path.Combine(dir, method.Name + ".ptx");
            File.WriteAllText(file, Compile(method).Replace(".version 8.8", ".version " + isa));
            var (code, output) = RunTool(ptxas, $"-arch=sm_90 -v \"{file}\" -o \"{file}.cubin\"");
            var stack = Regex.Match(output, @"(\d+) bytes stack frame");
            var regs = Regex.Match(output, @"Used (\d+) registers");
            TestContext.Out.WriteLine($"{method.Name,-36} registers {(regs.Success ? regs.Groups[1].Value : "?"),4}  stack {(stack.Success ? stack.Groups[1].Value : "?"),5}");
            var attribute = method.GetCustomAttribute<IlgpuKernelAttribute>()!;
            if (code != 0) failures.Add($"{method.Name}: ptxas failed: {output.Trim()}");
            // A kernel compiled for several groups per multiprocessor must fit them: registers · threads · groups ≤ 64 Ki.
            else if (attribute.MinGroupsPerMultiprocessor > 0 && (!regs.Success
                || (int.Parse(regs.Groups[1].Value) + 7) / 8 * 8 * attribute.MaxGroupThreads * attribute.MinGroupsPerMultiprocessor > 65536))
                failures.Add($"{method.Name}: {regs.Value} do not fit {attribute.MinGroupsPerMultiprocessor} groups of {attribute.MaxGroupThreads} threads");
            // O1 is the fallback a GPU machine can switch to; only the default (O2) must be free of stack frames.
            else if (_level == OptimizationLevel.O2 && (!stack.Success || stack.Groups[1].Value != "0"))
                failures.Add($"{method.Name}: {(stack.Success ? stack.Value : "no stack report")}");
        }
        Assert.That(failures, Is.Empty);
    }

    /// <summary>
    /// With ptxas and nvdisasm (HFT_NVDISASM, or beside ptxas), the tensor-core attention kernels load their next tile
    /// while they multiply the current one: no instruction waits for a load of the main loop before the loop's
    /// products (mma) have been issued. Zeroing a tile's rows past the end right after its loads did that (a write to
    /// a register a load has yet to fill waits for the load) and left every tile's load latency exposed.
    /// </summary>
    [TestCase(nameof(IlgpuBackend.AttentionTcForwardKernel), 64)]
    [TestCase(nameof(IlgpuBackend.AttentionTcDqKernel), 96)]
    [TestCase(nameof(IlgpuBackend.AttentionTcDkDvKernel), 128)]
    public void AttentionLoadsTheNextTileWhileItMultiplies(string kernel, int mmas)
    {
        if (_level != OptimizationLevel.O2) Assert.Ignore("the default level (O2) is the one that runs");
        string ptxas = Tool("HFT_PTXAS", "ptxas") ?? "";
        if (!File.Exists(ptxas)) Assert.Inconclusive("no ptxas (set HFT_PTXAS)");
        string? nvdisasm = Tool("HFT_NVDISASM", "nvdisasm");
        string beside = Path.Combine(Path.GetDirectoryName(ptxas)!, "nvdisasm");
        if (nvdisasm is null && File.Exists(beside)) nvdisasm = beside;
        if (nvdisasm is null) Assert.Inconclusive("no nvdisasm (set HFT_NVDISASM, or put it beside ptxas)");
        string file = Path.Combine(Path.GetTempPath(), $"hft-sass-{kernel}-{Environment.ProcessId}.ptx");
        var m = Regex.Match(RunTool(ptxas, "--version").Output, @"release (\d+)\.(\d+)");
        string isa = m.Success ? PtxIsaOf(int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value)) : "8.8";
        File.WriteAllText(file, Compile(MarkedKernels().Single(k => k.Name == kernel)).Replace(".version 8.8", ".version " + isa));
        var (code, output) = RunTool(ptxas, $"-arch=sm_90 \"{file}\" -o \"{file}.cubin\"");
        Assert.That(code, Is.Zero, output);
        var (dcode, sass) = RunTool(nvdisasm, $"-hex \"{file}.cubin\"");
        Assert.That(dcode, Is.Zero, sass);
        var instructions = SassScoreboards.Parse(sass);
        Assert.That(instructions.Count(i => i.Opcode.StartsWith("HMMA", StringComparison.Ordinal)), Is.EqualTo(mmas), "the parse found the kernel's mma");
        var loads = SassScoreboards.LoadsInTheLoop(instructions, i => i.Opcode.StartsWith("HMMA", StringComparison.Ordinal));
        Assert.That(loads.Count(l => l.Load.Opcode.StartsWith("LDG.E.128", StringComparison.Ordinal)), Is.EqualTo(8), "the next tiles' eight 16-byte loads per thread");
        foreach (var (load, before) in loads)
            Assert.That(before, Is.GreaterThanOrEqualTo(32), $"{kernel}: the load at {load.Address:x} ({load.Text}) is waited for after only {before} mma");
    }

    /// <summary>An NVIDIA tool: the path in <paramref name="variable"/>, else <paramref name="name"/> on PATH; null if neither exists.</summary>
    private static string? Tool(string variable, string name)
    {
        string? path = Environment.GetEnvironmentVariable(variable);
        if (!string.IsNullOrEmpty(path)) return File.Exists(path) ? path : null;
        return (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// With ptxas 12.0 or newer (sm_90a needs it), the PTX GEMM modules assemble: wgmma (cp.async and TMA loads, and warp-specialized, 256 and 192 wide) for sm_90a, mma.sync with 2, 3
    /// and 4 stages for sm_80 and sm_90; no entry keeps a stack frame or spills, and ptxas does not serialize the wgmma
    /// (a warning it prints when it must).
    /// </summary>
    [TestCase("wgmma", 0, "sm_90a")]
    [TestCase("wgmma-tma", 0, "sm_90a")]
    [TestCase("wgmma-ws", 0, "sm_90a")]
    [TestCase("wgmma-ws-192", 0, "sm_90a")]
    [TestCase("mma", 2, "sm_80")]
    [TestCase("mma", 3, "sm_80")]
    [TestCase("mma", 4, "sm_90")]
    public void PtxasAssemblesThePtxGemmModules(string kernel, int stages, string arch)
    {
        string? ptxas = Environment.GetEnvironmentVariable("HFT_PTXAS");
        if (string.IsNullOrEmpty(ptxas) || !File.Exists(ptxas)) Assert.Inconclusive("no ptxas (set HFT_PTXAS)");
        var m = Regex.Match(RunTool(ptxas, "--version").Output, @"release (\d+)\.");
        if (!m.Success || int.Parse(m.Groups[1].Value) < 12) Assert.Inconclusive("sm_90a needs ptxas 12.0 or newer");
        string file = Path.Combine(Path.GetTempPath(), $"hft-{kernel}{stages}-{arch}-{Environment.ProcessId}.ptx");
        File.WriteAllText(file, kernel switch { "wgmma" => WgmmaGemmPtx.Module, "wgmma-tma" => WgmmaGemmPtx.TmaModule, "wgmma-ws" => WgmmaWsGemmPtx.Module, "wgmma-ws-192" => WgmmaWsGemmPtx.NarrowModule, _ => MmaGemmPtx.Module(stages) });
        var (code, output) = RunTool(ptxas, $"-arch={arch} -v \"{file}\" -o \"{file}.cubin\"");
        TestContext.Out.WriteLine(output);
        Assert.That(code, Is.Zero, output);
        Assert.That(Regex.Matches(output, @"Compiling entry function").Count, Is.EqualTo(3), output);
        Assert.That(Regex.Matches(output, @"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads").Count, Is.EqualTo(3), output);
        Assert.That(output, Does.Not.Contain("serializ"), output);
    }

    /// <summary>
    /// The newest PTX ISA a ptxas release reads (ILGPU writes 8.8; our kernels need no more than 7.8): 11.8 reads 7.8,
    /// 12.0 to 12.4 read 8.0 to 8.4, 12.5 and 12.6 8.5, 12.8 8.7, 12.9 and later 8.8.
    /// </summary>
    internal static string PtxIsaOf(int major, int minor) => major switch
    {
        < 12 => "7.8",
        12 when minor <= 4 => "8." + minor,
        12 when minor <= 6 => "8.5",
        12 when minor <= 8 => "8.7",
        _ => "8.8",
    };

    private static (int Code, string Output) RunTool(string file, string arguments)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout + stderr.Result);
    }

    /// <summary>The set of kernels the back-end loads is exactly the set marked with the attribute.</summary>
    [Test]
    public void EveryLoadedKernelIsMarkedAndEveryMarkedKernelIsLoaded()
    {
        using var backend = IlgpuBackend.CreateCpu();
        var loaded = backend.LoadedKernels.Select(m => m.Name).OrderBy(n => n, StringComparer.Ordinal).ToArray();
        Assert.That(loaded, Is.EqualTo(KernelNames().ToArray()));
        Assert.That(loaded, Is.Unique);
    }
}
