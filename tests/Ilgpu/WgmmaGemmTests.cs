using System.Text.RegularExpressions;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// The wgmma GEMM's PTX (sm_90a, no GPU here): run through <see cref="PtxInterpreter"/> against float64 for each form,
/// with k steps fewer than, equal to and more than the pipeline's stages, split k and accumulation; its shape; and the
/// dispatch where no sm_90 device is (the simple kernel, still right).
/// </summary>
[TestFixture]
public class WgmmaGemmTests : IlgpuFixture
{
    private static readonly PtxGemmCheck Wgmma = new(WgmmaGemmPtx.Module, WgmmaGemmPtx.EntryOf, WgmmaGemmPtx.SharedBytes);

    /// <summary>The module whose loads are TMA copies completing on mbarriers.</summary>
    private static readonly PtxGemmCheck WgmmaTma = new(WgmmaGemmPtx.TmaModule, WgmmaGemmPtx.TmaEntryOf, WgmmaGemmPtx.TmaSharedBytes, TensorMaps: true);

    /// <summary>The warp-specialized module: a producer warpgroup and two consumers, full and empty mbarriers.</summary>
    private static readonly PtxGemmCheck WgmmaWs = new(WgmmaWsGemmPtx.Module, WgmmaWsGemmPtx.EntryOf, WgmmaWsGemmPtx.SharedBytes, TensorMaps: true,
        Threads: WgmmaWsGemmPtx.Threads, MaxParts: WgmmaWsGemmPtx.MaxParts);

    /// <summary>The warp-specialized module with 128 × 192 tiles.</summary>
    private static readonly PtxGemmCheck WgmmaWsNarrow = new(WgmmaWsGemmPtx.NarrowModule, WgmmaWsGemmPtx.NarrowEntryOf,
        WgmmaWsGemmPtx.SharedBytesFor(WgmmaWsGemmPtx.NarrowTileN), TensorMaps: true, Threads: WgmmaWsGemmPtx.Threads, TileN: WgmmaWsGemmPtx.NarrowTileN,
        MaxParts: WgmmaWsGemmPtx.MaxParts);

    /// <summary>Each shape for the cp.async module, the TMA one and the warp-specialized ones (256 and 192 wide).</summary>
    private static IEnumerable<TestCaseData> Shapes()
    {
        (bool, bool, int, int, int, bool, int, string)[] shapes =
        [
            (false, true, 128, 256, 384, false, 1, "NT, 6 k steps (the stage ring wraps)"),
            (false, true, 256, 512, 64, true, 1, "NT, 4 tiles, 1 k step, accumulate"),
            (false, false, 256, 256, 128, true, 1, "NN, 2 tiles, 2 k steps, accumulate"),
            (false, false, 128, 512, 320, false, 1, "NN, 5 k steps"),
            (true, false, 128, 256, 448, false, 1, "TN, 7 k steps"),
            (true, false, 256, 256, 320, false, 2, "TN, split k into 192 + 128"),
            (false, true, 130, 258, 200, true, 1, "NT, ragged m, n and k, accumulate"),
            (false, false, 200, 264, 136, false, 1, "NN, ragged m, n and k"),
            (true, false, 136, 264, 328, true, 2, "TN, ragged m, n and k, split k into 192 + 136, accumulate"),
        ];
        foreach (string module in new[] { "cp.async", "TMA", "warp-specialized", "warp-specialized 192" })
            foreach (var (ta, tb, m, n, k, acc, splits, name) in shapes)
                yield return new TestCaseData(module, ta, tb, m, n, k, acc, splits).SetName(module + ": " + name);
    }

