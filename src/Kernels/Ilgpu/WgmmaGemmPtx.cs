namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The PTX (sm_90a) of the wgmma bf16 GEMM: c[m, n] (+)= op(a)·op(b), bf16 operands, fp32 accumulation and output, for
/// the three forms of training: NT (a [m, k], b [n, k]: Y = X·Wᵀ), NN (a [m, k], b [k, n]: dX = dY·W) and TN (a [k, m],
/// b [k, n]: dW += dYᵀ·X). ILGPU's PTX generator stops at sm_80, so this module is written here as text and loaded
/// through ILGPU's CUDA driver API (see <see cref="PtxGemm"/>); the tests run it through a PTX interpreter and
/// assemble it with ptxas.
/// </summary>
/// <remarks>
/// <para>
/// One block of 256 threads (two warpgroups) computes a 128×256 tile of c; warpgroup w the rows 64w .. 64w + 63, with
/// four <c>wgmma.mma_async.m64n256k16.f32.bf16.bf16</c> per 64-wide k step (128 fp32 accumulators per thread). Every
/// thread also loads: each k step's tiles (a: 128×64, b: 256×64 bf16, 48 KiB) go from global to shared memory by
/// 16-byte <c>cp.async</c>, into a ring of 4 stages (192 KiB of dynamic shared memory, aligned to 1 KiB), issued two
/// steps ahead, while one wgmma group stays in flight: step t waits for its own copies
/// (<c>cp.async.wait_group 1</c>), fences them to the async proxy, meets the block at a barrier, issues its wgmma, then
/// the copies of step t + 2 into the stage that step t - 2 used (whose wgmma every warpgroup has waited for before the
/// barrier), then waits until only step t's wgmma is in flight.
/// </para>
/// <para>
/// Shared layouts, loads, tile order, split k and stores: see <see cref="GemmPtx"/>. The descriptors: a K-major
/// operand's stride between 8-row groups is 1024 B and its k16 slices start 32 bytes apart; an MN-major operand
/// (transposed in the wgmma) has leading byte offset 8192 between its 64-wide blocks and stride byte offset 1024
/// between 8-k groups, its k16 slices 2048 bytes apart. Warp v of warpgroup w holds rows 64w + 16v + g and + 8,
/// columns 8j + 2t of each n8 block j.
/// </para>
/// </remarks>
public static class WgmmaGemmPtx
{
    /// <summary>Tile of c per block (rows, columns), k step, pipeline stages and threads per block.</summary>
    public const int TileM = GemmPtx.TileM, TileN = GemmPtx.TileN, TileK = GemmPtx.TileK, Stages = 4, Threads = GemmPtx.Threads;

    /// <summary>Dynamic shared memory per block: the stages plus 1 KiB to align them.</summary>
    public static readonly int SharedBytes = GemmPtx.SharedBytes(Stages);

    /// <summary>The entry names of the three forms.</summary>
    public const string EntryNT = "hft_wgmma_bf16_nt", EntryNN = "hft_wgmma_bf16_nn", EntryTN = "hft_wgmma_bf16_tn";

    /// <summary>
    /// The parameters of every entry, in order: c, a, b (u64), m, n, k, acc, tilesM, tilesN, kPer, slice, and the
    /// constant bits of the a and b descriptors, low and high words (u32; see <see cref="DescriptorBits"/>), and the
    /// tile rows per band of the blocks' order (u32; <see cref="Group"/>).
    /// </summary>
    public static IReadOnlyList<string> Parameters => GemmPtx.Parameters;

    /// <summary>Tile rows per band of the blocks' order (see <c>p_group</c>): 16 covers the 134M model's loss-chunk rows (2048) in one band.</summary>
    public const int Group = GemmPtx.Group;

    /// <summary>
    /// The constant bits of a shared-memory descriptor (the 128-byte swizzle, the leading and stride byte offsets; the
    /// kernel adds the start address) for a K-major operand (leading offset 16, unused; stride 1024 between 8-row
    /// groups) or an MN-major one: leading offset 8192 between the 64-wide blocks and stride 1024 between 8-k groups,
    /// as CUTLASS's canonical layouts have it, or with <paramref name="swapped"/> the two exchanged (the other reading
    /// of PTX's text, which <see cref="IlgpuBackend"/> tries when a form fails its check the first way).
    /// </summary>
    public static (uint Lo, uint Hi) DescriptorBits(bool kMajor, bool swapped)
    {
        (int lbo, int sbo) = kMajor ? (16, 1024) : swapped ? (1024, 8192) : (8192, 1024);
        return ((uint)(lbo >> 4) << 16, (uint)(sbo >> 4) | (1u << 30));
    }

