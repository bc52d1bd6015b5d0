namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The PTX (sm_90a) of the warp-specialized wgmma bf16 GEMM: the products, tiles, shared layouts, descriptors and
/// stores of <see cref="WgmmaGemmPtx"/>, with TMA loads, but a block of 384 threads in three warpgroups whose roles
/// differ, as CUTLASS's warp-specialized Hopper GEMMs do: warpgroup 0 produces (its first thread issues every k step's
/// TMA copies, as far ahead as the 4 stages allow; the warpgroup gives up registers with <c>setmaxnreg.dec</c> to 40),
/// warpgroups 1 and 2 consume (rows 0 .. 63 and 64 .. 127 of the tile; <c>setmaxnreg.inc</c> to 232). No block barrier
/// in the loop: a stage's "full" mbarrier completes when its copies land (transaction bytes), its "empty" mbarrier
/// when both consumer warpgroups have retired the wgmma that read it (one arrival each, after <c>wgmma.wait_group 1</c>
/// of the next step, or <c>wait_group 0</c> after a tile's last step).
/// <para>
/// Persistent: block b computes tiles b, b + grid, b + 2·grid, … of the launch's order, so a launch of fewer blocks
/// than tiles (one per multiprocessor) keeps its blocks resident; the producer and the consumers count k steps across
/// tiles, so the stage ring and its mbarrier phases run on from one tile into the next, and the consumers release a
/// tile's last stage before they store it: the producer loads the next tile's first steps while they do. A launch of
/// one block per tile is the plain kernel.
/// </para>
/// </summary>
public static class WgmmaWsGemmPtx
{
    /// <summary>Threads per block: a producer warpgroup and two consumer warpgroups.</summary>
    public const int Threads = 384;

    /// <summary>Pipeline stages (as <see cref="WgmmaGemmPtx.Stages"/>).</summary>
    public const int Stages = WgmmaGemmPtx.Stages;

    /// <summary>Registers per thread of the producer and of the consumers after <c>setmaxnreg</c> (128·40 + 256·232 ≤ 65536).</summary>
    public const int ProducerRegisters = 40, ConsumerRegisters = 232;

    /// <summary>
    /// The narrow tiles' width: 128 × 192 tiles (wgmma n192, 96 accumulators per thread), for products whose n leaves
    /// the last wave of 128 × 256 tiles partly empty (n = 768: 192 tiles of 256 fill 1.45 waves of 132
    /// multiprocessors, 256 tiles of 192 fill 1.94).
    /// </summary>
    public const int NarrowTileN = 192;

    /// <summary>Dynamic shared memory per block: the stages, a full and an empty mbarrier per stage, 1 KiB to align them.</summary>
    public static readonly int SharedBytes = SharedBytesFor(GemmPtx.TileN);

    /// <summary><see cref="SharedBytes"/> of the module with tiles <paramref name="tileN"/> wide.</summary>
    public static int SharedBytesFor(int tileN) => GemmPtx.SharedBytes(Stages, tileN) + 16 * Stages;

    private static readonly Lazy<string> _module = new(() => ModuleText(GemmPtx.TileN)), _narrow = new(() => ModuleText(NarrowTileN));

    private static string Prefix(int tileN) => tileN == GemmPtx.TileN ? "hft_wgmma_ws_bf16" : $"hft_wgmma_ws{tileN}_bf16";

    private static string ModuleText(int tileN) => GemmPtx.Module("8.0", "sm_90a", Prefix(tileN),
        [".reg .pred %p_lead, %p_ready, %p_part, %p_sw, %p_rope", ".reg .f32 %e<32>"],
        TensorMaps, (e, aKMajor, bKMajor) => Entry(e, aKMajor, bKMajor, tileN), Threads, Scalars, Pointers);

    /// <summary>
    /// The u32 parameter after <see cref="PartStarts"/>: the positions a <see cref="GemmStore.WriteBf16Rope"/> launch's
    /// tables hold (a row whose position lies outside is stored unrotated).
    /// </summary>
    public const string RopeMax = "p_rope_max";

    /// <summary>
    /// The u64 parameters after <see cref="SwiGluOutputs"/>: a <see cref="GemmStore.WriteBf16Rope"/> launch's positions
    /// (i32, one per row of c) and its cos and sin tables ([positions, 32] f32: head dimension 64).
    /// </summary>
    public static readonly string[] RopeTables = ["p_rope_pos", "p_rope_cos", "p_rope_sin"];

