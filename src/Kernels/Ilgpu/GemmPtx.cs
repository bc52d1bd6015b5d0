using System.Globalization;
using System.Text;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// What the bf16 GEMM modules written as PTX text share (<see cref="WgmmaGemmPtx"/> for sm_90a,
/// <see cref="MmaGemmPtx"/> for sm_80 and later): the parameters, the blocks' tile order, the loads of the k steps'
/// tiles into a ring of shared-memory stages by 16-byte <c>cp.async</c>, and the stores of c.
/// </summary>
/// <remarks>
/// <para>
/// A block of 256 threads computes a 128×256 tile of c over 64-wide k steps. Tiles: z (the k slice) slowest; within a
/// slice, bands of <see cref="Group"/> tile rows, each covered column by column, so that the blocks running together
/// share their b tiles and few rows of a.
/// </para>
/// <para>
/// Shared layouts are CUTLASS's canonical 128-byte-swizzled ones (16-byte chunk c of a 128-byte row r at chunk
/// c ^ (r mod 8), atoms of 8 rows × 128 bytes on 1 KiB boundaries; the stages start on 1 KiB). A k-contiguous
/// (K-major) operand is stored as rows of its 64 k (128 bytes). An m- or n-contiguous (MN-major) operand is stored as
/// blocks of 64 m or n: block j, k row r at 8192·j + 128·r. Every thread copies 4 chunks of a and 8 of b per k step.
/// </para>
/// <para>
/// Split k: block z of a launch with several k slices covers k from z·kPer and writes its tile at c + z·slice (the
/// caller then sums the slices). C is written, or added to, as 8-byte fp32 pairs straight from the accumulators, or
/// written as 4-byte bf16 pairs (p_acc: <see cref="GemmStore"/>). Ragged sizes: chunks outside the operand or the k slice are copied with source size 0 (zeros), and a
/// tile that reaches past m or n stores only its rows and column blocks inside. Preconditions (checked by the caller,
/// see IlgpuBackend.AcceptsPtxGemm): a and b on 16 bytes and every row of theirs too (k, m or n a multiple of 8 where
/// it is a row length), c on 8 bytes (4 for a bf16 c) and n even.
/// </para>
/// </remarks>
internal static class GemmPtx
{
    public const int TileM = 128, TileN = 256, TileK = 64, Threads = 256, Group = 16;

    public const int StageBytesA = TileM * TileK * 2;

    /// <summary>Bytes of one stage of b for tiles <paramref name="tileN"/> wide (the warp-specialized module also builds 192).</summary>
    public static int StageBytesBFor(int tileN) => tileN * TileK * 2;

    public const string SharedSymbol = "hft_gemm_smem";

    public static readonly string[] Parameters = ["p_c", "p_a", "p_b", "p_m", "p_n", "p_k", "p_acc", "p_tiles_m", "p_tiles_n", "p_kper", "p_slice",
        "p_desc_a_lo", "p_desc_a_hi", "p_desc_b_lo", "p_desc_b_hi", "p_group"];

    /// <summary>Whether parameter <paramref name="index"/> of <see cref="Parameters"/> is a 64-bit address (c, a, b); the others are u32.</summary>
    public static bool IsPointerParameter(int index) => index < 3;

    /// <summary>Dynamic shared memory per block for <paramref name="stages"/> stages, plus 1 KiB to align them.</summary>
    public static int SharedBytes(int stages, int tileN = TileN) => 1024 + stages * (StageBytesA + StageBytesBFor(tileN));

    /// <summary>The entry of a form (transA: a is [k, m]; transB: b is [n, k]) in a module whose entries start with <paramref name="prefix"/>.</summary>
    public static string EntryOf(string prefix, bool transA, bool transB) => (transA, transB) switch
    {
        (false, true) => prefix + "_nt",
        (false, false) => prefix + "_nn",
        (true, false) => prefix + "_tn",
        _ => throw new ArgumentException("the PTX GEMMs have no TT form"),
    };

    /// <summary>
    /// A module of the three forms' entries for PTX ISA <paramref name="version"/> (the lowest the instructions need,
    /// so that older drivers load it too): <paramref name="body"/> writes one entry's code after the declarations
    /// (its arguments: the emitter, whether a and b are K-major).
    /// </summary>
    public static string Module(string version, string target, string prefix, string[] extraRegisters, Action<Emitter, bool, bool> body) =>
        Module(version, target, prefix, extraRegisters, [], body);

