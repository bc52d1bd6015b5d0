namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// <see cref="Backend.MatMulSwiGlu"/> as one launch of the warp-specialized GEMM (<see cref="GemmStore.SwiGlu"/>): each
/// tile holds gate and up of the same features, b read from W_gate's and W_up's tensor maps, and its stores write gate,
/// up and h = silu(gate)·up in bf16. Saves the SwiGLU forward kernel's reads of gate and up and a launch per layer.
/// </summary>
public sealed partial class IlgpuBackend
{
    /// <summary>
    /// Whether <see cref="Backend.MatMulSwiGlu"/> takes one launch of the warp-specialized kernel (once its check passed)
    /// where wgmma-ws is selected; false: the two products and the SwiGLU kernel. Default <see cref="SwiGluGemmByDefault"/>.
    /// </summary>
    public bool SwiGluGemm { get; set; } = SwiGluGemmByDefault;

    /// <summary>
    /// False unless HFT_GEMM_SWIGLU=on. Measured on an H100 and an H200 (2026-11-27, docs/gpu-runs.md runs 4 and 5), the
    /// 134M model's bf16 step took 0.2–0.5 ms longer with the one launch: its 12 calls took 2.65 ms (H100) and 2.29 ms
    /// (H200) against 2.08 and 1.93 for the two products and the SwiGLU kernel. The epilogue (exponentials and three
    /// bf16 stores per tile) costs the product more than the SwiGLU pass's reads of gate and up cost. Kept, and checked
    /// on first use, for cards and shapes where that turns the other way.
    /// </summary>
    public static bool SwiGluGemmByDefault =>
        EnvOn("HFT_GEMM_SWIGLU");

    /// <inheritdoc/>
    protected override void MatMulSwiGluCore(Tensor h, Tensor gate, Tensor up, Tensor x, Tensor wGate, Tensor wUp, int n, int f, int d)
    {
        if (SwiGluGemm && TrySwiGluPtx(h, gate, up, x, wGate, wUp, n, f, d)) return;
        base.MatMulSwiGluCore(h, gate, up, x, wGate, wUp, n, f, d);
    }

    /// <summary>
    /// The SwiGLU launch on the warp-specialized kernel when it is selected, the operands suit it (as
    /// <see cref="AcceptsPtxGemm"/> for both products and h, and f a multiple of half a tile), the NT form, its bf16
    /// stores and the SwiGLU launch passed their checks; 128 × 192 tiles where they pay and divide f. False (nothing
    /// queued) otherwise.
    /// </summary>
    private bool TrySwiGluPtx(Tensor h, Tensor gate, Tensor up, Tensor x, Tensor wGate, Tensor wUp, int n, int f, int d)
    {
        if (Bf16GemmVariant != Bf16GemmVariant.WgmmaWs || (long)n * 2 * f > int.MaxValue
            || !AcceptsPtxGemm(gate, x, wGate, n, f, d, false, true) || !AcceptsPtxGemm(up, x, wUp, n, f, d, false, true)
            || !AcceptsPtxGemm(h, x, wGate, n, f, d, false, true)) return false;
        bool narrow = NarrowTiles && NarrowTilesPay(n, 2 * f, _acc.NumMultiprocessors) && f % (WgmmaWsGemmPtx.NarrowTileN / 2) == 0;
        int tilesM = (n + GemmPtx.TileM - 1) / GemmPtx.TileM;
        return TryFusedNt(narrow, gemm => f % (gemm.TileN / 2) == 0, SwiGluChecked, (slot, gemm) =>
            gemm.Launch(false, true, LaunchBlocks(slot, gemm, false, true, (long)tilesM * (2 * f / gemm.TileN)), Address(gate), Address(x), Address(wGate),
                n, 2 * f, d, GemmStore.SwiGlu, tilesM, 2 * f / gemm.TileN, d, 0, slot.Swapped[Form(false, true)],
                swiGlu: new GemmSwiGlu(Address(up), Address(h), Address(wUp))),
            "the SwiGLU products take two launches and the SwiGLU kernel");
    }

    /// <summary>
    /// A fused NT launch (<see cref="GemmStore.SwiGlu"/>, <see cref="GemmStore.WriteBf16Rope"/>) on the warp-specialized
    /// kernel: on the 128 × 192 module first where <paramref name="narrow"/>, then on 128 × 256. A module takes it where it
    /// loads, <paramref name="fits"/> its tiles, and the NT form, its bf16 stores and <paramref name="fusionChecked"/>
    /// passed; a launch the driver refuses is warned about once (then <paramref name="instead"/>) and the next module
    /// tried. False (nothing queued) where none took it.
    /// </summary>
    private bool TryFusedNt(bool narrow, Func<PtxGemm, bool> fits, Func<PtxGemmSlot, PtxGemm, bool> fusionChecked, Action<PtxGemmSlot, PtxGemm> launch,
        string instead)
    {
        foreach (var slot in narrow ? new[] { _wgmmaWsNarrowSlot, _wgmmaWsSlot } : [_wgmmaWsSlot])
        {
            if (Module(slot) is not { } gemm || !fits(gemm) || !FormChecked(slot, gemm, false, true)
                || !FormChecked(slot, gemm, false, true, bf16Out: true) || !fusionChecked(slot, gemm)) continue;
            try
            {
                launch(slot, gemm);
            }
            catch (InvalidOperationException e)
            {
                WarnOnce(slot, $"warning: {e.Message}; {instead}");
                continue;
            }
            Interlocked.Increment(ref slot.Launches);
            return true;
        }
        return false;
    }