    /// <summary>
    /// The first u64 parameters after <see cref="Scalars"/>: where a <see cref="GemmStore.SwiGlu"/> launch writes up and h
    /// (gate goes to c). In that mode b is read from two maps, W_gate's (p_tmap_b) and W_up's (p_tmap_b1), each in boxes
    /// of half a tile's rows: tile column block j of the launch's 2f columns holds features j·tileN/2 .. of both.
    /// </summary>
    public static readonly string[] SwiGluOutputs = ["p_c_up", "p_c_h"];

    /// <summary>
    /// The most products one launch sums (<see cref="PartStarts"/>): c (+)= Σ op(aᵢ)·op(bᵢ), k running through the
    /// parts' k one after the other (part i's first k step reads part i's maps), so that a sum of products with the
    /// same m and n (an input gradient through several weight matrices) takes one launch and one accumulator.
    /// </summary>
    public const int MaxParts = 3;

    /// <summary>
    /// The u32 parameters after <see cref="GemmPtx.Parameters"/>: where parts 1 and 2 start in the concatenated k (a
    /// multiple of 64; <see cref="NoPart"/> where the launch has fewer parts).
    /// </summary>
    public static readonly string[] PartStarts = ["p_k1", "p_k2"];

    /// <summary>The start of a part the launch does not have (no k coordinate reaches it).</summary>
    public const uint NoPart = uint.MaxValue;

    /// <summary>The u32 parameters after <see cref="GemmPtx.Parameters"/>, in order (after the arrays they hold: static fields start in text order).</summary>
    public static readonly string[] Scalars = [.. PartStarts, RopeMax];

    /// <summary>The u64 parameters after <see cref="Scalars"/>, in order.</summary>
    public static readonly string[] Pointers = [.. SwiGluOutputs, .. RopeTables];

    /// <summary>The tensor-map parameters, after <see cref="Pointers"/>: a's and b's of part 0, then of parts 1 and 2 (a SwiGLU launch: W_up's as part 1's b).</summary>
    public static readonly string[] TensorMaps = [WgmmaGemmPtx.TensorMapA, WgmmaGemmPtx.TensorMapB, "p_tmap_a1", "p_tmap_b1", "p_tmap_a2", "p_tmap_b2"];

    /// <summary>The module's PTX text; its entries take <see cref="Scalars"/>, <see cref="Pointers"/> and <see cref="TensorMaps"/> after <see cref="GemmPtx.Parameters"/>.</summary>
    public static string Module => _module.Value;

    /// <summary>The same module with tiles of 128 × <see cref="NarrowTileN"/>.</summary>
    public static string NarrowModule => _narrow.Value;

    /// <summary>The entry of a form (transA: a is [k, m]; transB: b is [n, k]); the TT form has none.</summary>
    public static string EntryOf(bool transA, bool transB) => GemmPtx.EntryOf(Prefix(GemmPtx.TileN), transA, transB);

    /// <summary>The entry of a form in <see cref="NarrowModule"/>.</summary>
    public static string NarrowEntryOf(bool transA, bool transB) => GemmPtx.EntryOf(Prefix(NarrowTileN), transA, transB);

    // Registers besides GemmPtx's and WgmmaGemmPtx's TMA ones: u32 47 the full mbarriers (8 bytes per stage after the
    // stages), 52 the empty ones (after the full ones), 48 the mbarrier of the current step, 29 its parity; 53 the
    // current tile, 54 the launch's tiles (tilesM · tilesN · k slices), 55 the k step within the tile, 56 the grid,
    // 57 where a load's candidate part starts, 59 where its part starts; the SwiGLU and RoPE stores use u64 9 .. 22 and
    // f32 %e0 .. %e21 as they please (the wgmma descriptors and the producer's maps are dead by then).