    /// <summary>
    /// As the other overload, with <paramref name="tensorMaps"/>: parameters of 128 bytes on 64 (CUDA tensor maps, as
    /// a kernel's grid constants) after <see cref="Parameters"/>, the u32 <paramref name="scalars"/> and the u64
    /// <paramref name="pointers"/>, and blocks of <paramref name="threads"/> threads.
    /// </summary>
    public static string Module(string version, string target, string prefix, string[] extraRegisters, string[] tensorMaps, Action<Emitter, bool, bool> body,
        int threads = Threads, string[]? scalars = null, string[]? pointers = null)
    {
        var e = new Emitter();
        e.Line(".version " + version);
        e.Line(".target " + target);
        e.Line(".address_size 64");
        e.Line("");
        e.Line($".extern .shared .align 1024 .b8 {SharedSymbol}[];");
        foreach (var (transA, transB) in new[] { (false, true), (false, false), (true, false) })
        {
            e.Line("");
            e.Line($".visible .entry {EntryOf(prefix, transA, transB)}(");
            e.Line(string.Join(",\n", Parameters.Select((p, i) => $"\t.param .{(IsPointerParameter(i) ? "u64" : "u32")} {p}")
                .Concat((scalars ?? []).Select(p => $"\t.param .u32 {p}"))
                .Concat((pointers ?? []).Select(p => $"\t.param .u64 {p}"))
                .Concat(tensorMaps.Select(p => $"\t.param .align 64 .b8 {p}[128]"))));
            e.Line(")");
            e.Line($".maxntid {threads}, 1, 1");
            e.Line("{");
            e.Ins(".reg .pred %p_done, %p_load, %p_acc, %p_bf, %p_one, %p_r, %p_c, %p_v, %p_full");
            e.Ins(".reg .pred %pr<8>");
            e.Ins(".reg .pred %pc<32>");
            e.Ins(".reg .b32 %u<80>");
            e.Ins(".reg .b64 %q<24>");
            e.Ins(".reg .f32 %d<128>");
            e.Ins(".reg .f32 %f<2>");
            foreach (string r in extraRegisters) e.Ins(r);
            body(e, !transA, transB);
            e.Line("}");
        }
        return e.ToString();
    }

    // Registers (u32): 0 tid, 1 tid / 128, 2 (tid / 32) mod 4, 3 g, 4 t, 5 m, 6 n, 7 k, 8 acc, 9 tilesM, 10 tilesN,
    // 11 kPer, 12 slice, 13 tn, 14 tm, 15 z, 16 m0, 17 n0, 18 kBegin, 19 steps, 20 kt (compute step), 21 kl (load
    // step), 22 smem (aligned), 23 shared a base, 24 shared b base, 25 a offset of this thread's chunks, 26 b offset,
    // 27..35 temporaries, 36 a descriptor high word, 39 a descriptor low constant bits, 40 b's, 41 b descriptor high
    // word, 42 group, 43..46 temporaries of the tile order, 74..77 the coordinates of this thread's first a and b
    // chunks that the bounds are checked on (see OperandPlan), 78 kEnd (the end of this block's k slice), 79 a
    // temporary; 37, 38 and 47 .. 73: the kernel's own.
    // Registers (u64): 0 c, 1 a, 2 b, 3 next a chunk, 4 next b chunk, 5 a stride between a thread's chunks, 6 b's,
    // 7 a step (one k step), 8 b step, 9..12 temporaries, 13, 14 the kernel's own, 15 c row, 16 c row + 8.

    /// <summary>
    /// Parameters, thread indices, this block's tile and k slice, the shared stages, this thread's copies, zeroed
    /// accumulators, and the copies of the first <paramref name="ahead"/> k steps.
    /// </summary>
    public static void Prologue(Emitter e, bool aKMajor, bool bKMajor, int stages, int ahead)
    {
        Setup(e, stages);
        OperandPlan(e, isA: true, kMajor: aKMajor);
        OperandPlan(e, isA: false, kMajor: bKMajor);
        ZeroAccumulators(e);
        for (int s = 0; s < ahead; s++) Issue(e, aKMajor, bKMajor, stages);
    }