    private static readonly Lazy<string> _module = new(() => GemmPtx.Module("8.0", "sm_90a", "hft_wgmma_bf16", [], (e, aK, bK) => Entry(e, aK, bK, tma: false)));

    private static readonly Lazy<string> _tmaModule = new(() => GemmPtx.Module("8.0", "sm_90a", "hft_wgmma_tma_bf16", [".reg .pred %p_lead, %p_ready"],
        [TensorMapA, TensorMapB], (e, aK, bK) => Entry(e, aK, bK, tma: true)));

    /// <summary>The module's PTX text (loads by cp.async).</summary>
    public static string Module => _module.Value;

    /// <summary>
    /// The PTX text of the module whose loads are TMA copies (<c>cp.async.bulk.tensor</c>): one thread per block issues
    /// each k step's tiles as 2D boxes of the operands' tensor maps (<see cref="GemmTensorMaps"/>; kernel parameters
    /// <see cref="TensorMapA"/> and <see cref="TensorMapB"/> after <see cref="Parameters"/>) into the same swizzled
    /// stages, and every thread waits on the stage's mbarrier (transaction bytes) instead of its own copy groups.
    /// </summary>
    public static string TmaModule => _tmaModule.Value;

    /// <summary>The names of the TMA module's tensor-map parameters.</summary>
    public const string TensorMapA = "p_tmap_a", TensorMapB = "p_tmap_b";

    /// <summary>Dynamic shared memory per block of the TMA module: the stages, their mbarriers, 1 KiB to align them.</summary>
    public static readonly int TmaSharedBytes = GemmPtx.SharedBytes(Stages) + 8 * Stages;

    /// <summary>The entry of a form (transA: a is [k, m]; transB: b is [n, k]); the TT form has none.</summary>
    public static string EntryOf(bool transA, bool transB) => GemmPtx.EntryOf("hft_wgmma_bf16", transA, transB);

    /// <summary>The TMA module's entry of a form.</summary>
    public static string TmaEntryOf(bool transA, bool transB) => GemmPtx.EntryOf("hft_wgmma_tma_bf16", transA, transB);

    private static void Entry(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, bool tma)
    {
        if (tma) TmaPrologue(e, aKMajor, bKMajor);
        else GemmPtx.Prologue(e, aKMajor, bKMajor, Stages, ahead: Stages - 2);
        MainLoop(e, aKMajor, bKMajor, tma);
        Stores(e);
    }

    /// <summary>The accumulators to c: warpgroup u32 1's row 64·wg + 16·warp + g, column 2t; n8 block j in registers 4j .. 4j + 3.</summary>
    internal static void Stores(GemmPtx.Emitter e, int tileN = TileN, string? next = null)
    {
        ThreadOrigin(e);
        GemmPtx.Epilogue(e, rowBlocks: 1, colBlocks: tileN / 8, (_, j) => 4 * j, tileN, next);
    }

    /// <summary>This thread's first row of the tile in u32 27 (warpgroup 64·u1, warp 16·u2, g) and its first column in u32 28 (2t).</summary>
    internal static void ThreadOrigin(GemmPtx.Emitter e)
    {
        e.Ins("shl.b32 %u27, %u1, 6");
        e.Ins("shl.b32 %u28, %u2, 4");
        e.Ins("add.u32 %u27, %u27, %u28");
        e.Ins("add.u32 %u27, %u27, %u3");
        e.Ins("shl.b32 %u28, %u4, 1");
    }