    private static void Entry(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, int tileN)
    {
        GemmPtx.Setup(e, Stages, tileN, tile: false);
        // The tiles: tilesM · tilesN · ⌈k / kPer⌉.
        e.Ins("add.u32 %u54, %u7, %u11");
        e.Ins("sub.u32 %u54, %u54, 1");
        e.Ins("div.u32 %u54, %u54, %u11");
        e.Ins("mul.lo.u32 %u54, %u54, %u9");
        e.Ins("mul.lo.u32 %u54, %u54, %u10");
        e.Ins("mov.u32 %u56, %nctaid.x");
        e.Ins($"add.u32 %u47, %u22, {Stages * (GemmPtx.StageBytesA + GemmPtx.StageBytesBFor(tileN))}");
        e.Ins($"add.u32 %u52, %u47, {8 * Stages}");
        WgmmaGemmPtx.TensorMapAddresses(e);
        // Thread 0 initialises the mbarriers (full: one arrival, the producer's, plus the bytes; empty: one arrival per
        // consumer warpgroup) before the block splits.
        e.Ins("setp.eq.u32 %p_lead, %u0, 0");
        string initialised = e.NewLabel("INIT"), consumer = e.NewLabel("CONSUMER");
        e.Ins($"@!%p_lead bra {initialised}");
        for (int s = 0; s < Stages; s++)
        {
            e.Ins($"mbarrier.init.shared::cta.b64 [%u47+{8 * s}], 1");
            e.Ins($"mbarrier.init.shared::cta.b64 [%u52+{8 * s}], 2");
        }
        e.Ins("fence.mbarrier_init.release.cluster");
        e.Line(initialised + ":");
        e.Ins("bar.sync 0");
        e.Ins("setp.ne.u32 %p_r, %u1, 0");
        e.Ins($"@%p_r bra {consumer}");
        Producer(e, aKMajor, bKMajor, tileN);
        e.Line(consumer + ":");
        Consumer(e, aKMajor, bKMajor, tileN);
    }

    /// <summary>
    /// Warpgroup 0: fewer registers, then its first thread alone, for each of the block's tiles and each of its k steps
    /// (load step kl counted across tiles): waits until the stage is empty (the consumers retired load step kl − 4;
    /// parity (kl / 4 + 1) mod 2, which a fresh mbarrier passes at once), and issues the step's copies; the other
    /// threads leave.
    /// </summary>
    private static void Producer(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, int tileN)
    {
        e.Ins($"setmaxnreg.dec.sync.aligned.u32 {ProducerRegisters}");
        e.Ins("@!%p_lead ret");
        e.Ins("mov.u32 %u21, 0");
        e.Ins("mov.u32 %u53, %ctaid.x");
        string tile = e.NewLabel("PRODUCE_TILE"), loop = e.NewLabel("PRODUCE"), next = e.NewLabel("PRODUCED_TILE"), done = e.NewLabel("PRODUCED");
        e.Line(tile + ":");
        e.Ins("setp.ge.u32 %p_done, %u53, %u54");
        e.Ins($"@%p_done bra {done}");
        GemmPtx.TileOf(e, "%u53", tileN);
        e.Ins("mov.u32 %u55, 0");
        e.Line(loop + ":");
        e.Ins("setp.ge.u32 %p_done, %u55, %u19");
        e.Ins($"@%p_done bra {next}");
        WgmmaGemmPtx.WaitStage(e, "%u52", "%u21", parityOffset: 1);
        WgmmaGemmPtx.TmaLoads(e, aKMajor, bKMajor, tileN, kStep: "%u55", parts: true, swiGluPairs: bKMajor);
        e.Ins("add.u32 %u21, %u21, 1");
        e.Ins("add.u32 %u55, %u55, 1");
        e.Ins($"bra.uni {loop}");
        e.Line(next + ":");
        e.Ins("add.u32 %u53, %u53, %u56");
        e.Ins($"bra.uni {tile}");
        e.Line(done + ":");
        e.Ins("ret");
    }