    /// <summary>
    /// Parameters, thread indices, this block's tile and k slice (m0, n0, kBegin, kEnd and the step count; with
    /// <paramref name="tile"/> false none: a kernel that loops over tiles finds each with <see cref="TileOf"/>), and the
    /// shared stages (a's from u32 23, b's from 24).
    /// </summary>
    public static void Setup(Emitter e, int stages, int tileN = TileN, bool tile = true)
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
        if (tile) TileOf(e, "%ctaid.x", tileN);
        e.Ins($"setp.eq.u32 %p_acc, %u8, {(int)GemmStore.Add}");
        e.Ins($"setp.eq.u32 %p_bf, %u8, {(int)GemmStore.WriteBf16}");
        e.Ins("setp.eq.u32 %p_one, %u0, %u0");
        // Shared memory: aligned to 1 KiB, then the a stages, then the b stages.
        e.Ins($"mov.u32 %u22, {SharedSymbol}");
        e.Ins("add.u32 %u22, %u22, 1023");
        e.Ins("and.b32 %u22, %u22, -1024");
        e.Ins("mov.u32 %u23, %u22");
        e.Ins($"add.u32 %u24, %u22, {stages * StageBytesA}");
    }

    /// <summary>
    /// Tile <paramref name="index"/> of the launch's order (see the remarks): its k slice z (u32 15), tile row and
    /// column (14, 13), m0 and n0 (16, 17), kBegin and kEnd (18, 78) and its count of 64-wide k steps (19).
    /// </summary>
    public static void TileOf(Emitter e, string index, int tileN = TileN)
    {
        e.Ins($"mov.u32 %u27, {index}");
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
        e.Ins($"mul.lo.u32 %u17, %u13, {tileN}");
        e.Ins("mul.lo.u32 %u18, %u15, %u11");
        e.Ins("add.u32 %u78, %u18, %u11");
        e.Ins("min.u32 %u78, %u78, %u7");
        e.Ins("sub.u32 %u19, %u78, %u18");
        e.Ins("add.u32 %u19, %u19, 63");
        e.Ins("shr.u32 %u19, %u19, 6");
    }

    /// <summary>Zeroes the 128 accumulators and (with <paramref name="steps"/>) the compute and load steps (u32 20, 21).</summary>
    public static void ZeroAccumulators(Emitter e, bool steps = true)
    {
        for (int i = 0; i < 128; i++) e.Ins($"mov.f32 %d{i}, 0f00000000");
        if (!steps) return;
        e.Ins("mov.u32 %u20, 0");
        e.Ins("mov.u32 %u21, 0");
    }

    /// <summary>
    /// This thread's chunks of one operand: the global address of its first chunk at kBegin, the stride between its
    /// chunks and the step per k step (u64 registers 3/5/7 for a, 4/6/8 for b), and their offset in a stage (u32 25/26).
    /// </summary>
    private static void OperandPlan(Emitter e, bool isA, bool kMajor)
    {
        int next = isA ? 3 : 4, stride = isA ? 5 : 6, step = isA ? 7 : 8, off = isA ? 25 : 26, baseReg = isA ? 1 : 2;
        int rowAt = isA ? 74 : 76, colAt = rowAt + 1;
        string origin = isA ? "%u16" : "%u17", rowLength = isA ? "%u5" : "%u6"; // m0 or n0; m or n (MN-major rows)
        if (kMajor)
        {
            // Row tid / 8 (+ 32 i) of the tile, chunk tid mod 8 of its 64 k: (origin + row)·k + kBegin + 8·chunk. The
            // bounds: row origin + tid / 8 (u32 74 or 76) below m or n, k kBegin + 8·chunk (75 or 77) below kEnd.
            e.Ins("shr.u32 %u28, %u0, 3");
            e.Ins("and.b32 %u29, %u0, 7");
            e.Ins($"add.u32 %u30, {origin}, %u28");
            e.Ins("shl.b32 %u31, %u29, 3");
            e.Ins("add.u32 %u31, %u31, %u18");
            FirstChunk(e, "%u7", rowAt, colAt, next, baseReg);
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
        // origin + 8·c; a has 16 chunks a row (r = tid / 16), b 32 (r = tid / 32). The bounds: k kBegin + r (u32 74
        // or 76) below kEnd, column origin + 8·c (75 or 77) below m or n.
        int chunkBits = isA ? 4 : 5;
        e.Ins($"shr.u32 %u28, %u0, {chunkBits}");
        e.Ins($"and.b32 %u29, %u0, {(1 << chunkBits) - 1}");
        e.Ins("add.u32 %u30, %u18, %u28");
        e.Ins("shl.b32 %u31, %u29, 3");
        e.Ins($"add.u32 %u31, %u31, {origin}");
        FirstChunk(e, rowLength, rowAt, colAt, next, baseReg);
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
    /// The first chunk of this thread from its row (u32 30) and column (u32 31) in the operand: both kept for the
    /// bounds (u32 rowAt, colAt), and the chunk's global address, base + 2·(row·rowLength + column), in u64 next.
    /// </summary>
    private static void FirstChunk(Emitter e, string rowLength, int rowAt, int colAt, int next, int baseReg)
    {
        e.Ins($"mov.u32 %u{rowAt}, %u30");
        e.Ins($"mov.u32 %u{colAt}, %u31");
        e.Ins($"mul.wide.u32 %q9, %u30, {rowLength}");
        e.Ins("cvt.u64.u32 %q10, %u31");
        e.Ins("add.u64 %q9, %q9, %q10");
        e.Ins("shl.b64 %q9, %q9, 1");
        e.Ins($"add.u64 %q{next}, %q{baseReg}, %q9");
    }

    /// <summary>
    /// <paramref name="dst"/> = the shared address of stage <paramref name="step"/> mod <paramref name="stages"/> of
    /// a (<paramref name="isA"/>) or b, plus <paramref name="offset"/> (a u32 register) where given.
    /// </summary>
    public static void StageAddress(Emitter e, string dst, string step, int stages, bool isA, string? offset = null, int tileN = TileN)
    {
        e.Ins($"rem.u32 %u27, {step}, {stages}");
        e.Ins($"mul.lo.u32 {dst}, %u27, {(isA ? StageBytesA : StageBytesBFor(tileN))}");
        e.Ins($"add.u32 {dst}, {dst}, {(isA ? "%u23" : "%u24")}");
        if (offset is not null) e.Ins($"add.u32 {dst}, {dst}, {offset}");
    }

    /// <summary>
    /// Issues the copies of load step kl into stage kl mod <paramref name="stages"/> when kl is below the step count,
    /// commits a group either way (so that group i is always step i), and advances kl and the global addresses.
    /// </summary>
    public static void Issue(Emitter e, bool aKMajor, bool bKMajor, int stages)
    {
        string skip = e.NewLabel("SKIP");
        e.Ins("setp.lt.u32 %p_load, %u21, %u19");
        e.Ins($"@!%p_load bra {skip}");
        StageAddress(e, "%u28", "%u21", stages, isA: true, "%u25");
        StageAddress(e, "%u29", "%u21", stages, isA: false, "%u26");
        Copies(e, "%u28", isA: true, aKMajor);
        Copies(e, "%u29", isA: false, bKMajor);
        e.Ins("add.u64 %q3, %q3, %q7");
        e.Ins("add.u64 %q4, %q4, %q8");
        // The next step's k: the chunks' k (K-major) or the rows' k (MN-major) 64 further.
        e.Ins($"add.u32 %u{(aKMajor ? 75 : 74)}, %u{(aKMajor ? 75 : 74)}, {TileK}");
        e.Ins($"add.u32 %u{(bKMajor ? 77 : 76)}, %u{(bKMajor ? 77 : 76)}, {TileK}");
        e.Line(skip + ":");
        e.Ins("cp.async.commit_group");
        e.Ins("add.u32 %u21, %u21, 1");
    }

    /// <summary>
    /// One operand's copies of a k step (a: 4, b: 8): chunk i of this thread, 16 bytes where it lies inside the operand
    /// and the k slice, zeros (source size 0, from the operand's first byte) elsewhere: K-major, row coordinate (74/76)
    /// + 32·i below m or n and k (75/77) below kEnd; MN-major, k (74/76) + (16 or 8)·i below kEnd and column (75/77)
    /// below m or n.
    /// </summary>
    private static void Copies(Emitter e, string shared, bool isA, bool kMajor)
    {
        int next = isA ? 3 : 4, stride = isA ? 5 : 6, baseReg = isA ? 1 : 2, rowAt = isA ? 74 : 76, colAt = rowAt + 1;
        int count = isA ? 4 : 8, sharedStride = kMajor ? 4096 : isA ? 2048 : 1024, rowStep = kMajor ? 32 : isA ? 16 : 8;
        string size = isA ? "%u5" : "%u6";
        // The predicate that does not change with i.
        if (kMajor) e.Ins($"setp.lt.u32 %p_c, %u{colAt}, %u78");
        else e.Ins($"setp.lt.u32 %p_c, %u{colAt}, {size}");
        e.Ins($"mov.u64 %q9, %q{next}");
        for (int i = 0; i < count; i++)
        {
            if (i > 0) e.Ins($"add.u64 %q9, %q9, %q{stride}");
            e.Ins($"add.u32 %u79, %u{rowAt}, {i * rowStep}");
            e.Ins(kMajor ? $"setp.lt.u32 %p_r, %u79, {size}" : "setp.lt.u32 %p_r, %u79, %u78");
            e.Ins("and.pred %p_v, %p_r, %p_c");
            e.Ins("selp.u32 %u79, 16, 0, %p_v");
            e.Ins($"selp.b64 %q10, %q9, %q{baseReg}, %p_v");
            e.Ins($"cp.async.cg.shared.global [{shared}+{i * sharedStride}], [%q10], 16, %u79");
        }
    }

    /// <summary>
    /// Stores the accumulators as p_acc (<see cref="GemmStore"/>) says: fp32 pairs written or added to, or bf16 pairs
    /// written (rounded to nearest even, one 4-byte store per pair). %u27 holds this thread's first row (of c's tile, g
    /// included) and %u28 its first column (2t included); fragment (i, j) of <paramref name="rowBlocks"/> ×
    /// <paramref name="colBlocks"/> sits 16·i rows and 8·j columns further, in registers <paramref name="regOf"/>(i, j)
    /// .. + 3 (rows r and r + 8, two columns each). Then the thread exits, or with <paramref name="next"/> branches there.
    /// </summary>
    public static void Epilogue(Emitter e, int rowBlocks, int colBlocks, Func<int, int, int> regOf, int tileN = TileN, string? next = null)
    {
        // u64 10: the element index of this thread's first pair, z·slice + row·n + column.
        e.Ins("mul.wide.u32 %q9, %u15, %u12");
        e.Ins("add.u32 %u27, %u27, %u16");
        e.Ins("mul.wide.u32 %q10, %u27, %u6");
        e.Ins("add.u32 %u28, %u28, %u17");
        e.Ins("cvt.u64.u32 %q11, %u28");
        e.Ins("add.u64 %q10, %q10, %q11");
        e.Ins("add.u64 %q10, %q10, %q9");
        // A tile inside c is stored without bounds; a ragged one checks each row (i, half) and column block j.
        e.Ins($"add.u32 %u29, %u16, {TileM}");
        e.Ins($"add.u32 %u30, %u17, {tileN}");
        e.Ins("setp.le.u32 %p_full, %u29, %u5");
        e.Ins("setp.le.u32 %p_r, %u30, %u6");
        e.Ins("and.pred %p_full, %p_full, %p_r");
        string add = e.NewLabel("ADD"), bf = e.NewLabel("BF16"), partial = e.NewLabel("PARTIAL"), partialAdd = e.NewLabel("PARTIAL_ADD"),
            partialBf = e.NewLabel("PARTIAL_BF16"), end = e.NewLabel("END");
        e.Ins($"@!%p_full bra {partial}");
        e.Ins($"@%p_bf bra {bf}");
        StoreAddresses(e, bf16: false);
        e.Ins($"@%p_acc bra {add}");
        Stores(e, rowBlocks, colBlocks, regOf, GemmStore.Write, bounded: false);
        e.Ins($"bra.uni {end}");
        e.Line(add + ":");
        Stores(e, rowBlocks, colBlocks, regOf, GemmStore.Add, bounded: false);
        e.Ins($"bra.uni {end}");
        e.Line(bf + ":");
        StoreAddresses(e, bf16: true);
        Stores(e, rowBlocks, colBlocks, regOf, GemmStore.WriteBf16, bounded: false);
        e.Ins($"bra.uni {end}");
        e.Line(partial + ":");
        for (int i = 0; i < rowBlocks; i++)
            for (int half = 0; half < 2; half++)
            {
                e.Ins($"add.u32 %u29, %u27, {16 * i + 8 * half}");
                e.Ins($"setp.lt.u32 %pr{2 * i + half}, %u29, %u5");
            }
        for (int j = 0; j < colBlocks; j++)
        {
            e.Ins($"add.u32 %u29, %u28, {8 * j}");
            e.Ins($"setp.lt.u32 %pc{j}, %u29, %u6");
        }
        e.Ins($"@%p_bf bra {partialBf}");
        StoreAddresses(e, bf16: false);
        e.Ins($"@%p_acc bra {partialAdd}");
        Stores(e, rowBlocks, colBlocks, regOf, GemmStore.Write, bounded: true);
        e.Ins($"bra.uni {end}");
        e.Line(partialAdd + ":");
        Stores(e, rowBlocks, colBlocks, regOf, GemmStore.Add, bounded: true);
        e.Ins($"bra.uni {end}");
        e.Line(partialBf + ":");
        StoreAddresses(e, bf16: true);
        Stores(e, rowBlocks, colBlocks, regOf, GemmStore.WriteBf16, bounded: true);
        e.Line(end + ":");
        e.Ins(next is null ? "ret" : $"bra.uni {next}");
    }

    /// <summary>
    /// From the element index (u64 10): the address of this thread's first pair (u64 9), and the strides of 8 rows
    /// (u64 11) and 16 rows (u64 12), for 4-byte or (<paramref name="bf16"/>) 2-byte elements.
    /// </summary>
    private static void StoreAddresses(Emitter e, bool bf16)
    {
        int size = bf16 ? 2 : 4;
        e.Ins($"shl.b64 %q9, %q10, {(bf16 ? 1 : 2)}");
        e.Ins("add.u64 %q9, %q0, %q9");
        e.Ins($"mul.wide.u32 %q11, %u6, {8 * size}");
        e.Ins($"mul.wide.u32 %q12, %u6, {16 * size}");
    }

    private static void Stores(Emitter e, int rowBlocks, int colBlocks, Func<int, int, int> regOf, GemmStore store, bool bounded)
    {
        int pairBytes = store == GemmStore.WriteBf16 ? 4 : 8;
        e.Ins("mov.u64 %q15, %q9");
        for (int i = 0; i < rowBlocks; i++)
        {
            if (i > 0) e.Ins("add.u64 %q15, %q15, %q12");
            e.Ins("add.u64 %q16, %q15, %q11");
            for (int j = 0; j < colBlocks; j++)
                for (int half = 0; half < 2; half++)
                {
                    string addr = $"[%q{15 + half}+{j * 4 * pairBytes}]", guard = "";
                    if (bounded)
                    {
                        e.Ins($"and.pred %p_v, %pr{2 * i + half}, %pc{j}");
                        guard = "@%p_v ";
                    }
                    int r = regOf(i, j) + 2 * half;
                    switch (store)
                    {
                        case GemmStore.Write:
                            e.Ins($"{guard}st.global.v2.f32 {addr}, {{%d{r}, %d{r + 1}}}");
                            break;
                        case GemmStore.WriteBf16:
                            // The first column's element in the low half.
                            e.Ins($"cvt.rn.bf16x2.f32 %u79, %d{r + 1}, %d{r}");
                            e.Ins($"{guard}st.global.b32 {addr}, %u79");
                            break;
                        default:
                            e.Ins($"{guard}ld.global.v2.f32 {{%f0, %f1}}, {addr}");
                            e.Ins($"add.f32 %f0, %f0, %d{r}");
                            e.Ins($"add.f32 %f1, %f1, %d{r + 1}");
                            e.Ins($"{guard}st.global.v2.f32 {addr}, {{%f0, %f1}}");
                            break;
                    }
                }
        }
    }

    /// <summary>Collects lines of PTX; instructions get a tab and a semicolon.</summary>
    public sealed class Emitter
    {
        private readonly StringBuilder _sb = new();
        private int _labels;

        public void Line(string s) => _sb.Append(s).Append('\n');

        public void Ins(string s) => _sb.Append('\t').Append(s).Append(";\n");

        public string NewLabel(string stem) => stem + "_" + (_labels++).ToString(CultureInfo.InvariantCulture);

        public override string ToString() => _sb.ToString();
    }
}

/// <summary>How a PTX GEMM stores its tile (the p_acc parameter): fp32 written, fp32 added to c, or bf16 written.</summary>
internal enum GemmStore
{
    /// <summary>c = the product (fp32).</summary>
    Write = 0,

    /// <summary>c += the product (fp32).</summary>
    Add = 1,

    /// <summary>c = the product rounded to bfloat16 (nearest even); c's element size is 2 bytes.</summary>
    WriteBf16 = 2,

    /// <summary>
    /// The warp-specialized modules' SwiGLU pairs (<see cref="WgmmaWsGemmPtx.SwiGluOutputs"/>): each tile's first half of
    /// columns is gate, its second half up, of the same features (b read from two tensor maps); gate and up are
    /// written in bf16, and h = silu(gate)·up of the rounded values, in bf16, beside them.
    /// </summary>
    SwiGlu = 3,

    /// <summary>
    /// The warp-specialized modules' RoPE stores: c = the product with each 64-wide head rotated by the angles of its
    /// row's position (<see cref="WgmmaWsGemmPtx.RopeTables"/>), rounded to bfloat16.
    /// </summary>
    WriteBf16Rope = 4,
}
