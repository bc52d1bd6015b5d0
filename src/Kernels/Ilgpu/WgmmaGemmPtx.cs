using System.Globalization;
using System.Text;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The PTX (sm_90a) of the wgmma bf16 GEMM: c[m, n] (+)= op(a)·op(b), bf16 operands, fp32 accumulation and output, for
/// the three forms of training: NT (a [m, k], b [n, k]: Y = X·Wᵀ), NN (a [m, k], b [k, n]: dX = dY·W) and TN (a [k, m],
/// b [k, n]: dW += dYᵀ·X). ILGPU's PTX generator stops at sm_80, so this module is written here as text and loaded
/// through ILGPU's CUDA driver API (see <see cref="WgmmaGemm"/>); the tests run it through a PTX interpreter and
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
/// Shared layouts are CUTLASS's canonical 128-byte-swizzled ones (16-byte chunk c of a 128-byte row r at chunk
/// c ^ (r mod 8), atoms of 8 rows × 128 bytes on 1 KiB boundaries). A k-contiguous (K-major) operand is stored as rows
/// of its 64 k (128 bytes; descriptor stride between 8-row groups 1024 B; the k16 slices start 32 bytes apart). An
/// m- or n-contiguous (MN-major, transposed in the wgmma) operand is stored as blocks of 64 m or n: block j, k row r at
/// 8192·j + 128·r (leading byte offset 8192 between the blocks, stride byte offset 1024 between 8-k groups; k16
/// slices 2048 bytes apart).
/// </para>
/// <para>
/// Split k: block z of a launch with several k slices covers k from z·kPer and writes its tile at c + z·slice (the
/// caller then sums the slices). C is written, or with acc ≠ 0 added to, as 8-byte pairs straight from the
/// accumulators (warp v of warpgroup w holds rows 64w + 16v + g and + 8, columns 8j + 2t of each n8 block j).
/// Preconditions (checked by the caller): m a multiple of 128, n of 256, k of 64, a and b on 16 bytes, c on 8.
/// </para>
/// </remarks>
public static class WgmmaGemmPtx
{
    /// <summary>Tile of c per block (rows, columns), k step, pipeline stages and threads per block.</summary>
    public const int TileM = 128, TileN = 256, TileK = 64, Stages = 4, Threads = 256;

    /// <summary>Bytes of one stage of a and of b.</summary>
    public const int StageBytesA = TileM * TileK * 2, StageBytesB = TileN * TileK * 2;

    /// <summary>Dynamic shared memory per block: the stages plus 1 KiB to align them.</summary>
    public const int SharedBytes = 1024 + Stages * (StageBytesA + StageBytesB);

    /// <summary>The entry names of the three forms.</summary>
    public const string EntryNT = "hft_wgmma_bf16_nt", EntryNN = "hft_wgmma_bf16_nn", EntryTN = "hft_wgmma_bf16_tn";

    /// <summary>
    /// The parameters of every entry, in order: c, a, b (u64), m, n, k, acc, tilesM, tilesN, kPer, slice, and the
    /// constant bits of the a and b descriptors, low and high words (u32; see <see cref="DescriptorBits"/>), and the
    /// tile rows per band of the blocks' order (u32; <see cref="Group"/>).
    /// </summary>
    public static readonly string[] Parameters = ["p_c", "p_a", "p_b", "p_m", "p_n", "p_k", "p_acc", "p_tiles_m", "p_tiles_n", "p_kper", "p_slice",
        "p_desc_a_lo", "p_desc_a_hi", "p_desc_b_lo", "p_desc_b_hi", "p_group"];

    /// <summary>Tile rows per band of the blocks' order (see <c>p_group</c>): 16 covers the 134M model's loss-chunk rows (2048) in one band.</summary>
    public const int Group = 16;

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

    private static readonly Lazy<string> _module = new(Build);

    /// <summary>The module's PTX text.</summary>
    public static string Module => _module.Value;

    /// <summary>The entry of a form (transA: a is [k, m]; transB: b is [k, n]); the TT form has none.</summary>
    public static string EntryOf(bool transA, bool transB) => (transA, transB) switch
    {
        (false, true) => EntryNT,
        (false, false) => EntryNN,
        (true, false) => EntryTN,
        _ => throw new ArgumentException("the wgmma GEMM has no TT form"),
    };