    /// <summary>
    /// Warpgroups 1 and 2 (as warpgroups 0 and 1 of the tile's rows): more registers, then for each of the block's
    /// tiles: zeroed accumulators, then per k step (kt counted across tiles): wait until its stage is full (parity
    /// kt / 4 mod 2), the four wgmma, and once step kt − 1's group is retired (<c>wgmma.wait_group 1</c>), the
    /// warpgroup's first thread releases step kt − 1's stage (not at a tile's first step: the tile before released its
    /// last one); after the last step, <c>wait_group 0</c>, the release of its stage, and the stores.
    /// </summary>
    private static void Consumer(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, int tileN)
    {
        e.Ins($"setmaxnreg.inc.sync.aligned.u32 {ConsumerRegisters}");
        e.Ins("sub.u32 %u1, %u1, 1");
        e.Ins("and.b32 %u27, %u0, 127");
        e.Ins("setp.eq.u32 %p_lead, %u27, 0");
        e.Ins("mov.u32 %u20, 0");
        e.Ins("mov.u32 %u53, %ctaid.x");
        string tile = e.NewLabel("TILE"), loop = e.NewLabel("LOOP"), done = e.NewLabel("DONE"), kept = e.NewLabel("KEPT"),
            stored = e.NewLabel("STORED"), exit = e.NewLabel("EXIT");
        e.Line(tile + ":");
        e.Ins("setp.ge.u32 %p_done, %u53, %u54");
        e.Ins($"@%p_done bra {exit}");
        GemmPtx.TileOf(e, "%u53", tileN);
        GemmPtx.ZeroAccumulators(e, steps: false);
        e.Ins("mov.u32 %u55, 0");
        e.Line(loop + ":");
        e.Ins("setp.ge.u32 %p_done, %u55, %u19");
        e.Ins($"@%p_done bra {done}");
        WgmmaGemmPtx.WaitStage(e, "%u47", "%u20");
        WgmmaGemmPtx.Multiply(e, aKMajor, bKMajor, tileN);
        e.Ins("wgmma.wait_group.sync.aligned 1");
        // Step kt − 1's wgmma is retired in this warpgroup: its stage may take new copies once both have said so.
        e.Ins("setp.ne.u32 %p_r, %u55, 0");
        ReleasePreviousStage(e, kept);
        e.Ins("add.u32 %u20, %u20, 1");
        e.Ins("add.u32 %u55, %u55, 1");
        e.Ins($"bra.uni {loop}");
        e.Line(done + ":");
        e.Ins("wgmma.wait_group.sync.aligned 0");
        // The tile's last stage is free before its stores: the producer goes on with the next tile meanwhile.
        e.Ins("setp.ne.u32 %p_r, %u55, 0");
        ReleasePreviousStage(e, e.NewLabel("KEPT_LAST"));
        string swiglu = e.NewLabel("SWIGLU"), rope = e.NewLabel("ROPE");
        e.Ins($"setp.eq.u32 %p_sw, %u8, {(int)GemmStore.SwiGlu}");
        e.Ins($"@%p_sw bra {swiglu}");
        e.Ins($"setp.eq.u32 %p_rope, %u8, {(int)GemmStore.WriteBf16Rope}");
        e.Ins($"@%p_rope bra {rope}");
        WgmmaGemmPtx.Stores(e, tileN, next: stored);
        e.Line(swiglu + ":");
        SwiGluStores(e, tileN, stored);
        e.Line(rope + ":");
        RopeStores(e, tileN, stored);
        e.Line(stored + ":");
        e.Ins("add.u32 %u53, %u53, %u56");
        e.Ins($"bra.uni {tile}");
        e.Line(exit + ":");
        e.Ins("ret");
    }

