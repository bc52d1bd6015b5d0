namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The PTX (sm_80 and later) of the mma.sync bf16 GEMM: c[m, n] (+)= op(a)·op(b) in the NT, NN and TN forms, written
/// as text (ILGPU passes inline-asm operands through local memory, which ptxas kept in an ILGPU <c>ldmatrix</c> +
/// <c>cp.async</c> GEMM: a 696-byte stack frame, ten times slower) and loaded through ILGPU's CUDA driver API (see <see cref="PtxGemm"/>); the tests run it
/// through a PTX interpreter and assemble it with ptxas.
/// </summary>
/// <remarks>
/// <para>
/// Loads, shared layouts (128-byte swizzle), tile order, split k and stores: see <see cref="GemmPtx"/>; the k steps'
/// tiles go into a ring of <c>stages</c> (2 to 4, as the card's shared memory allows: 48 KiB each, plus 1 KiB to align them) issued
/// stages − 1 steps ahead. Step t waits for its own copies, meets the block at a barrier (after which no warp reads
/// the stage of step t − 1 any more), issues the copies of step t + stages − 1 into that stage, then multiplies.
/// </para>
/// <para>
/// Eight warps of 64×64 (warp w: rows 64·(w mod 2), columns 64·(w div 2)); per k16 slice each warp loads its four
/// m16 A fragments and eight n8 B fragments with 8 <c>ldmatrix.x4</c> (<c>.trans</c> for an m- or n-contiguous
/// operand, whose shared rows are k rows) from the swizzled rows (conflict-free: the 8 rows of a matrix are 8
/// different chunks of 8 different 128-byte rows), then runs 32 <c>mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32</c>
/// (128 fp32 accumulators per thread: fragment (i, j) in registers 4·(8i + j) ..).
/// </para>
/// </remarks>
public static class MmaGemmPtx
{
    private static readonly Lazy<string>[] _modules = [.. Enumerable.Range(0, 5).Select(s => new Lazy<string>(() => Build(s)))];

    /// <summary>The module's PTX text for a ring of <paramref name="stages"/> (2 to 4) stages.</summary>
    public static string Module(int stages) =>
        stages is >= 2 and <= 4 ? _modules[stages].Value : throw new ArgumentOutOfRangeException(nameof(stages), "2 to 4 stages");

    /// <summary>Dynamic shared memory per block for <paramref name="stages"/> stages.</summary>
    public static int SharedBytes(int stages) => GemmPtx.SharedBytes(stages);

    /// <summary>
    /// The most stages that fit <paramref name="sharedBytesPerBlock"/> (a block's opt-in shared memory limit), at most
    /// 4; 0 where not even 2 fit.
    /// </summary>
    public static int StagesFor(int sharedBytesPerBlock)
    {
        for (int s = 4; s >= 2; s--) if (SharedBytes(s) <= sharedBytesPerBlock) return s;
        return 0;
    }

    /// <summary>The entry of a form (transA: a is [k, m]; transB: b is [n, k]); the TT form has none.</summary>
    public static string EntryOf(bool transA, bool transB) => GemmPtx.EntryOf("hft_mma_bf16", transA, transB);

    private static string Build(int stages) =>
        GemmPtx.Module("7.0", "sm_80", "hft_mma_bf16", [".reg .b32 %a<16>", ".reg .b32 %b<16>"], (e, aK, bK) => Entry(e, aK, bK, stages));