    [TestCaseSource(nameof(Shapes))]
    public void MatchesFloat64(string module, bool transA, bool transB, int m, int n, int k, bool accumulate, int splits)
    {
        var check = module switch { "TMA" => WgmmaTma, "warp-specialized" => WgmmaWs, "warp-specialized 192" => WgmmaWsNarrow, _ => Wgmma };
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out string where), Is.LessThanOrEqualTo(1.0), where);
        // The other extreme of asynchrony (copies land at once, wgmma read at their wait) in the other thread order.
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out where, late: true), Is.LessThanOrEqualTo(1.0), "late wgmma: " + where);
        // And in thread order with the first warpgroup (which holds the TMA module's issuing thread 0) as far ahead of
        // the second as the code lets it: a copy into a stage whose wgmma is not yet retired in every warpgroup shows.
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out where, late: true, ahead: true), Is.LessThanOrEqualTo(1.0),
            "late wgmma, first warpgroup ahead: " + where);
    }

    /// <summary>
    /// Stores in bf16 (a product whose output is only a bf16 operand): every element is the fp32 store's value rounded
    /// to nearest even, in the right place, whole and ragged tiles, and nothing lands past c's 2-byte elements.
    /// </summary>
    [TestCase("cp.async", false, true, 128, 256, 128)]
    [TestCase("TMA", false, false, 130, 264, 136)]
    [TestCase("warp-specialized", true, false, 136, 264, 200)]
    [TestCase("warp-specialized", false, true, 256, 512, 64)]
    [TestCase("warp-specialized 192", false, false, 200, 392, 128)]
    [TestCase("warp-specialized 192", false, true, 128, 192, 64)]
    public void Bf16StoresAreTheFp32StoresRounded(string module, bool transA, bool transB, int m, int n, int k)
    {
        var check = module switch { "TMA" => WgmmaTma, "warp-specialized" => WgmmaWs, "warp-specialized 192" => WgmmaWsNarrow, _ => Wgmma };
        Assert.That(check.Bf16StoresMismatch(transA, transB, m, n, k), Is.Null);
        Assert.That(check.Bf16StoresMismatch(transA, transB, m, n, k, late: true), Is.Null, "late wgmma");
    }

    /// <summary>
    /// The warp-specialized kernels as persistent launches: fewer blocks than tiles, each looping over its tiles with
    /// the stage ring and its mbarrier phases running on across them (tiles of 5 k steps wrap the 4 stages at a
    /// different point each tile), split k and ragged tiles included, in all three interleavings.
    /// </summary>
    [TestCase("warp-specialized", false, true, 256, 512, 320, false, 1, 1)]
    [TestCase("warp-specialized", false, false, 384, 256, 192, true, 1, 2)]
    [TestCase("warp-specialized", true, false, 136, 264, 328, true, 2, 3)]
    [TestCase("warp-specialized 192", false, true, 200, 392, 136, false, 1, 2)]
    [TestCase("warp-specialized 192", true, false, 256, 384, 256, false, 2, 3)]
    public void PersistentLaunchesMatchFloat64(string module, bool transA, bool transB, int m, int n, int k, bool accumulate, int splits, int grid)
    {
        var check = module == "warp-specialized" ? WgmmaWs : WgmmaWsNarrow;
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out string where, grid: grid), Is.LessThanOrEqualTo(1.0), where);
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out where, late: true, grid: grid), Is.LessThanOrEqualTo(1.0), "late wgmma: " + where);
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out where, late: true, ahead: true, grid: grid), Is.LessThanOrEqualTo(1.0),
            "late wgmma, first warpgroup ahead: " + where);
    }

    /// <summary>
    /// The warp-specialized kernels summing products in one launch (an input gradient through several weights): a and
    /// b cut along k into separate tensors, two or three parts, persistent and block-per-tile, split k whose slices cross
    /// a part's end, accumulation, a ragged last part, in all three interleavings.
    /// </summary>
    [TestCase("warp-specialized", false, false, 256, 256, 320, false, 1, 0, new[] { 128, 192 })]
    [TestCase("warp-specialized", false, true, 128, 512, 392, true, 1, 1, new[] { 64, 128, 200 })]
    [TestCase("warp-specialized", true, false, 136, 264, 384, false, 2, 0, new[] { 128, 64, 192 })]
    [TestCase("warp-specialized 192", false, false, 200, 392, 448, true, 1, 2, new[] { 192, 256 })]
    [TestCase("warp-specialized 192", false, false, 128, 192, 200, false, 1, 0, new[] { 64, 64, 72 })]
    public void SummedPartsMatchFloat64(string module, bool transA, bool transB, int m, int n, int k, bool accumulate, int splits, int grid, int[] parts)
    {
        var check = module == "warp-specialized" ? WgmmaWs : WgmmaWsNarrow;
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out string where, grid: grid, parts: parts), Is.LessThanOrEqualTo(1.0), where);
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out where, late: true, grid: grid, parts: parts), Is.LessThanOrEqualTo(1.0),
            "late wgmma: " + where);
        Assert.That(check.WorstError(transA, transB, m, n, k, accumulate, splits, out where, late: true, ahead: true, grid: grid, parts: parts),
            Is.LessThanOrEqualTo(1.0), "late wgmma, first warpgroup ahead: " + where);
    }

    /// <summary>
    /// The warp-specialized kernels' SwiGLU launch (gate and up of the same features in one tile, b from W_gate's and
    /// W_up's maps): gate, up and h = silu(gate)·up in bf16, whole and ragged m, several tile columns, persistent, in
    /// all three interleavings.
    /// </summary>
    [TestCase("warp-specialized", 136, 256, 192, 0)]
    [TestCase("warp-specialized", 256, 384, 128, 2)]
    [TestCase("warp-specialized 192", 130, 192, 136, 0)]
    public void SwiGluLaunchesWriteGateUpAndH(string module, int m, int f, int k, int grid)
    {
        var check = module == "warp-specialized" ? WgmmaWs : WgmmaWsNarrow;
        Assert.That(check.SwiGluMismatch(m, f, k, grid: grid), Is.Null);
        Assert.That(check.SwiGluMismatch(m, f, k, late: true, grid: grid), Is.Null, "late wgmma");
        Assert.That(check.SwiGluMismatch(m, f, k, late: true, ahead: true, grid: grid), Is.Null, "late wgmma, first warpgroup ahead");
    }

    /// <summary>
    /// The warp-specialized kernels' RoPE stores: every 64-wide head of c rotated by its row's angles (rows whose
    /// position lies outside the tables unrotated), rounded to bf16, ragged m and a tile reaching past n, persistent,
    /// in all three interleavings.
    /// </summary>
    [TestCase("warp-specialized", 136, 256, 128, 0)]
    [TestCase("warp-specialized", 130, 320, 64, 2)]
    [TestCase("warp-specialized 192", 136, 384, 136, 0)]
    [TestCase("warp-specialized 192", 128, 128, 64, 1)]
    public void RopeStoresRotateEachHead(string module, int m, int n, int k, int grid)
    {
        var check = module == "warp-specialized" ? WgmmaWs : WgmmaWsNarrow;
        Assert.That(check.RopeMismatch(m, n, k, 40, grid: grid), Is.Null);
        Assert.That(check.RopeMismatch(m, n, k, 40, late: true, grid: grid), Is.Null, "late wgmma");
        Assert.That(check.RopeMismatch(m, n, k, 40, late: true, ahead: true, grid: grid), Is.Null, "late wgmma, first warpgroup ahead");
    }

    /// <summary>
    /// A product the selected PTX kernel cannot take tries the next: warp-specialized, TMA, cp.async wgmma, mma, from
    /// the selected one on; the ILGPU kernels have none after them.
    /// </summary>
    [Test]
    public void EachPtxKernelFallsBackToTheNextOnesOnly()
    {
        Assert.That(IlgpuBackend.PtxFallbackOrder(Bf16GemmVariant.WgmmaWs),
            Is.EqualTo(new[] { Bf16GemmVariant.WgmmaWs, Bf16GemmVariant.WgmmaTma, Bf16GemmVariant.Wgmma, Bf16GemmVariant.Mma }));
        Assert.That(IlgpuBackend.PtxFallbackOrder(Bf16GemmVariant.Wgmma), Is.EqualTo(new[] { Bf16GemmVariant.Wgmma, Bf16GemmVariant.Mma }));
        Assert.That(IlgpuBackend.PtxFallbackOrder(Bf16GemmVariant.Mma), Is.EqualTo(new[] { Bf16GemmVariant.Mma }));
        Assert.That(IlgpuBackend.PtxFallbackOrder(Bf16GemmVariant.Fast), Is.Empty);
        Assert.That(IlgpuBackend.PtxFallbackOrder(Bf16GemmVariant.Simple), Is.Empty);
    }

    /// <summary>Bands of 2 tile rows over 3 (a ragged last band) × 2 tile columns × 2 k slices: every tile of every slice, once.</summary>
    [Test]
    public void RaggedBandsOfTheTileOrderCoverEveryTile() =>
        Assert.That(Wgmma.WorstError(false, true, 384, 512, 128, true, 2, out string where, group: 2), Is.LessThanOrEqualTo(1.0), where);

    /// <summary>
    /// The descriptor bits are the launch's: with the MN-major byte offsets exchanged (the other reading that the
    /// back-end tries on a card), the forms with an MN-major operand come out wrong here, and NT (K-major only) does not change.
    /// </summary>
    [Test]
    public void ExchangedByteOffsetsReachTheMnMajorDescriptors()
    {
        Assert.That(Wgmma.WorstError(false, false, 128, 256, 128, false, 1, out _, swapped: true), Is.GreaterThan(1e3), "NN");
        Assert.That(Wgmma.WorstError(true, false, 128, 256, 128, false, 1, out _, swapped: true), Is.GreaterThan(1e3), "TN");
        Assert.That(Wgmma.WorstError(false, true, 128, 256, 128, false, 1, out string where, swapped: true), Is.LessThanOrEqualTo(1.0), where);
    }

    /// <summary>
    /// On a device that cannot run them (here ILGPU's CPU accelerator) the wgmma, TMA wgmma and mma variants run the
    /// simple kernel, right, and say why; the modules are never launched.
    /// </summary>
    [TestCase(Bf16GemmVariant.Wgmma, "wgmma")]
    [TestCase(Bf16GemmVariant.WgmmaTma, "wgmma-tma")]
    [TestCase(Bf16GemmVariant.WgmmaWs, "wgmma-ws")]
    [TestCase(Bf16GemmVariant.Mma, "mma")]
    public void WithoutACudaDeviceTheSimpleKernelRuns(Bf16GemmVariant variant, string name)
    {
        var saved = Gpu.Bf16GemmVariant;
        Gpu.Bf16GemmVariant = variant;
        try
        {
            long simple = Gpu.Bf16SimpleLaunches;
            Bf16Gemm.Check(Gpu, 128, 256, 64, transA: false, transB: true, accumulate: false);
            Bf16Gemm.Check(Gpu, 128, 256, 64, transA: true, transB: false, accumulate: true);
            Assert.That(Gpu.PtxLaunches(variant), Is.Zero);
            Assert.That(Gpu.Bf16SimpleLaunches - simple, Is.EqualTo(2));
            Assert.That(Gpu.PtxStatus(variant), Is.EqualTo("unavailable: needs a CUDA device"));
            Assert.That(Gpu.Bf16GemmSummary, Is.EqualTo($"{name} (unavailable: needs a CUDA device)"));
        }
        finally { Gpu.Bf16GemmVariant = saved; }
    }

    /// <summary>
    /// Every entry of every wgmma module declares the parameters PtxGemm.Launch passes, in its order and sizes: the
    /// addresses as u64, the other scalars as u32, the tensor maps as 128 bytes on 64 (the driver reads the argument
    /// buffer by the declaration, which the interpreter does not).
    /// </summary>
    [Test]
    public void EveryEntryDeclaresTheParametersLaunchPasses()
    {
        var modules = new (string Ptx, Func<bool, bool, string> EntryOf, bool Maps, int Parts)[]
        {
            (WgmmaGemmPtx.Module, WgmmaGemmPtx.EntryOf, false, 1), (WgmmaGemmPtx.TmaModule, WgmmaGemmPtx.TmaEntryOf, true, 1),
            (WgmmaWsGemmPtx.Module, WgmmaWsGemmPtx.EntryOf, true, WgmmaWsGemmPtx.MaxParts), (WgmmaWsGemmPtx.NarrowModule, WgmmaWsGemmPtx.NarrowEntryOf, true, WgmmaWsGemmPtx.MaxParts),
        };
        foreach (var (ptx, entryOf, maps, parts) in modules)
            foreach (var (transA, transB) in new[] { (false, true), (false, false), (true, false) })
            {
                string name = entryOf(transA, transB);
                string declared = Regex.Match(ptx, @"\.entry " + name + @"\((?<p>(?s:.*?))\)").Groups["p"].Value;
                var got = declared.Split(',').Select(p => Regex.Replace(p.Trim(), @"\s+", " ")).ToArray();
                var names = PtxGemm.ParameterNames(maps, parts);
                int scalarCount = names.Length - (maps ? 2 * parts : 0);
                var want = names.Select((p, i) => i < scalarCount
                    ? $".param .{(PtxGemm.IsPointer(p) ? "u64" : "u32")} {p}" : $".param .align 64 .b8 {p}[128]").ToArray();
                Assert.That(got, Is.EqualTo(want), name);
                var (scalars, tensorMaps) = PtxGemm.Arguments(new GemmLaunchShape(transA, transB, 256, 256, 192, GemmStore.Write, 2, 1, 192, 65536, false, 16),
                    0x1000, [new GemmPart(0x2000, 0x3000, 128), .. parts > 1 ? new[] { new GemmPart(0x4000, 0x5000, 64) } : []], maps, parts, GemmPtx.TileN);
                Assert.That(scalars.Length + tensorMaps.Length, Is.EqualTo(names.Length), name);
            }
    }

    /// <summary>
    /// Each form's entry of the TMA module: one thread issues, per load step (two in the prologue, one in the loop), one
    /// TMA box per 64-wide block of an MN-major operand or one per K-major tile (a: 1 or 2, b: 1 or 4) after announcing
    /// the step's 48 KiB to the stage's mbarrier; no cp.async; the four mbarriers are initialised with one arrival.
    /// </summary>
    [Test]
    public void EachTmaEntryHasTheExpectedInstructions()
    {
        string ptx = WgmmaGemmPtx.TmaModule;
        Assert.That(ptx, Does.Contain(".target sm_90a"));
        foreach (var (transA, transB, boxes) in new[] { (false, true, 1 + 1), (false, false, 1 + 4), (true, false, 2 + 4) })
        {
            string name = WgmmaGemmPtx.TmaEntryOf(transA, transB);
            string body = Regex.Match(ptx, @"\.entry " + name + @"\((?s:.*?)\n\}").Value;
            Assert.That(body, Does.Contain($".param .align 64 .b8 {WgmmaGemmPtx.TensorMapA}[128]"), name);
            Assert.That(Regex.Matches(body, @"cp\.async\.bulk\.tensor\.2d\.shared::cluster\.global\.mbarrier::complete_tx::bytes").Count, Is.EqualTo(3 * boxes), name);
            Assert.That(Regex.Matches(body, @"mbarrier\.arrive\.expect_tx\.shared::cta\.b64 _, \[%u48\], 49152").Count, Is.EqualTo(3), name);
            Assert.That(Regex.Matches(body, @"mbarrier\.init\.shared::cta\.b64 \[%u47\+\d+\], 1;").Count, Is.EqualTo(4), name);
            Assert.That(body, Does.Not.Contain("cp.async.cg"), name);
            Assert.That(Regex.Matches(body, @"wgmma\.mma_async").Count, Is.EqualTo(4), name);
        }
    }

    /// <summary>
    /// Each form's entry of the warp-specialized module: 384 threads; the producer gives up registers and issues one
    /// load step's boxes in its loop after waiting on the stage's empty mbarrier; the consumers take registers, wait on
    /// the full one, multiply and release the previous step's stage (and a tile's last one) with one arrival; full mbarriers count one arrival,
    /// empty ones two; no block barrier after the mbarriers' initialisation.
    /// </summary>
    [Test]
    public void EachWarpSpecializedEntryHasTheExpectedInstructions()
    {
        string ptx = WgmmaWsGemmPtx.Module;
        // NT also has the SwiGLU launch's two half-tile boxes of b (W_gate's and W_up's).
        foreach (var (transA, transB, boxes) in new[] { (false, true, 1 + 1 + 2), (false, false, 1 + 4), (true, false, 2 + 4) })
        {
            string name = WgmmaWsGemmPtx.EntryOf(transA, transB);
            string body = Regex.Match(ptx, @"\.entry " + name + @"\((?s:.*?)\n\}").Value;
            Assert.That(body, Does.Contain(".maxntid 384, 1, 1"), name);
            Assert.That(Regex.Matches(body, @"cp\.async\.bulk\.tensor\.2d").Count, Is.EqualTo(boxes), name);
            Assert.That(Regex.Matches(body, @"mbarrier\.init\.shared::cta\.b64 \[%u47\+\d+\], 1;").Count, Is.EqualTo(4), name);
            Assert.That(Regex.Matches(body, @"mbarrier\.init\.shared::cta\.b64 \[%u52\+\d+\], 2;").Count, Is.EqualTo(4), name);
            Assert.That(body, Does.Contain($"setmaxnreg.dec.sync.aligned.u32 {WgmmaWsGemmPtx.ProducerRegisters}"), name);
            Assert.That(body, Does.Contain($"setmaxnreg.inc.sync.aligned.u32 {WgmmaWsGemmPtx.ConsumerRegisters}"), name);
            // The release of the previous step's stage in the loop, and of a tile's last stage after it.
            Assert.That(Regex.Matches(body, @"mbarrier\.arrive\.shared::cta\.b64 _").Count, Is.EqualTo(2), name);
            Assert.That(Regex.Matches(body, @"bar\.sync").Count, Is.EqualTo(1), name);
            Assert.That(128 * WgmmaWsGemmPtx.ProducerRegisters + 256 * WgmmaWsGemmPtx.ConsumerRegisters, Is.LessThanOrEqualTo(65536));
        }
    }

    /// <summary>Each form's entry has 4 wgmma of m64n256k16 per k step with the form's transposes, and 12 cp.async (4 of a, 8 of b) per load step.</summary>
    [Test]
    public void EachEntryHasTheExpectedInstructions()
    {
        string ptx = WgmmaGemmPtx.Module;
        Assert.That(ptx, Does.Contain(".target sm_90a"));
        foreach (var (name, ta, tb) in new[] { (WgmmaGemmPtx.EntryNT, 0, 0), (WgmmaGemmPtx.EntryNN, 0, 1), (WgmmaGemmPtx.EntryTN, 1, 1) })
        {
            string body = Regex.Match(ptx, @"\.entry " + name + @"\((?s:.*?)\n\}").Value;
            Assert.That(Regex.Matches(body, @"wgmma\.mma_async\.sync\.aligned\.m64n256k16\.f32\.bf16\.bf16 .*, 1, 1, " + ta + ", " + tb + ";").Count, Is.EqualTo(4), name);
            // Two prologue issues and one in the loop, 12 copies each.
            Assert.That(Regex.Matches(body, @"cp\.async\.cg\.shared\.global").Count, Is.EqualTo(3 * 12), name);
            // Written and added, each for a whole tile and, with bounds, for a ragged one; and written in bf16.
            Assert.That(Regex.Matches(body, @"st\.global\.v2\.f32").Count, Is.EqualTo(4 * 64), name);
            Assert.That(Regex.Matches(body, @"cvt\.rn\.bf16x2\.f32").Count, Is.EqualTo(2 * 64), name);
            Assert.That(Regex.Matches(body, @"st\.global\.b32").Count, Is.EqualTo(2 * 64), name);
        }
    }

    /// <summary>
    /// The main loop orders its synchronisation as the PTX ISA requires, which the interpreter cannot check (it runs
    /// fences as no-ops): the step's copies complete (wait_group), are made visible to the async proxy that wgmma
    /// reads shared memory through ("cp.async is treated as a weak memory operation performed in the generic proxy"),
    /// the block meets, wgmma.fence orders the accumulators, then the four wgmma, their commit, and only then the
    /// next copies, followed by the wait that retires the previous step's group. In the TMA module the step's mbarrier
    /// wait takes the place of the first two (TMA writes through the async proxy, and the completed phase makes them
    /// visible).
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void MainLoopFencesTheCopiesBeforeTheWgmma(bool tma)
    {
        string[] order = tma
            ? ["mbarrier.try_wait.parity.shared::cta.b64", "bar.sync 0", "wgmma.fence.sync.aligned", "wgmma.mma_async",
               "wgmma.commit_group.sync.aligned", "mbarrier.arrive.expect_tx", "cp.async.bulk.tensor", "wgmma.wait_group.sync.aligned 1"]
            : ["cp.async.wait_group 1", "fence.proxy.async.shared::cta", "bar.sync 0", "wgmma.fence.sync.aligned",
               "wgmma.mma_async", "wgmma.commit_group.sync.aligned", "cp.async.cg.shared.global", "wgmma.wait_group.sync.aligned 1"];
        foreach (var (transA, transB) in new[] { (false, true), (false, false), (true, false) })
        {
            string name = tma ? WgmmaGemmPtx.TmaEntryOf(transA, transB) : WgmmaGemmPtx.EntryOf(transA, transB);
            string body = Regex.Match(tma ? WgmmaGemmPtx.TmaModule : WgmmaGemmPtx.Module, @"\.entry " + name + @"\((?s:.*?)\n\}").Value;
            string loop = Regex.Match(body, @"\n(\$?LOOP\w*):(?s:.*?)bra\.uni \1;").Value;
            Assert.That(loop, Is.Not.Empty, $"{name}: no main loop");
            int at = 0;
            foreach (string step in order)
            {
                int next = loop.IndexOf(step, at, StringComparison.Ordinal);
                Assert.That(next, Is.GreaterThanOrEqualTo(0), $"{name}: '{step}' missing or out of order in the main loop");
                at = next + step.Length;
            }
        }
    }
}