    /// <summary>
    /// The stores of a <see cref="GemmStore.SwiGlu"/> tile: its first tileN/2 columns are gate, its last up, of features
    /// n0/2 .. n0/2 + tileN/2 of outputs f = n/2 wide. Per row (g and g + 8 of the thread's 16, m-bounded) and n8 block j
    /// of the first half: gate and up rounded to bf16 pairs and stored at c and p_c_up, and h = g·σ(g)·u of the
    /// rounded values (σ by <c>ex2.approx.ftz</c> and <c>rcp.approx.ftz</c>, as the ILGPU SwiGLU kernels compute it)
    /// rounded and stored at p_c_h; then <paramref name="next"/>. (f a multiple of tileN/2: no column is ragged.)
    /// </summary>
    private static void SwiGluStores(GemmPtx.Emitter e, int tileN, string next)
    {
        int half = tileN / 2, blocks = half / 8;
        // This thread's first row (m0 + the tile's) and first feature (n0/2 + 2t).
        WgmmaGemmPtx.ThreadOrigin(e);
        e.Ins("add.u32 %u27, %u27, %u16");
        e.Ins("shr.u32 %u29, %u17, 1");
        e.Ins("add.u32 %u28, %u28, %u29");
        e.Ins("setp.lt.u32 %pr0, %u27, %u5");
        e.Ins("add.u32 %u29, %u27, 8");
        e.Ins("setp.lt.u32 %pr1, %u29, %u5");
        // Byte offset of the first pair, row · f + feature (f = n / 2), and of 8 rows.
        e.Ins("shr.u32 %u30, %u6, 1");
        e.Ins("mul.wide.u32 %q21, %u27, %u30");
        e.Ins("cvt.u64.u32 %q22, %u28");
        e.Ins("add.u64 %q21, %q21, %q22");
        e.Ins("shl.b64 %q21, %q21, 1");
        e.Ins("mul.wide.u32 %q22, %u30, 16");
        e.Ins("add.u64 %q9, %q0, %q21");
        GlobalPointers(e, SwiGluOutputs);
        e.Ins("add.u64 %q11, %q19, %q21");
        e.Ins("add.u64 %q15, %q20, %q21");
        e.Ins("add.u64 %q10, %q9, %q22");
        e.Ins("add.u64 %q12, %q11, %q22");
        e.Ins("add.u64 %q16, %q15, %q22");
        for (int j = 0; j < blocks; j++)
            for (int row = 0; row < 2; row++)
            {
                int g = 4 * j + 2 * row, u = 4 * (j + blocks) + 2 * row, off = 16 * j;
                string guard = $"@%pr{row} ";
                string gate = row == 0 ? "%q9" : "%q10", up = row == 0 ? "%q11" : "%q12", h = row == 0 ? "%q15" : "%q16";
                e.Ins($"cvt.rn.bf16x2.f32 %u31, %d{g + 1}, %d{g}");
                e.Ins($"cvt.rn.bf16x2.f32 %u32, %d{u + 1}, %d{u}");
                e.Ins($"{guard}st.global.b32 [{gate}+{off}], %u31");
                e.Ins($"{guard}st.global.b32 [{up}+{off}], %u32");
                // The rounded values widened: the low half is the first column's.
                for (int x = 0; x < 2; x++)
                {
                    string src = x == 0 ? "%u31" : "%u32";
                    e.Ins($"shl.b32 %u33, {src}, 16");
                    e.Ins($"mov.b32 %e{2 * x}, %u33");
                    e.Ins($"and.b32 %u33, {src}, -65536");
                    e.Ins($"mov.b32 %e{2 * x + 1}, %u33");
                }
                for (int c = 0; c < 2; c++)
                {
                    // σ(g) = 1 / (1 + 2^(−g·log2 e)); h = (g·σ)·u.
                    e.Ins($"mul.f32 %e{4 + c}, %e{c}, 0fBFB8AA3B");
                    e.Ins($"ex2.approx.ftz.f32 %e{4 + c}, %e{4 + c}");
                    e.Ins($"add.f32 %e{4 + c}, %e{4 + c}, 0f3F800000");
                    e.Ins($"rcp.approx.ftz.f32 %e{4 + c}, %e{4 + c}");
                    e.Ins($"mul.f32 %e{4 + c}, %e{c}, %e{4 + c}");
                    e.Ins($"mul.f32 %e{4 + c}, %e{4 + c}, %e{2 + c}");
                }
                e.Ins("cvt.rn.bf16x2.f32 %u31, %e5, %e4");
                e.Ins($"{guard}st.global.b32 [{h}+{off}], %u31");
            }
        e.Ins($"bra.uni {next}");
    }