    // Own registers (u32): 47 lane mod 8, 48 lane / 8 (the matrix of ldmatrix), 49 its bit 0, 50 its bit 1, 51 warp,
    // 52 warp mod 2, 53 warp / 2, 54 a row offset, 55..58 a chunk offsets, 59 b row offset, 60..63 b chunk offsets,
    // 64 a stage, 65 b stage, 66..69 a ldmatrix bases, 70..73 b ldmatrix bases.
    private static void Entry(GemmPtx.Emitter e, bool aKMajor, bool bKMajor, int stages)
    {
        GemmPtx.Prologue(e, aKMajor, bKMajor, stages, ahead: stages - 1);
        e.Ins("and.b32 %u27, %u0, 31");
        e.Ins("and.b32 %u47, %u27, 7");
        e.Ins("shr.u32 %u48, %u27, 3");
        e.Ins("and.b32 %u49, %u48, 1");
        e.Ins("shr.u32 %u50, %u48, 1");
        e.Ins("shr.u32 %u51, %u0, 5");
        e.Ins("and.b32 %u52, %u51, 1");
        e.Ins("shr.u32 %u53, %u51, 1");
        LdmatrixPlan(e, isA: true, aKMajor);
        LdmatrixPlan(e, isA: false, bKMajor);

        string loop = e.NewLabel("LOOP"), done = e.NewLabel("DONE");
        e.Line(loop + ":");
        e.Ins("setp.ge.u32 %p_done, %u20, %u19");
        e.Ins($"@%p_done bra {done}");
        e.Ins($"cp.async.wait_group {stages - 2}");
        e.Ins("bar.sync 0");
        GemmPtx.Issue(e, aKMajor, bKMajor, stages);
        GemmPtx.StageAddress(e, "%u64", "%u20", stages, isA: true, "%u54");
        GemmPtx.StageAddress(e, "%u65", "%u20", stages, isA: false, "%u59");
        for (int x = 0; x < 4; x++)
        {
            e.Ins($"add.u32 %u{66 + x}, %u64, %u{55 + x}");
            e.Ins($"add.u32 %u{70 + x}, %u65, %u{60 + x}");
        }
        for (int kk = 0; kk < GemmPtx.TileK / 16; kk++)
        {
            // K-major: base per k16 slice, the next 16 rows 2048 bytes on; MN-major: base per m16/n16 block, the next
            // 16 k rows 2048 bytes on.
            for (int i = 0; i < 4; i++)
                e.Ins(aKMajor
                    ? $"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%a{4 * i}, %a{4 * i + 1}, %a{4 * i + 2}, %a{4 * i + 3}}}, [%u{66 + kk}+{i * 2048}]"
                    : $"ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{%a{4 * i}, %a{4 * i + 1}, %a{4 * i + 2}, %a{4 * i + 3}}}, [%u{66 + i}+{kk * 2048}]");
            for (int jj = 0; jj < 4; jj++)
                e.Ins(bKMajor
                    ? $"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%b{4 * jj}, %b{4 * jj + 1}, %b{4 * jj + 2}, %b{4 * jj + 3}}}, [%u{70 + kk}+{jj * 2048}]"
                    : $"ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{%b{4 * jj}, %b{4 * jj + 1}, %b{4 * jj + 2}, %b{4 * jj + 3}}}, [%u{70 + jj}+{kk * 2048}]");
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 8; j++)
                {
                    int d = 4 * (8 * i + j);
                    string acc = $"{{%d{d}, %d{d + 1}, %d{d + 2}, %d{d + 3}}}";
                    e.Ins($"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {acc}, {{%a{4 * i}, %a{4 * i + 1}, %a{4 * i + 2}, %a{4 * i + 3}}}, {{%b{2 * j}, %b{2 * j + 1}}}, {acc}");
                }
        }
        e.Ins("add.u32 %u20, %u20, 1");
        e.Ins($"bra.uni {loop}");
        e.Line(done + ":");
        // Row 64·(warp mod 2) + g, column 64·(warp div 2) + 2t.
        e.Ins("shl.b32 %u27, %u52, 6");
        e.Ins("add.u32 %u27, %u27, %u3");
        e.Ins("shl.b32 %u28, %u53, 6");
        e.Ins("shl.b32 %u29, %u4, 1");
        e.Ins("add.u32 %u28, %u28, %u29");
        GemmPtx.Epilogue(e, rowBlocks: 4, colBlocks: 8, (i, j) => 4 * (8 * i + j));
    }

    /// <summary>
    /// This lane's ldmatrix row offset (u32 54 for a, 59 for b) and four chunk offsets (55..58, 60..63): lane l gives
    /// row l mod 8 of matrix l / 8. A (K-major): matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
    /// (rows 8-15, k 8-15) of an m16 block, chunk offsets per k16 slice. B (K-major): (n 0-7, k 0-7), (n 0-7, k 8-15),
    /// (n 8-15, k 0-7), (n 8-15, k 8-15) of two n8 blocks, per k16 slice. MN-major (transposed): the same matrices with
    /// k rows, chunk offsets per m16 (a) or n16 (b) block instead.
    /// </summary>
    private static void LdmatrixPlan(GemmPtx.Emitter e, bool isA, bool kMajor)
    {
        int row = isA ? 54 : 59, off = isA ? 55 : 60;
        string origin = isA ? "%u52" : "%u53"; // warp's 64-row (a) or 64-column (b) block
        // For a, bit 0 of the matrix index moves rows (K-major) or m (MN-major) by 8, bit 1 moves k by 8; for b, bit 0
        // moves k and bit 1 moves n.
        string rowBit = isA ? (kMajor ? "%u49" : "%u50") : (kMajor ? "%u50" : "%u49");
        string chunkBit = isA ? (kMajor ? "%u50" : "%u49") : (kMajor ? "%u49" : "%u50");
        // K-major: row 64·block + 8·rowBit + l mod 8 of the tile; MN-major: the block's 8192 bytes, then k row
        // 8·rowBit + l mod 8.
        e.Ins($"shl.b32 %u31, {rowBit}, 3");
        e.Ins("add.u32 %u31, %u31, %u47");
        if (kMajor)
        {
            e.Ins($"shl.b32 %u30, {origin}, 6");
            e.Ins("add.u32 %u31, %u31, %u30");
        }
        e.Ins($"shl.b32 %u{row}, %u31, 7");
        if (!kMajor)
        {
            e.Ins($"shl.b32 %u32, {origin}, 13");
            e.Ins($"add.u32 %u{row}, %u{row}, %u32");
        }
        for (int x = 0; x < 4; x++)
        {
            // Chunk 2x + chunkBit, swizzled by the row (l mod 8).
            e.Ins($"add.u32 %u31, {chunkBit}, {2 * x}");
            e.Ins("xor.b32 %u31, %u31, %u47");
            e.Ins($"shl.b32 %u{off + x}, %u31, 4");
        }
    }
}