    private static void MainLoop(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, bool tma)
    {
        string loop = e.NewLabel("LOOP"), done = e.NewLabel("DONE");
        e.Line(loop + ":");
        e.Ins("setp.ge.u32 %p_done, %u20, %u19");
        e.Ins($"@%p_done bra {done}");
        if (tma)
        {
            // Every thread waits until the stage's mbarrier completes the phase of step kt: the TMA copies' bytes
            // have landed, visible to the wgmma (both async proxy).
            WaitStage(e, "%u47", "%u20");
        }
        else
        {
            e.Ins("cp.async.wait_group 1");
            e.Ins("fence.proxy.async.shared::cta");
        }
        e.Ins("bar.sync 0");
        Multiply(e, aKMajor, bKMajor);
        if (tma) TmaIssue(e, aKMajor, bKMajor);
        else GemmPtx.Issue(e, aKMajor, bKMajor, Stages);
        e.Ins("wgmma.wait_group.sync.aligned 1");
        e.Ins("add.u32 %u20, %u20, 1");
        e.Ins($"bra.uni {loop}");
        e.Line(done + ":");
        e.Ins("wgmma.wait_group.sync.aligned 0");
    }

    /// <summary>The four wgmma of step kt from its stage (a at warpgroup u32 1's 64 rows), committed as one group.</summary>
    internal static void Multiply(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, int tileN = TileN)
    {
        // Descriptors of stage kt mod 4: a at its warpgroup's 64 rows (8192 bytes in either layout), b whole.
        e.Ins("shl.b32 %u29, %u1, 13");
        GemmPtx.StageAddress(e, "%u28", "%u20", Stages, isA: true, "%u29");
        DescriptorLow(e, "%u37", "%u39");
        GemmPtx.StageAddress(e, "%u28", "%u20", Stages, isA: false, tileN: tileN);
        DescriptorLow(e, "%u38", "%u40");
        e.Ins("wgmma.fence.sync.aligned");
        string acc = string.Join(", ", Enumerable.Range(0, tileN / 2).Select(i => "%d" + i));
        for (int kk = 0; kk < TileK / 16; kk++)
        {
            // K-major: the k16 slice starts 32 bytes further; MN-major: 16 k rows (two 8-row atoms) further.
            e.Ins($"add.u32 %u28, %u37, {kk * (aKMajor ? 32 : 2048) >> 4}");
            e.Ins("mov.b64 %q13, {%u28, %u36}");
            e.Ins($"add.u32 %u29, %u38, {kk * (bKMajor ? 32 : 2048) >> 4}");
            e.Ins("mov.b64 %q14, {%u29, %u41}");
            e.Ins($"wgmma.mma_async.sync.aligned.m64n{tileN}k16.f32.bf16.bf16 {{{acc}}}, %q13, %q14, %p_one, 1, 1, {(aKMajor ? 0 : 1)}, {(bKMajor ? 0 : 1)}");
        }
        e.Ins("wgmma.commit_group.sync.aligned");
    }

    // The TMA module's registers besides GemmPtx's: u32 47 the mbarriers (8 bytes per stage after the stages), 48 the
    // current stage's mbarrier, 49 the k coordinate of a load step, 50 and 51 temporaries; u64 17 and 18 the generic
    // addresses of the tensor maps; %p_lead thread 0 (which initialises the mbarriers and issues the copies).

    /// <summary>
    /// Setup, the mbarriers (one arrival each: thread 0's, with the step's transaction bytes), zeroed accumulators and
    /// the copies of the first two k steps.
    /// </summary>
    private static void TmaPrologue(GemmPtx.Emitter e, bool aKMajor, bool bKMajor)
    {
        GemmPtx.Setup(e, Stages);
        e.Ins($"add.u32 %u47, %u22, {Stages * (GemmPtx.StageBytesA + GemmPtx.StageBytesBFor(TileN))}");
        TensorMapAddresses(e);
        e.Ins("setp.eq.u32 %p_lead, %u0, 0");
        string initialised = e.NewLabel("INIT");
        e.Ins($"@!%p_lead bra {initialised}");
        for (int s = 0; s < Stages; s++) e.Ins($"mbarrier.init.shared::cta.b64 [%u47+{8 * s}], 1");
        e.Ins("fence.mbarrier_init.release.cluster");
        e.Line(initialised + ":");
        e.Ins("bar.sync 0");
        GemmPtx.ZeroAccumulators(e);
        for (int s = 0; s < Stages - 2; s++) TmaIssue(e, aKMajor, bKMajor);
    }

    /// <summary>The generic addresses of the tensor-map parameters in u64 17 (a) and 18 (b).</summary>
    internal static void TensorMapAddresses(GemmPtx.Emitter e)
    {
        e.Ins($"mov.u64 %q17, {TensorMapA}");
        e.Ins("cvta.param.u64 %q17, %q17");
        e.Ins($"mov.u64 %q18, {TensorMapB}");
        e.Ins("cvta.param.u64 %q18, %q18");
    }