    /// <summary>
    /// Whether a module's SwiGLU launch passed its check: on first use, x [136, 320] (a ragged tile row) with W_gate and
    /// W_up of two tiles' features, against the simple kernel's products (gate and up within one bf16 rounding, as the
    /// bf16 stores' check) and the SwiGLU kernel on the launch's own gate and up (h within 2⁻⁷ of its magnitude plus
    /// 1e-4 of the largest: the same formula, its approximations within an ulp or two). A failure is reported once and
    /// kept; MatMulSwiGlu then takes two launches and the SwiGLU kernel.
    /// </summary>
    private bool SwiGluChecked(PtxGemmSlot slot, PtxGemm gemm)
    {
        return CheckedOnce(ref slot.SwiGlu, () => CheckSwiGlu(gemm, 136, gemm.TileN, 320, slot.Swapped[Form(false, true)], 20261202),
            $"the {slot.Name} bf16 GEMM's SwiGLU launch disagrees with the simple kernel and the SwiGLU kernel",
            "the SwiGLU products take two launches and the SwiGLU kernel");
    }

    /// <summary>One SwiGLU launch of the check (see <see cref="SwiGluChecked"/>): null where it agrees, else where not.</summary>
    private string? CheckSwiGlu(PtxGemm gemm, int m, int f, int k, bool swapped, int seed)
    {
        var rng = new Random(seed);
        ushort[] x = RandomBf16(rng, m * k), wg = RandomBf16(rng, f * k), wu = RandomBf16(rng, f * k);
        using var arena = CreateArena();
        var tx = arena.Reserve("swiglu_check_x", x.Length, DType.BF16);
        var twg = arena.Reserve("swiglu_check_w_gate", wg.Length, DType.BF16);
        var twu = arena.Reserve("swiglu_check_w_up", wu.Length, DType.BF16);
        var wantGate = arena.Reserve("swiglu_check_want_gate", m * f);
        var wantUp = arena.Reserve("swiglu_check_want_up", m * f);
        var gate = arena.Reserve("swiglu_check_gate", m * f, DType.BF16);
        var up = arena.Reserve("swiglu_check_up", m * f, DType.BF16);
        var h = arena.Reserve("swiglu_check_h", m * f, DType.BF16);
        var wantH = arena.Reserve("swiglu_check_want_h", m * f, DType.BF16);
        arena.Commit();
        Upload<ushort>(tx, x);
        Upload<ushort>(twg, wg);
        Upload<ushort>(twu, wu);
        var nan = Enumerable.Repeat((ushort)0x7FC0, m * f).ToArray();
        foreach (var t in new[] { gate, up, h }) Upload<ushort>(t, nan);
        MatMulBf16Simple(wantGate, tx, twg, m, f, k, false, true, accumulate: false);
        MatMulBf16Simple(wantUp, tx, twu, m, f, k, false, true, accumulate: false);
        int tilesM = (m + GemmPtx.TileM - 1) / GemmPtx.TileM, tilesN = 2 * f / gemm.TileN;
        try
        {
            gemm.Launch(false, true, tilesM * tilesN, Address(gate), Address(tx), Address(twg), m, 2 * f, k, GemmStore.SwiGlu, tilesM, tilesN, k, 0, swapped,
                swiGlu: new GemmSwiGlu(Address(up), Address(h), Address(twu)));
        }
        catch (InvalidOperationException e)
        {
            return e.Message;
        }
        SwiGluForwardCore(default, gate, up, wantH, default, default);
        float[] Widened(Tensor t) => ToArray<ushort>(t).Select(Bf16.ToFloat).ToArray();
        string? mismatch = Mismatch(ToArray<float>(wantGate), Widened(gate), f, 1.0 / 256) is { } g ? "gate " + g
            : Mismatch(ToArray<float>(wantUp), Widened(up), f, 1.0 / 256) is { } u ? "up " + u
            : Mismatch(Widened(wantH), Widened(h), f, 1.0 / 128) is { } hm ? "h " + hm : null;
        return mismatch is null ? null : $"{m}×{f}×{k}: {mismatch}";
    }
}