    private static string Build()
    {
        var e = new Emitter();
        e.Line(".version 8.0");
        e.Line(".target sm_90a");
        e.Line(".address_size 64");
        e.Line("");
        e.Line(".extern .shared .align 1024 .b8 hft_wgmma_smem[];");
        Entry(e, EntryNT, aKMajor: true, bKMajor: true);
        Entry(e, EntryNN, aKMajor: true, bKMajor: false);
        Entry(e, EntryTN, aKMajor: false, bKMajor: false);
        return e.ToString();
    }

    private static void Entry(Emitter e, string name, bool aKMajor, bool bKMajor)
    {
        e.Line("");
        e.Line($".visible .entry {name}(");
        e.Line(string.Join(",\n", Parameters.Select((p, i) => $"\t.param .{(i < 3 ? "u64" : "u32")} {p}")));
        e.Line(")");
        e.Line($".maxntid {Threads}, 1, 1");
        e.Line("{");
        e.Ins(".reg .pred %p_done, %p_load, %p_acc, %p_one");
        e.Ins(".reg .b32 %u<48>");
        e.Ins(".reg .b64 %q<24>");
        e.Ins(".reg .f32 %d<128>");
        e.Ins(".reg .f32 %f<2>");
        Prologue(e, aKMajor, bKMajor);
        MainLoop(e, aKMajor, bKMajor);
        Epilogue(e);
        e.Line("}");
    }

    // Registers (u32): 0 tid, 1 wg, 2 warp in wg, 3 g, 4 t, 5 m, 6 n, 7 k, 8 acc, 9 tilesM, 10 tilesN, 11 kPer, 12 slice,
    // 13 tn, 14 tm, 15 z, 16 m0, 17 n0, 18 kBegin, 19 steps, 20 kt (compute step), 21 kl (load step), 22 smem (aligned),
    // 23 shared a base, 24 shared b base, 25 a offset of this thread's chunks, 26 b offset, 27..35 temporaries,
    // 36 a descriptor high word, 37 a descriptor low, 38 b descriptor low, 39 a descriptor low constant bits, 40 b's,
    // 41 b descriptor high word, 42 group, 43..46 temporaries of the tile order.
    // Registers (u64): 0 c, 1 a, 2 b, 3 next a chunk, 4 next b chunk, 5 a stride between a thread's chunks, 6 b's,
    // 7 a step (one k step), 8 b step, 9..12 temporaries, 13 a descriptor, 14 b descriptor, 15 c row g, 16 c row g + 8.
    private static void Prologue(Emitter e, bool aKMajor, bool bKMajor)
    {
        for (int i = 0; i < 3; i++)
        {
            e.Ins($"ld.param.u64 %q{i}, [{Parameters[i]}]");
            e.Ins($"cvta.to.global.u64 %q{i}, %q{i}");
        }
        for (int i = 3; i < 11; i++) e.Ins($"ld.param.u32 %u{i + 2}, [{Parameters[i]}]");
        e.Ins("ld.param.u32 %u39, [p_desc_a_lo]");
        e.Ins("ld.param.u32 %u36, [p_desc_a_hi]");
        e.Ins("ld.param.u32 %u40, [p_desc_b_lo]");
        e.Ins("ld.param.u32 %u41, [p_desc_b_hi]");
        e.Ins("ld.param.u32 %u42, [p_group]");
        e.Ins("mov.u32 %u0, %tid.x");
        e.Ins("shr.u32 %u1, %u0, 7");
        e.Ins("shr.u32 %u2, %u0, 5");
        e.Ins("and.b32 %u2, %u2, 3");
        e.Ins("and.b32 %u27, %u0, 31");
        e.Ins("shr.u32 %u3, %u27, 2");
        e.Ins("and.b32 %u4, %u27, 3");
        // Tile and k slice of this block: z slowest; within a slice, bands of `group` tile rows, each covered column
        // by column (tm fastest), so that the blocks running together share their b tiles and few rows of a.
        e.Ins("mov.u32 %u27, %ctaid.x");
        e.Ins("mul.lo.u32 %u43, %u9, %u10");
        e.Ins("div.u32 %u15, %u27, %u43");
        e.Ins("rem.u32 %u27, %u27, %u43");
        e.Ins("mul.lo.u32 %u44, %u42, %u10");
        e.Ins("div.u32 %u45, %u27, %u44");
        e.Ins("rem.u32 %u27, %u27, %u44");
        e.Ins("mul.lo.u32 %u46, %u45, %u42");
        e.Ins("sub.u32 %u43, %u9, %u46");
        e.Ins("min.u32 %u43, %u43, %u42");
        e.Ins("rem.u32 %u14, %u27, %u43");
        e.Ins("add.u32 %u14, %u14, %u46");
        e.Ins("div.u32 %u13, %u27, %u43");
        e.Ins($"mul.lo.u32 %u16, %u14, {TileM}");
        e.Ins($"mul.lo.u32 %u17, %u13, {TileN}");
        e.Ins("mul.lo.u32 %u18, %u15, %u11");
        e.Ins("add.u32 %u27, %u18, %u11");
        e.Ins("min.u32 %u27, %u27, %u7");
        e.Ins("sub.u32 %u19, %u27, %u18");
        e.Ins("shr.u32 %u19, %u19, 6");
        e.Ins("setp.ne.u32 %p_acc, %u8, 0");
        e.Ins("setp.eq.u32 %p_one, %u0, %u0");
        // Shared memory: aligned to 1 KiB, then the a stages, then the b stages.
        e.Ins("mov.u32 %u22, hft_wgmma_smem");
        e.Ins("add.u32 %u22, %u22, 1023");
        e.Ins("and.b32 %u22, %u22, -1024");
        e.Ins("mov.u32 %u23, %u22");
        e.Ins($"add.u32 %u24, %u22, {Stages * StageBytesA}");
        OperandPlan(e, isA: true, kMajor: aKMajor);
        OperandPlan(e, isA: false, kMajor: bKMajor);
        for (int i = 0; i < 128; i++) e.Ins($"mov.f32 %d{i}, 0f00000000");
        e.Ins("mov.u32 %u20, 0");
        e.Ins("mov.u32 %u21, 0");
        for (int s = 0; s < Stages - 2; s++) Issue(e, aKMajor, bKMajor);
    }