    /// <summary>
    /// The stores of a <see cref="GemmStore.WriteBf16Rope"/> tile: each 64-wide head of the tile (n a multiple of 64)
    /// rotated by RoPE as the ILGPU RoPE kernels rotate (columns i and i + 32: y₁ = x₁·cos − x₂·sin, y₂ = x₂·cos +
    /// x₁·sin, the angles of the row's position, column i of its table row), from the fp32 accumulators, rounded to
    /// bf16 pairs and stored; a row whose position lies outside the tables is stored unrotated. Rows g and g + 8 one
    /// after the other: the row's 16 table values (its 8 columns i of the thread, as pairs) loaded together, then every
    /// head's pairs; then <paramref name="next"/>.
    /// </summary>
    private static void RopeStores(GemmPtx.Emitter e, int tileN, string next)
    {
        WgmmaGemmPtx.ThreadOrigin(e);
        e.Ins("add.u32 %u27, %u27, %u16");
        GlobalPointers(e, RopeTables);
        e.Ins($"ld.param.u32 %u30, [{RopeMax}]");
        // The first pair of row g: c + 2·(row·n + n0 + 2t); 8 rows further: + 16·n.
        e.Ins("mul.wide.u32 %q9, %u27, %u6");
        e.Ins("add.u32 %u29, %u17, %u28");
        e.Ins("cvt.u64.u32 %q10, %u29");
        e.Ins("add.u64 %q9, %q9, %q10");
        e.Ins("shl.b64 %q9, %q9, 1");
        e.Ins("add.u64 %q9, %q0, %q9");
        e.Ins("mul.wide.u32 %q10, %u6, 16");
        int heads = tileN / 64;
        for (int row = 0; row < 2; row++)
        {
            // The row inside c (%pr0), its position inside the tables (%pc0; negative ones too, as unsigned).
            e.Ins(row == 0 ? "mov.u32 %u29, %u27" : "add.u32 %u29, %u27, 8");
            e.Ins("setp.lt.u32 %pr0, %u29, %u5");
            e.Ins("mov.u32 %u31, 0");
            e.Ins("mul.wide.u32 %q11, %u29, 4");
            e.Ins("add.u64 %q11, %q19, %q11");
            e.Ins("@%pr0 ld.global.u32 %u31, [%q11]");
            e.Ins("setp.lt.u32 %pc0, %u31, %u30");
            e.Ins("selp.u32 %u31, %u31, 0, %pc0");
            // Table row: (position · 32 + 2t) floats.
            e.Ins("shl.b32 %u32, %u31, 5");
            e.Ins("add.u32 %u32, %u32, %u28");
            e.Ins("mul.wide.u32 %q12, %u32, 4");
            e.Ins("add.u64 %q13, %q20, %q12");
            e.Ins("add.u64 %q14, %q21, %q12");
            for (int jj = 0; jj < 4; jj++)
            {
                e.Ins($"ld.global.v2.f32 {{%e{4 * jj}, %e{4 * jj + 1}}}, [%q13+{32 * jj}]");
                e.Ins($"ld.global.v2.f32 {{%e{4 * jj + 2}, %e{4 * jj + 3}}}, [%q14+{32 * jj}]");
            }
            string at = row == 0 ? "%q9" : "%q15";
            if (row == 1) e.Ins("add.u64 %q15, %q9, %q10");
            for (int h = 0; h < heads; h++)
            {
                // The head inside c (n0 + 64h below n) and the row inside c.
                e.Ins($"add.u32 %u29, %u17, {64 * h}");
                e.Ins("setp.lt.u32 %p_v, %u29, %u6");
                e.Ins("and.pred %p_v, %p_v, %pr0");
                for (int jj = 0; jj < 4; jj++)
                {
                    int j1 = 8 * h + jj, j2 = j1 + 4, x1 = 4 * j1 + 2 * row, x2 = 4 * j2 + 2 * row;
                    for (int c = 0; c < 2; c++)
                    {
                        string cos = $"%e{4 * jj + c}", sin = $"%e{4 * jj + 2 + c}";
                        e.Ins($"mul.f32 %e16, %d{x1 + c}, {cos}");
                        e.Ins($"mul.f32 %e17, %d{x2 + c}, {sin}");
                        e.Ins($"sub.f32 %e{18 + c}, %e16, %e17");
                        e.Ins($"mul.f32 %e16, %d{x2 + c}, {cos}");
                        e.Ins($"mul.f32 %e17, %d{x1 + c}, {sin}");
                        e.Ins($"add.f32 %e{20 + c}, %e16, %e17");
                        e.Ins($"selp.f32 %e{18 + c}, %e{18 + c}, %d{x1 + c}, %pc0");
                        e.Ins($"selp.f32 %e{20 + c}, %e{20 + c}, %d{x2 + c}, %pc0");
                    }
                    e.Ins("cvt.rn.bf16x2.f32 %u33, %e19, %e18");
                    e.Ins($"@%p_v st.global.b32 [{at}+{16 * j1}], %u33");
                    e.Ins("cvt.rn.bf16x2.f32 %u33, %e21, %e20");
                    e.Ins($"@%p_v st.global.b32 [{at}+{16 * j2}], %u33");
                }
            }
        }
        e.Ins($"bra.uni {next}");
    }

    /// <summary>The global addresses in the u64 parameters <paramref name="names"/>, into u64 19, 20, ….</summary>
    private static void GlobalPointers(GemmPtx.Emitter e, string[] names)
    {
        for (int i = 0; i < names.Length; i++)
        {
            e.Ins($"ld.param.u64 %q{19 + i}, [{names[i]}]");
            e.Ins($"cvta.to.global.u64 %q{19 + i}, %q{19 + i}");
        }
    }

    /// <summary>Where %p_r holds, the warpgroup's first thread arrives on the empty mbarrier of step kt − 1's stage; then <paramref name="kept"/>.</summary>
    private static void ReleasePreviousStage(GemmPtx.Emitter e, string kept)
    {
        e.Ins("and.pred %p_r, %p_r, %p_lead");
        e.Ins($"@!%p_r bra {kept}");
        e.Ins("sub.u32 %u30, %u20, 1");
        WgmmaGemmPtx.StageBarrier(e, "%u48", "%u52", "%u30");
        e.Ins("mbarrier.arrive.shared::cta.b64 _, [%u48]");
        e.Line(kept + ":");
    }
}