    /// <summary>
    /// <paramref name="dst"/> = the shared address of the mbarrier of step <paramref name="step"/>'s stage among the
    /// 8-byte mbarriers at <paramref name="barriers"/>.
    /// </summary>
    internal static void StageBarrier(GemmPtx.Emitter e, string dst, string barriers, string step)
    {
        e.Ins($"rem.u32 %u27, {step}, {Stages}");
        e.Ins($"shl.b32 {dst}, %u27, 3");
        e.Ins($"add.u32 {dst}, {dst}, {barriers}");
    }

    /// <summary>
    /// Waits until the mbarrier of step <paramref name="step"/>'s stage (among those at <paramref name="barriers"/>;
    /// its address left in u32 48) completes the phase of parity (step / 4 + <paramref name="parityOffset"/>) mod 2:
    /// offset 0 the step's own use of the stage, 1 the use before it (which a fresh mbarrier passes at once).
    /// </summary>
    internal static void WaitStage(GemmPtx.Emitter e, string barriers, string step, int parityOffset = 0)
    {
        string wait = e.NewLabel("WAIT");
        StageBarrier(e, "%u48", barriers, step);
        e.Ins($"div.u32 %u29, {step}, {Stages}");
        if (parityOffset != 0) e.Ins($"add.u32 %u29, %u29, {parityOffset}");
        e.Ins("and.b32 %u29, %u29, 1");
        e.Line(wait + ":");
        e.Ins("mbarrier.try_wait.parity.shared::cta.b64 %p_ready, [%u48], %u29");
        e.Ins($"@!%p_ready bra {wait}");
    }

    /// <summary>
    /// Thread 0, when load step kl is below the step count: announces the step's 48 KiB to its stage's mbarrier and
    /// issues the TMA copies of its a and b tiles (boxes at the k coordinate kBegin + 64·kl); kl advances in every
    /// thread. The step's stage was last read by step kl − 4, whose wgmma every warpgroup retired before the barrier
    /// of the step issuing this.
    /// </summary>
    private static void TmaIssue(GemmPtx.Emitter e, bool aKMajor, bool bKMajor)
    {
        string skip = e.NewLabel("SKIP");
        e.Ins("setp.lt.u32 %p_load, %u21, %u19");
        e.Ins("and.pred %p_load, %p_load, %p_lead");
        e.Ins($"@!%p_load bra {skip}");
        TmaLoads(e, aKMajor, bKMajor);
        e.Line(skip + ":");
        e.Ins("add.u32 %u21, %u21, 1");
    }