    /// <summary>
    /// This thread's chunks of one operand: the global address of its first chunk at kBegin, the stride between its
    /// chunks and the step per k step (u64 registers 3/5/7 for a, 4/6/8 for b), and their offset in a stage (u32 25/26).
    /// </summary>
    private static void OperandPlan(Emitter e, bool isA, bool kMajor)
    {
        int next = isA ? 3 : 4, stride = isA ? 5 : 6, step = isA ? 7 : 8, off = isA ? 25 : 26, baseReg = isA ? 1 : 2;
        string origin = isA ? "%u16" : "%u17", rowLength = isA ? "%u5" : "%u6"; // m0 or n0; m or n (MN-major rows)
        if (kMajor)
        {
            // Row tid / 8 (+ 32 i) of the tile, chunk tid mod 8 of its 64 k: (origin + row)·k + kBegin + 8·chunk.
            e.Ins("shr.u32 %u28, %u0, 3");
            e.Ins("and.b32 %u29, %u0, 7");
            e.Ins($"add.u32 %u30, {origin}, %u28");
            e.Ins($"mul.wide.u32 %q9, %u30, %u7");
            e.Ins("shl.b32 %u31, %u29, 3");
            e.Ins("add.u32 %u31, %u31, %u18");
            e.Ins("cvt.u64.u32 %q10, %u31");
            e.Ins("add.u64 %q9, %q9, %q10");
            e.Ins("shl.b64 %q9, %q9, 1");
            e.Ins($"add.u64 %q{next}, %q{baseReg}, %q9");
            e.Ins($"mul.wide.u32 %q{stride}, %u7, 64");
            e.Ins($"mov.u64 %q{step}, 128");
            // Shared: row·128 + ((chunk ^ row mod 8) << 4).
            e.Ins("and.b32 %u30, %u28, 7");
            e.Ins("xor.b32 %u30, %u30, %u29");
            e.Ins("shl.b32 %u30, %u30, 4");
            e.Ins("shl.b32 %u31, %u28, 7");
            e.Ins($"add.u32 %u{off}, %u31, %u30");
            return;
        }
        // k row r (+ rows per pass · i) of the tile, chunk c of its (64 or 256)-wide row: (kBegin + r)·rowLength +
        // origin + 8·c; a has 16 chunks a row (r = tid / 16), b 32 (r = tid / 32).
        int chunkBits = isA ? 4 : 5;
        e.Ins($"shr.u32 %u28, %u0, {chunkBits}");
        e.Ins($"and.b32 %u29, %u0, {(1 << chunkBits) - 1}");
        e.Ins("add.u32 %u30, %u18, %u28");
        e.Ins($"mul.wide.u32 %q9, %u30, {rowLength}");
        e.Ins("shl.b32 %u31, %u29, 3");
        e.Ins($"add.u32 %u31, %u31, {origin}");
        e.Ins("cvt.u64.u32 %q10, %u31");
        e.Ins("add.u64 %q9, %q9, %q10");
        e.Ins("shl.b64 %q9, %q9, 1");
        e.Ins($"add.u64 %q{next}, %q{baseReg}, %q9");
        int rowsPerPass = Threads >> chunkBits;
        e.Ins($"mul.wide.u32 %q{stride}, {rowLength}, {rowsPerPass * 2}");
        e.Ins($"mul.wide.u32 %q{step}, {rowLength}, {TileK * 2}");
        // Shared: block (c / 8)·8192 + r·128 + ((c mod 8 ^ r mod 8) << 4).
        e.Ins("shr.u32 %u30, %u29, 3");
        e.Ins("shl.b32 %u30, %u30, 13");
        e.Ins("shl.b32 %u31, %u28, 7");
        e.Ins("add.u32 %u30, %u30, %u31");
        e.Ins("and.b32 %u31, %u29, 7");
        e.Ins("and.b32 %u32, %u28, 7");
        e.Ins("xor.b32 %u31, %u31, %u32");
        e.Ins("shl.b32 %u31, %u31, 4");
        e.Ins($"add.u32 %u{off}, %u30, %u31");
    }

