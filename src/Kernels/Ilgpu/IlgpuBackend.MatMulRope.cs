namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// <see cref="Backend.MatMulRope"/> as one launch of the warp-specialized GEMM (<see cref="GemmStore.WriteBf16Rope"/>):
/// the stores rotate each 64-wide head of the tile by its rows' angles before rounding to bf16. Saves the RoPE pass
/// over q and k (a read and a write of each, and a launch) per layer.
/// </summary>
public sealed partial class IlgpuBackend
{
    /// <summary>
    /// Whether <see cref="Backend.MatMulRope"/> takes one launch of the warp-specialized kernel (once its check passed)
    /// where wgmma-ws is selected; false: the product and the RoPE kernel. Default <see cref="RopeGemmByDefault"/>.
    /// </summary>
    public bool RopeGemm { get; set; } = RopeGemmByDefault;

    /// <summary>True unless HFT_GEMM_ROPE=off (for measuring without it on a GPU machine).</summary>
    public static bool RopeGemmByDefault =>
        !EnvOff("HFT_GEMM_ROPE");

    /// <inheritdoc/>
    protected override void MatMulRopeCore(Tensor c, Tensor a, Tensor b, int m, int n, int k, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim,
        int maxPositions)
    {
        if (RopeGemm && headDim == TcHeadDim && TryRopePtx(c, a, b, m, n, k, positions, cos, sin, maxPositions)) return;
        base.MatMulRopeCore(c, a, b, m, n, k, positions, cos, sin, heads, headDim, maxPositions);
    }

    /// <summary>
    /// The RoPE launch on the warp-specialized kernel when it is selected, <see cref="AcceptsPtxGemm"/> holds, the NT form,
    /// its bf16 stores and the RoPE launch passed their checks (128 × 192 tiles where they pay); false (nothing queued)
    /// otherwise. Heads of 64 (n a multiple of 64).
    /// </summary>
    private bool TryRopePtx(Tensor c, Tensor a, Tensor b, int m, int n, int k, Tensor positions, Tensor cos, Tensor sin, int maxPositions)
    {
        if (Bf16GemmVariant != Bf16GemmVariant.WgmmaWs || n % TcHeadDim != 0 || !AcceptsPtxGemm(c, a, b, m, n, k, false, true)) return false;
        var rope = new GemmRope(Address(positions), Address(cos), Address(sin), maxPositions);
        bool narrow = NarrowTiles && NarrowTilesPay(m, n, _acc.NumMultiprocessors);
        int tilesM = (m + GemmPtx.TileM - 1) / GemmPtx.TileM;
        return TryFusedNt(narrow, _ => true, RopeChecked, (slot, gemm) =>
            gemm.Launch(false, true, LaunchBlocks(slot, gemm, false, true, (long)tilesM * ((n + gemm.TileN - 1) / gemm.TileN)), Address(c), Address(a), Address(b),
                m, n, k, GemmStore.WriteBf16Rope, tilesM, (n + gemm.TileN - 1) / gemm.TileN, k, m * n, slot.Swapped[Form(false, true)], rope: rope),
            "the RoPE products take a launch and the RoPE kernel");
    }

    /// <summary>
    /// Whether a module's RoPE launch passed its check: on first use, a [136, 320] · [n = two tiles and a head, 320]ᵀ product
    /// (a ragged tile row and a tile reaching past n) with random tables of 40 positions (every fifth row's outside them)
    /// against the simple kernel's product rotated by the RoPE kernel in fp32 and rounded: within one bf16 rounding of
    /// each element plus 1e-4 of the largest. A failure is reported once and kept; MatMulRope then takes the product and
    /// the RoPE kernel.
    /// </summary>
    private bool RopeChecked(PtxGemmSlot slot, PtxGemm gemm)
    {
        return CheckedOnce(ref slot.Rope, () => CheckRope(gemm, 136, 2 * gemm.TileN + TcHeadDim, 320, 40, slot.Swapped[Form(false, true)], 20261203),
            $"the {slot.Name} bf16 GEMM's RoPE launch disagrees with the simple kernel and the RoPE kernel", "the RoPE products take a launch and the RoPE kernel");
    }

    /// <summary>One RoPE launch of the check (see <see cref="RopeChecked"/>): null where it agrees, else where not.</summary>
    private string? CheckRope(PtxGemm gemm, int m, int n, int k, int maxPositions, bool swapped, int seed)
    {
        var rng = new Random(seed);
        float[] RandomTable() => Enumerable.Range(0, maxPositions * TcHeadDim / 2).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        ushort[] a = RandomBf16(rng, m * k), b = RandomBf16(rng, n * k);
        int[] positions = Enumerable.Range(0, m).Select(i => i % 5 == 4 ? maxPositions + i : rng.Next(maxPositions)).ToArray();
        float[] cos = RandomTable(), sin = RandomTable();
        using var arena = CreateArena();
        var ta = arena.Reserve("rope_check_a", a.Length, DType.BF16);
        var tb = arena.Reserve("rope_check_b", b.Length, DType.BF16);
        var tp = arena.Reserve("rope_check_positions", m, DType.I32);
        var tcos = arena.Reserve("rope_check_cos", cos.Length);
        var tsin = arena.Reserve("rope_check_sin", sin.Length);
        var want = arena.Reserve("rope_check_want", m * n);
        var got = arena.Reserve("rope_check_got", m * n, DType.BF16);
        arena.Commit();
        Upload<ushort>(ta, a);
        Upload<ushort>(tb, b);
        Upload<int>(tp, positions);
        Upload<float>(tcos, cos);
        Upload<float>(tsin, sin);
        Upload<ushort>(got, Enumerable.Repeat((ushort)0x7FC0, m * n).ToArray());
        MatMulBf16Simple(want, ta, tb, m, n, k, false, true, accumulate: false);
        RopeCore(want, tp, tcos, tsin, m, n / TcHeadDim, TcHeadDim, maxPositions, inverse: false, default, writeX: true);
        int tilesM = (m + GemmPtx.TileM - 1) / GemmPtx.TileM, tilesN = (n + gemm.TileN - 1) / gemm.TileN;
        try
        {
            gemm.Launch(false, true, tilesM * tilesN, Address(got), Address(ta), Address(tb), m, n, k, GemmStore.WriteBf16Rope, tilesM, tilesN, k, m * n, swapped,
                rope: new GemmRope(Address(tp), Address(tcos), Address(tsin), maxPositions));
        }
        catch (InvalidOperationException e)
        {
            return e.Message;
        }
        string? mismatch = Mismatch(ToArray<float>(want), ToArray<ushort>(got).Select(Bf16.ToFloat).ToArray(), n, 1.0 / 256);
        return mismatch is null ? null : $"{m}×{n}×{k}: {mismatch}";
    }
}