    /// <summary>
    /// Load step kl (u32 21)'s 48 KiB announced to its stage's full mbarrier (among those at u32 47; its address in
    /// u32 48) and its a and b tiles' TMA copies into its stage (boxes at the k coordinate kBegin + 64·<paramref name="kStep"/>,
    /// in u32 49: kl itself, or the step within the tile of a kernel that loops over tiles). With
    /// <paramref name="parts"/> (<see cref="WgmmaWsGemmPtx"/>'s sums of products): the k coordinate is of the
    /// concatenation of the parts' k; from p_k1 on it is part 1's, from p_k2 on part 2's, each copied from its own maps
    /// at the coordinate less its part's start (the maps' addresses and the starts are taken from the parameters at
    /// each load, not held in the producer's 40 registers).
    /// </summary>
    internal static void TmaLoads(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, int tileN = TileN, string kStep = "%u21", bool parts = false,
        bool swiGluPairs = false)
    {
        StageBarrier(e, "%u48", "%u47", "%u21");
        e.Ins($"mbarrier.arrive.expect_tx.shared::cta.b64 _, [%u48], {GemmPtx.StageBytesA + GemmPtx.StageBytesBFor(tileN)}");
        e.Ins($"shl.b32 %u49, {kStep}, 6");
        e.Ins("add.u32 %u49, %u49, %u18");
        string mapA = "%q17", mapB = "%q18";
        if (parts)
        {
            (mapA, mapB) = ("%q9", "%q10");
            e.Ins("mov.u64 %q9, %q17");
            e.Ins("mov.u64 %q10, %q18");
            e.Ins("mov.u32 %u59, 0");
            for (int part = 1; part < WgmmaWsGemmPtx.MaxParts; part++)
            {
                e.Ins($"ld.param.u32 %u57, [{WgmmaWsGemmPtx.PartStarts[part - 1]}]");
                e.Ins("setp.ge.u32 %p_part, %u49, %u57");
                for (int operand = 0; operand < 2; operand++)
                {
                    string reg = operand == 0 ? "%q9" : "%q10";
                    e.Ins($"@%p_part mov.u64 {reg}, {WgmmaWsGemmPtx.TensorMaps[2 * part + operand]}");
                    e.Ins($"@%p_part cvta.param.u64 {reg}, {reg}");
                }
                e.Ins("@%p_part mov.u32 %u59, %u57");
            }
            e.Ins("sub.u32 %u49, %u49, %u59");
        }
        GemmPtx.StageAddress(e, "%u28", "%u21", Stages, isA: true);
        TmaTile(e, "%u28", mapA, "%u16", aKMajor, TileM / 64);
        GemmPtx.StageAddress(e, "%u28", "%u21", Stages, isA: false, tileN: tileN);
        if (!swiGluPairs)
        {
            TmaTile(e, "%u28", mapB, "%u17", bKMajor, tileN / 64);
            return;
        }
        // A GemmStore.SwiGlu launch (K-major b): the tile's b rows are W_gate's and then W_up's rows n0/2 .. , one box
        // of half the rows each (their 128-byte rows stacked as one box of the whole tile would lay them).
        string pairs = e.NewLabel("SWIGLU_B"), loaded = e.NewLabel("B_LOADED");
        e.Ins("ld.param.u32 %u50, [p_acc]");
        e.Ins($"setp.eq.u32 %p_sw, %u50, {(int)GemmStore.SwiGlu}");
        e.Ins($"@%p_sw bra {pairs}");
        TmaTile(e, "%u28", mapB, "%u17", bKMajor, tileN / 64);
        e.Ins($"bra.uni {loaded}");
        e.Line(pairs + ":");
        const string Copy = BulkTensorCopy;
        e.Ins("shr.u32 %u50, %u17, 1");
        e.Ins($"{Copy} [%u28], [{mapB}, {{%u49, %u50}}], [%u48]");
        e.Ins($"mov.u64 %q10, {WgmmaWsGemmPtx.TensorMaps[3]}");
        e.Ins("cvta.param.u64 %q10, %q10");
        e.Ins($"add.u32 %u51, %u28, {tileN / 2 * 128}");
        e.Ins($"{Copy} [%u51], [%q10, {{%u49, %u50}}], [%u48]");
        e.Line(loaded + ":");
    }

    /// <summary>
    /// One operand's tile of a k step: K-major, one box of 64 k × the tile's rows at (k, origin) (rows of 128 bytes);
    /// MN-major, one box of 64 m or n × 64 k per 64-wide block j at (origin + 64·j, k), 8192 bytes apart. The tensor
    /// maps' 128-byte swizzle writes the layouts the descriptors read (the stages start on 1 KiB).
    /// </summary>
    private static void TmaTile(GemmPtx.Emitter e, string dst, string map, string origin, bool kMajor, int blocks)
    {
        const string Copy = BulkTensorCopy;
        if (kMajor)
        {
            e.Ins($"{Copy} [{dst}], [{map}, {{%u49, {origin}}}], [%u48]");
            return;
        }
        for (int j = 0; j < blocks; j++)
        {
            e.Ins($"add.u32 %u50, {origin}, {64 * j}");
            e.Ins($"add.u32 %u51, {dst}, {8192 * j}");
            e.Ins($"{Copy} [%u51], [{map}, {{%u50, %u49}}], [%u48]");
        }
    }

    /// <summary>A 2D TMA copy of a box of a tensor map into shared memory, completing its bytes on an mbarrier.</summary>
    private const string BulkTensorCopy = "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes";

    /// <summary>A descriptor's low word: the start address in u32 28 (bits 4..17, as bits 0..13) with the constant bits.</summary>
    private static void DescriptorLow(GemmPtx.Emitter e, string dst, string constantBits)
    {
        e.Ins("shr.u32 %u28, %u28, 4");
        e.Ins("and.b32 %u28, %u28, 16383");
        e.Ins($"or.b32 {dst}, %u28, {constantBits}");
    }
}