    /// <summary>
    /// Issues the copies of load step kl into stage kl mod 4 when kl is below the step count, commits a group either
    /// way (so that group i is always step i), and advances kl and the global addresses.
    /// </summary>
    private static void Issue(Emitter e, bool aKMajor, bool bKMajor)
    {
        string skip = e.NewLabel("SKIP");
        e.Ins("setp.lt.u32 %p_load, %u21, %u19");
        e.Ins($"@!%p_load bra {skip}");
        e.Ins("and.b32 %u27, %u21, 3");
        e.Ins($"mul.lo.u32 %u28, %u27, {StageBytesA}");
        e.Ins("add.u32 %u28, %u28, %u23");
        e.Ins("add.u32 %u28, %u28, %u25");
        e.Ins($"mul.lo.u32 %u29, %u27, {StageBytesB}");
        e.Ins("add.u32 %u29, %u29, %u24");
        e.Ins("add.u32 %u29, %u29, %u26");
        Copies(e, "%u28", 3, 5, count: 4, sharedStride: aKMajor ? 4096 : 2048);
        Copies(e, "%u29", 4, 6, count: 8, sharedStride: bKMajor ? 4096 : 1024);
        e.Ins("add.u64 %q3, %q3, %q7");
        e.Ins("add.u64 %q4, %q4, %q8");
        e.Line(skip + ":");
        e.Ins("cp.async.commit_group");
        e.Ins("add.u32 %u21, %u21, 1");
    }

    private static void Copies(Emitter e, string shared, int next, int stride, int count, int sharedStride)
    {
        e.Ins($"mov.u64 %q9, %q{next}");
        for (int i = 0; i < count; i++)
        {
            if (i > 0) e.Ins($"add.u64 %q9, %q9, %q{stride}");
            e.Ins($"cp.async.cg.shared.global [{shared}+{i * sharedStride}], [%q9], 16");
        }
    }

