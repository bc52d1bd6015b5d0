using System.Text.RegularExpressions;
using HftRuntime.Kernels.Ilgpu;
using ILGPU;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// The bf16 tensor-core GEMM of the ILGPU back-end, run on ILGPU's CPU accelerator, where each mma is emulated with
/// the PTX fragment layout (so these results check the CUDA path's fragment indexing): every transpose form, with and
/// without accumulation, edge shapes that are no multiple of any tile, odd k and odd row lengths (element-wise
/// loads), tensors that start at an odd bf16 offset, and split k; against a float64 product of the same bf16 values.
/// Plus the emulation's fragment table against the PTX ISA's, and the kernel's PTX for sm_90.
/// </summary>
[TestFixture]
public sealed class MatMulBf16Tests : IlgpuFixture
{
    private void Check(int m, int n, int k, bool transA, bool transB, bool accumulate, int offsetA = 0, int offsetB = 0, int seed = 1) =>
        Bf16Gemm.Check(Gpu, m, n, k, transA, transB, accumulate, offsetA, offsetB, seed);

    /// <summary>
    /// A BF16 output of a split product (the staged fp32 product, its partials summed, then rounded) is the F32
    /// output rounded, bit for bit.
    /// </summary>
    [TestCase(false, true)]
    [TestCase(true, false)]
    public void SplitKStoredInBf16IsTheFp32ProductRounded(bool transA, bool transB)
    {
        int m = 40, n = 24, k = 101;
        var rng = new Random(12);
        var a = Enumerable.Range(0, m * k).Select(_ => Kernels.Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1))).ToArray();
        var b = Enumerable.Range(0, n * k).Select(_ => Kernels.Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1))).ToArray();
        Gpu.ForceSplitK = 3;
        try
        {
            using var h = new OpHarness(Gpu);
            var ta = h.InputBf16(a); var tb = h.InputBf16(b); var c = h.Output(m * n); var c16 = h.OutputBf16(m * n);
            h.Commit();
            Gpu.MatMul(c, ta, tb, m, n, k, transA, transB, accumulate: false);
            Gpu.MatMul(c16, ta, tb, m, n, k, transA, transB, accumulate: false);
            Assert.That(h.ReadBf16(c16), Is.EqualTo(h.Read(c).Select(Kernels.Bf16.FromFloat).ToArray()));
        }
        finally { Gpu.ForceSplitK = 0; }
    }

    /// <summary>
    /// The split reduce kernels sum the slices in order: into fp32 (written or added to) and, for a product stored in
    /// bf16, rounded to nearest even (the sum the fp32 kernel writes, rounded).
    /// </summary>
    [Test]
    public void SplitReduceSumsTheSlicesInFp32AndBf16()
    {
        int m = 7, n = 9, splits = 3, mn = m * n;
        var rng = new Random(3);
        var partials = Enumerable.Range(0, splits * mn).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var c0 = Enumerable.Range(0, mn).Select(_ => (float)rng.NextDouble()).ToArray();
        using var h = new OpHarness(Gpu);
        var tp = h.Input(partials); var c = h.Output(mn); var cacc = h.Input(c0); var c16 = h.OutputBf16(mn);
        h.Commit();
        Gpu.SplitReduce(c, tp, m, n, splits, accumulate: false);
        Gpu.SplitReduce(cacc, tp, m, n, splits, accumulate: true);
        Gpu.SplitReduce(c16, tp, m, n, splits, accumulate: false);
        var sums = Enumerable.Range(0, mn).Select(i => partials[i] + partials[mn + i] + partials[2 * mn + i]).ToArray();
        Assert.That(h.Read(c), Is.EqualTo(sums));
        Assert.That(h.Read(cacc), Is.EqualTo(Enumerable.Range(0, mn).Select(i => c0[i] + partials[i] + partials[mn + i] + partials[2 * mn + i]).ToArray()));
        Assert.That(h.ReadBf16(c16), Is.EqualTo(sums.Select(Kernels.Bf16.FromFloat).ToArray()));
    }

    /// <summary>Edge shapes in the three forms training uses: Y = X·Wᵀ (NT), dX = dY·W (NN), dW += dYᵀ·X (TN), and TT.</summary>
    [TestCase(1, 1, 1)]
    [TestCase(37, 45, 70)]
    [TestCase(130, 129, 33)]
    [TestCase(128, 128, 64)]
    [TestCase(17, 3, 130)]
    [TestCase(200, 260, 97)]
    public void AllFormsMatchFloat64(int m, int n, int k)
    {
        foreach (var (transA, transB) in new[] { (false, true), (false, false), (true, false), (true, true) })
        {
            Check(m, n, k, transA, transB, accumulate: false);
            Check(m, n, k, transA, transB, accumulate: true);
        }
    }

    /// <summary>Even shapes (the aligned uint-pair loads) and the same shapes with each operand starting at an odd bf16 offset (element-wise loads).</summary>
    [TestCase(64, 96, 48)]
    [TestCase(66, 34, 40)]
    public void AlignedAndMisalignedOperands(int m, int n, int k)
    {
        foreach (var (transA, transB) in new[] { (false, true), (false, false), (true, false), (true, true) })
        {
            Check(m, n, k, transA, transB, accumulate: false);
            Check(m, n, k, transA, transB, accumulate: false, offsetA: 1);
            Check(m, n, k, transA, transB, accumulate: true, offsetB: 1);
        }
    }

    /// <summary>Split k (forced: the CPU accelerator never splits by itself), slices of 32 and a ragged last one, with and without accumulation.</summary>
    [TestCase(40, 24, 101, 3)]
    [TestCase(8, 130, 96, 2)]
    [TestCase(5, 7, 200, 16)]
    public void SplitKMatchesFloat64(int m, int n, int k, int splits)
    {
        Gpu.ForceSplitK = splits;
        try
        {
            Check(m, n, k, transA: true, transB: false, accumulate: true);
            Check(m, n, k, transA: true, transB: false, accumulate: false);
            Check(m, n, k, transA: false, transB: true, accumulate: false);
        }
        finally { Gpu.ForceSplitK = 0; }
    }

    /// <summary>
    /// The emulation's fragment table is the PTX ISA's for mma.m16n8k16 with .bf16 (section "Matrix Fragments for
    /// mma.m16n8k16 with floating point type"): A element a_i (i = 0..7, two per register) of lane (groupID,
    /// threadID_in_group) sits at row groupID (+8 for i in 2, 3, 6, 7), column 2·threadID_in_group + (i mod 2)
    /// (+8 for i ≥ 4); B element b_i (i = 0..3) at row 2·threadID_in_group + (i mod 2) (+8 for i ≥ 2), column groupID.
    /// </summary>
    [Test]
    public void EmulatedFragmentLayoutIsThePtxOne()
    {
        var seenA = new HashSet<int>();
        var seenB = new HashSet<int>();
        for (int lane = 0; lane < 32; lane++)
        {
            int groupId = lane >> 2, threadInGroup = lane & 3;
            for (int i = 0; i < 8; i++)
            {
                int row = i < 2 || i is >= 4 and < 6 ? groupId : groupId + 8;
                int col = threadInGroup * 2 + (i & 1) + (i >= 4 ? 8 : 0);
                Assert.That(IlgpuBackend.FragASlot(row, col), Is.EqualTo((i / 2) * 32 + lane), $"A a{i} of lane {lane}");
                Assert.That(col & 1, Is.EqualTo(i & 1), "a_i with even i is the low half of its register");
                seenA.Add(IlgpuBackend.FragASlot(row, col) * 2 + (col & 1));
            }
            for (int i = 0; i < 4; i++)
            {
                int row = threadInGroup * 2 + (i & 1) + (i >= 2 ? 8 : 0), col = groupId;
                Assert.That(IlgpuBackend.FragBSlot(row, col), Is.EqualTo((i / 2) * 32 + lane), $"B b{i} of lane {lane}");
                seenB.Add(IlgpuBackend.FragBSlot(row, col) * 2 + (row & 1));
            }
        }
        Assert.That(seenA, Has.Count.EqualTo(256), "the 16×16 A elements occupy distinct halves");
        Assert.That(seenB, Has.Count.EqualTo(128), "the 16×8 B elements occupy distinct halves");
    }

    /// <summary>
    /// The kernel's PTX for an H100 (sm_90) without a GPU, at both optimisation levels the back-end uses: only the
    /// CUDA branch is compiled (no emulation barriers, no dynamic shared memory), with its 2 × 16 mma.sync per 32-wide
    /// k step, 40 KiB of static shared memory (2 stages of 128 × 20 uints for A and for B), and local memory only for
    /// the operands of those mma.
    /// </summary>
    /// <remarks>
    /// ILGPU 1.5.3 passes every operand of <see cref="CudaAsm.EmitRef{T0}(string, ref T0)"/> by address: each
    /// Input/Ref local is an alloca of its own (a 4-byte .local depot) that is stored before the asm statement and loaded
    /// into the register the asm names (PTXCodeGenerator.GenerateCode(LanguageEmitValue)), and outputs are stored back
    /// and reloaded. So the PTX of a kernel that uses EmitRef always declares local memory: 10 depots per mma here.
    /// The accesses are at fixed addresses (no indexing), which ptxas can turn back into registers; whether it does
    /// (a 0-byte stack frame) needs ptxas, which <see cref="PtxCompileTests"/> runs where it is installed. This
    /// asserts what the PTX itself can show: nothing but those operands goes through local memory, and each access
    /// uses a depot's base address as is.
    /// </remarks>
    [TestCase(OptimizationLevel.O2)]
    [TestCase(OptimizationLevel.O1)]
    public void PtxHoldsTheTensorCoreInstructionAlone(OptimizationLevel level)
    {
        string ptx = Bf16Gemm.CompilePtx(nameof(IlgpuBackend.MatMulBf16Kernel), level);
        int mmas = Regex.Matches(ptx, @"\bmma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32\b").Count;
        Assert.That(mmas, Is.EqualTo(32), "2 × 16 mma per 32-wide k step");
        Assert.That(ptx, Does.Not.Contain("bar.warp.sync"), "the emulation branch must be compiled out on CUDA");
        Assert.That(ptx, Does.Not.Contain(".extern .shared"), "no dynamic shared memory on CUDA");
        var shared = Regex.Matches(ptx, @"\.shared\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\];").Sum(x => int.Parse(x.Groups[1].Value));
        Assert.That(shared, Is.EqualTo(2 * 2 * 128 * 20 * sizeof(uint)), "static shared memory: two stages of A and of B");

        int depots = Regex.Matches(ptx, @"\.local\s+\.align\s+4\s+\.b8\s+__local_depot\d+\[4\];").Count;
        Assert.That(depots, Is.EqualTo(10 * mmas), "one 4-byte depot per asm operand (4 accumulators, 4 + 2 inputs), nothing else");
        Assert.That(Regex.Matches(ptx, @"\.local\b").Count, Is.EqualTo(depots + Regex.Matches(ptx, @"\b(ld|st)\.local\.").Count),
            "every other .local is a load or store of an operand");
        var depotBases = Regex.Matches(ptx, @"mov\.b64\s+(%rd\d+),\s*__local_depot\d+;").Select(x => x.Groups[1].Value).ToHashSet();
        Assert.That(depotBases, Has.Count.EqualTo(depots), "each depot's address is taken once");
        foreach (Match access in Regex.Matches(ptx, @"\b(ld|st)\.local\.(\w+)\s+[^;]*"))
        {
            Assert.That(access.Groups[2].Value, Is.AnyOf("b32", "f32"), access.Value);
            var address = Regex.Match(access.Value, @"\[(%rd\d+)\]");
            Assert.That(address.Success && depotBases.Contains(address.Groups[1].Value), Is.True, $"local access not at a depot's base: {access.Value}");
        }
        TestContext.Out.WriteLine($"{level}: mma.sync {mmas}, local depots {depots}, PTX {ptx.Length} chars");
    }
}