    private static void MainLoop(Emitter e, bool aKMajor, bool bKMajor)
    {
        string loop = e.NewLabel("LOOP"), done = e.NewLabel("DONE");
        e.Line(loop + ":");
        e.Ins("setp.ge.u32 %p_done, %u20, %u19");
        e.Ins($"@%p_done bra {done}");
        e.Ins("cp.async.wait_group 1");
        e.Ins("fence.proxy.async.shared::cta");
        e.Ins("bar.sync 0");
        // Descriptors of stage kt mod 4: a at its warpgroup's 64 rows (8192 bytes in either layout), b whole.
        e.Ins("and.b32 %u27, %u20, 3");
        e.Ins($"mul.lo.u32 %u28, %u27, {StageBytesA}");
        e.Ins("add.u32 %u28, %u28, %u23");
        e.Ins("shl.b32 %u29, %u1, 13");
        e.Ins("add.u32 %u28, %u28, %u29");
        e.Ins("shr.u32 %u28, %u28, 4");
        e.Ins("and.b32 %u28, %u28, 16383");
        e.Ins("or.b32 %u37, %u28, %u39");
        e.Ins($"mul.lo.u32 %u28, %u27, {StageBytesB}");
        e.Ins("add.u32 %u28, %u28, %u24");
        e.Ins("shr.u32 %u28, %u28, 4");
        e.Ins("and.b32 %u28, %u28, 16383");
        e.Ins("or.b32 %u38, %u28, %u40");
        e.Ins("wgmma.fence.sync.aligned");
        string acc = string.Join(", ", Enumerable.Range(0, 128).Select(i => "%d" + i));
        for (int kk = 0; kk < TileK / 16; kk++)
        {
            // K-major: the k16 slice starts 32 bytes further; MN-major: 16 k rows (two 8-row atoms) further.
            e.Ins($"add.u32 %u28, %u37, {kk * (aKMajor ? 32 : 2048) >> 4}");
            e.Ins("mov.b64 %q13, {%u28, %u36}");
            e.Ins($"add.u32 %u29, %u38, {kk * (bKMajor ? 32 : 2048) >> 4}");
            e.Ins("mov.b64 %q14, {%u29, %u41}");
            e.Ins($"wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {{{acc}}}, %q13, %q14, %p_one, 1, 1, {(aKMajor ? 0 : 1)}, {(bKMajor ? 0 : 1)}");
        }
        e.Ins("wgmma.commit_group.sync.aligned");
        Issue(e, aKMajor, bKMajor);
        e.Ins("wgmma.wait_group.sync.aligned 1");
        e.Ins("add.u32 %u20, %u20, 1");
        e.Ins($"bra.uni {loop}");
        e.Line(done + ":");
        e.Ins("wgmma.wait_group.sync.aligned 0");
    }

    private static void Epilogue(Emitter e)
    {
        // Row m0 + 64·wg + 16·warp + g, column n0 + 2t; c of this k slice at c + z·slice.
        e.Ins("mul.wide.u32 %q9, %u15, %u12");
        e.Ins("shl.b64 %q9, %q9, 2");
        e.Ins("add.u64 %q9, %q0, %q9");
        e.Ins("shl.b32 %u27, %u1, 6");
        e.Ins("shl.b32 %u28, %u2, 4");
        e.Ins("add.u32 %u27, %u27, %u28");
        e.Ins("add.u32 %u27, %u27, %u3");
        e.Ins("add.u32 %u27, %u27, %u16");
        e.Ins("mul.wide.u32 %q10, %u27, %u6");
        e.Ins("shl.b32 %u28, %u4, 1");
        e.Ins("add.u32 %u28, %u28, %u17");
        e.Ins("cvt.u64.u32 %q11, %u28");
        e.Ins("add.u64 %q10, %q10, %q11");
        e.Ins("shl.b64 %q10, %q10, 2");
        e.Ins("add.u64 %q15, %q9, %q10");
        e.Ins("mul.wide.u32 %q11, %u6, 32");
        e.Ins("add.u64 %q16, %q15, %q11");
        string add = e.NewLabel("ADD"), end = e.NewLabel("END");
        e.Ins($"@%p_acc bra {add}");
        for (int j = 0; j < TileN / 8; j++)
        {
            e.Ins($"st.global.v2.f32 [%q15+{j * 32}], {{%d{4 * j}, %d{4 * j + 1}}}");
            e.Ins($"st.global.v2.f32 [%q16+{j * 32}], {{%d{4 * j + 2}, %d{4 * j + 3}}}");
        }
        e.Ins($"bra.uni {end}");
        e.Line(add + ":");
        for (int j = 0; j < TileN / 8; j++)
            for (int half = 0; half < 2; half++)
            {
                string addr = $"[%q{15 + half}+{j * 32}]";
                e.Ins($"ld.global.v2.f32 {{%f0, %f1}}, {addr}");
                e.Ins($"add.f32 %f0, %f0, %d{4 * j + 2 * half}");
                e.Ins($"add.f32 %f1, %f1, %d{4 * j + 2 * half + 1}");
                e.Ins($"st.global.v2.f32 {addr}, {{%f0, %f1}}");
            }
        e.Line(end + ":");
        e.Ins("ret");
    }

    /// <summary>Collects lines of PTX; instructions get a tab and a semicolon.</summary>
    private sealed class Emitter
    {
        private readonly StringBuilder _sb = new();
        private int _labels;

        public void Line(string s) => _sb.Append(s).Append('\n');

        public void Ins(string s) => _sb.Append('\t').Append(s).Append(";\n");

        public string NewLabel(string stem) => stem + "_" + (_labels++).ToString(CultureInfo.InvariantCulture);

        public override string ToString() => _sb.ToString();
    }
}
