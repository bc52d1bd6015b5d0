using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The bf16 GEMMs written as PTX text (see <see cref="GemmPtx"/>): <see cref="Bf16GemmVariant.Wgmma"/>,
/// <see cref="Bf16GemmVariant.WgmmaTma"/> and <see cref="Bf16GemmVariant.WgmmaWs"/> (sm_90a), and
/// <see cref="Bf16GemmVariant.Mma"/> (sm_80 and later), loaded on first use, each form checked against the simple
/// kernel on its first use.
/// </summary>
public sealed partial class IlgpuBackend
{
    /// <summary>One PTX GEMM module on this back-end: loaded or why not, each form's check, launches.</summary>
    private sealed class PtxGemmSlot(string name, string offSwitch)
    {
        public readonly string Name = name, OffSwitch = offSwitch;
        public PtxGemm? Gemm;
        public string? Unavailable;
        public readonly string?[] Form = new string?[3];
        /// <summary>Per form, the check of its bf16 stores (<see cref="GemmStore.WriteBf16"/>), made on a form's first bf16 product.</summary>
        public readonly string?[] FormBf16 = new string?[3];
        /// <summary>Per form, the check of a persistent launch (fewer blocks than tiles), made on its first such launch.</summary>
        public readonly string?[] FormPersistent = new string?[3];
        /// <summary>Per form, the check of a summed launch (several products, one accumulator), made on its first such launch.</summary>
        public readonly string?[] FormSum = new string?[3];
        /// <summary>The check of the SwiGLU launch (NT; <see cref="GemmStore.SwiGlu"/>), made on its first use.</summary>
        public string? SwiGlu;
        /// <summary>The check of the RoPE launch (NT; <see cref="GemmStore.WriteBf16Rope"/>), made on its first use.</summary>
        public string? Rope;
        public readonly bool[] Swapped = new bool[3];
        public long Launches;
        public int Warned;
    }

    private readonly PtxGemmSlot _wgmmaSlot = new("wgmma", "HFT_WGMMA"), _mmaSlot = new("mma", "HFT_MMA"),
        _wgmmaTmaSlot = new("wgmma-tma", "HFT_WGMMA_TMA"), _wgmmaWsSlot = new("wgmma-ws", "HFT_WGMMA_WS");

    /// <summary>
    /// The warp-specialized kernel with 128 × 192 tiles, which wgmma-ws takes for the products where it pays
    /// (<see cref="NarrowTilesPay"/>) once each form passed its own check; HFT_WGMMA_WS192=off keeps every product on 128 × 256.
    /// </summary>
    private readonly PtxGemmSlot _wgmmaWsNarrowSlot = new("wgmma-ws-192", "HFT_WGMMA_WS192");

    /// <summary>
    /// Whether wgmma-ws takes its 128 × 192 kernel where that pays (the default); false keeps every product on
    /// 128 × 256 tiles (the bench measures both). HFT_WGMMA_WS192=off keeps the narrow module from loading at all.
    /// </summary>
    public bool NarrowTiles { get; set; } = true;

    /// <summary>
    /// Whether the warp-specialized kernels launch at most one block per multiprocessor, each looping over its tiles
    /// (the producer loads a tile's first steps while the consumers store the one before) once a form passed that
    /// launch's own check; false launches one block per tile. Default <see cref="PersistentGemmByDefault"/>.
    /// </summary>
    public bool PersistentGemm { get; set; } = PersistentGemmByDefault;

    /// <summary>
    /// Whether <see cref="Backend.MatMulSum"/> takes one launch of the warp-specialized kernels for its products (their
    /// k one after the other into one accumulator) once a form passed that launch's own check; false launches a
    /// product at a time, each after the first adding to c. Default <see cref="SummedGemmByDefault"/>.
    /// </summary>
    public bool SummedGemm { get; set; } = SummedGemmByDefault;

    /// <summary>True unless HFT_GEMM_SUM=off (for measuring without it on a GPU machine).</summary>
    public static bool SummedGemmByDefault =>
        !EnvOff("HFT_GEMM_SUM");

    /// <summary>True unless HFT_GEMM_PERSISTENT=off (for measuring without it on a GPU machine).</summary>
    public static bool PersistentGemmByDefault =>
        !EnvOff("HFT_GEMM_PERSISTENT");

    /// <summary>The variants whose kernels are PTX of our own (<see cref="PtxStatus"/>, <see cref="PtxLaunches"/>).</summary>
    public static IReadOnlyList<Bf16GemmVariant> PtxVariants { get; } =
        [Bf16GemmVariant.Wgmma, Bf16GemmVariant.WgmmaTma, Bf16GemmVariant.WgmmaWs, Bf16GemmVariant.Mma];

    /// <summary>
    /// The selected bf16 GEMM kernel, with a PTX one's status: "simple", "fast", "wgmma (NT checked; …)", "mma (…)"
    /// (run.json's <c>bf16_gemm</c>).
    /// </summary>
    public string Bf16GemmSummary =>
        SlotOf(Bf16GemmVariant) is { } slot ? $"{slot.Name} ({Status(slot)})" : NameOf(Bf16GemmVariant);

    /// <summary>Launches of a PTX variant's kernel so far (0 for the others).</summary>
    public long PtxLaunches(Bf16GemmVariant variant) => SlotOf(variant) is { } slot
        ? Interlocked.Read(ref slot.Launches) + (slot == _wgmmaWsSlot ? Interlocked.Read(ref _wgmmaWsNarrowSlot.Launches) : 0)
        : 0;

    /// <summary>
    /// What a PTX variant's kernel did on this back-end: "unused", "unavailable: …" (the device cannot run it, the
    /// module did not load, or its switch such as HFT_WGMMA=off), or per form NT, NN, TN "checked" / "failed: …" /
    /// "unchecked"; null for the other variants.
    /// </summary>
    public string? PtxStatus(Bf16GemmVariant variant) => SlotOf(variant) is { } slot ? Status(slot) : null;

    /// <summary>A slot's status; wgmma-ws's with its 128 × 192 kernel's once that was tried.</summary>
    private string Status(PtxGemmSlot s) => s == _wgmmaWsSlot && (_wgmmaWsNarrowSlot.Gemm is not null || _wgmmaWsNarrowSlot.Unavailable is not null)
        ? $"{SlotStatus(s)}; 128×192 tiles: {SlotStatus(_wgmmaWsNarrowSlot)}"
        : SlotStatus(s);

    private PtxGemmSlot? SlotOf(Bf16GemmVariant variant) => variant switch
    {
        Bf16GemmVariant.Wgmma => _wgmmaSlot,
        Bf16GemmVariant.Mma => _mmaSlot,
        Bf16GemmVariant.WgmmaTma => _wgmmaTmaSlot,
        Bf16GemmVariant.WgmmaWs => _wgmmaWsSlot,
        _ => null,
    };

    private static string SlotStatus(PtxGemmSlot s) =>
        s.Unavailable is not null ? "unavailable: " + s.Unavailable
        : s.Gemm is null ? "unused"
        : string.Join("; ", new[] { "NT", "NN", "TN" }.Select((f, i) => $"{f} {s.Form[i] ?? "unchecked"}" + (s.FormBf16[i] is { } b ? $" (bf16 stores {b})" : "")
            + (s.FormPersistent[i] is { } p ? $" (persistent {p})" : "") + (s.FormSum[i] is { } u ? $" (summed {u})" : "")
            + (i == 0 && s.SwiGlu is { } w ? $" (SwiGLU {w})" : "") + (i == 0 && s.Rope is { } r ? $" (RoPE {r})" : "")));

    /// <summary>
    /// Whether the PTX kernels compute c[m, n] (+)= op(a)·op(b): the NT, NN or TN form, a and b starting on 16 bytes
    /// and c on 8, m·n within 2³¹, and every row of a and b on 16 bytes: k a multiple of 8 where a k-contiguous operand
    /// has rows of k (NT, NN), n a multiple of 8 where b has rows of n (NN, TN), m a multiple of 8 where a has rows of m
    /// (TN), and n even (c's rows on 8 bytes; on 4 for a BF16 c, which starts on 4). Any other size: ragged tiles are
    /// bounded in the kernels.
    /// </summary>
    internal static bool AcceptsPtxGemm(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB) =>
        !(transA && transB) && m > 0 && n > 0 && k > 0
        && (transA || k % 8 == 0) && (transB || n % 8 == 0) && (!transA || m % 8 == 0) && n % 2 == 0
        && a.ByteOffset % 16 == 0 && b.ByteOffset % 16 == 0 && c.ByteOffset % (c.Type == DType.BF16 ? 4 : 8) == 0 && (long)m * n <= int.MaxValue
        && a.Count >= (long)m * k && b.Count >= (long)n * k && c.Count >= (long)m * n;

    /// <summary>
    /// The split of k for a PTX GEMM (one 128×256 block per multiprocessor: their shared memory fills it) over
    /// <paramref name="tiles"/> output tiles of an m·n = <paramref name="mn"/> product: the count of at most 16 slices
    /// (of at least 256 of k) with the least estimated time, where a tile's 64-wide k step takes
    /// <see cref="PtxStepMicroseconds"/> on a multiprocessor, the slices run in waves of one block per multiprocessor,
    /// and a split writes its partials and the reduce kernel reads them and writes c, (2·splits + 1)·mn floats at
    /// <see cref="PtxBytesPerMicrosecond"/>, plus a launch. (The rule of the ILGPU kernels, two tiles per
    /// multiprocessor, split the 8192×768×2048 products of the 134M model in two, where one pass is faster, and its
    /// 768×768×8192 weight gradients in fifteen, three waves of partials.)
    /// </summary>
    internal static (int Splits, int KPerSplit) PtxSplitPlanFor(long tiles, long mn, int k, int multiprocessors)
    {
        (int, int) best = (1, k);
        double bestCost = double.MaxValue;
        int sms = Math.Max(1, multiprocessors), most = Math.Clamp(k / 256, 1, 16);
        for (int s = 1; s <= most; s++)
        {
            var (splits, kPer) = RoundSplit(k, s, GemmPtx.TileK);
            if (splits > 1 && splits * mn > MaxSplitScratch) break;
            long waves = (tiles * splits + sms - 1) / sms;
            double cost = waves * Math.Ceiling(kPer / (double)GemmPtx.TileK) * PtxStepMicroseconds
                + (splits > 1 ? (2.0 * splits + 1) * mn * sizeof(float) / PtxBytesPerMicrosecond + PtxLaunchMicroseconds : 0);
            if (cost < bestCost)
            {
                bestCost = cost;
                best = (splits, kPer);
            }
        }
        return best;
    }

    /// <summary>
    /// One 64-wide k step of a 128×256 tile on one multiprocessor, in µs: 2·128·256·64 flop at the warp-specialized
    /// wgmma's 870 TFLOP/s over 132 multiprocessors (H100, 2026-11-26).
    /// </summary>
    private const double PtxStepMicroseconds = 0.64;

    /// <summary>Device memory bandwidth for the split partials, bytes per µs (an H100 copied 2.85 TB/s).</summary>
    private const double PtxBytesPerMicrosecond = 2.8e6;

    /// <summary>The split reduce kernel's launch, µs.</summary>
    private const double PtxLaunchMicroseconds = 3;

    /// <summary>
    /// Runs the selected PTX kernel (<see cref="Bf16GemmVariant.Wgmma"/>, <see cref="Bf16GemmVariant.WgmmaTma"/>,
    /// <see cref="Bf16GemmVariant.WgmmaWs"/> or <see cref="Bf16GemmVariant.Mma"/>) when the
    /// device runs it, <see cref="AcceptsPtxGemm"/> holds and the form passed its check; split in k by
    /// <see cref="PtxSplitPlanFor"/> (or HFT_SPLIT_K; slices of a multiple of 64, partials summed by the split reduce
    /// kernel). A BF16 c is written in bf16 by the kernel (unsplit; the form's bf16 stores checked too) or by the split
    /// reduce kernel. Returns whether it did.
    /// </summary>
    private bool TryMatMulPtx(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate) =>
        TryMatMulPtx(c, [new MatMulPart(a, b, k)], m, n, transA, transB, accumulate);

    /// <summary>
    /// As the other overload, for a sum of products (<see cref="Backend.MatMulSum"/>): several parts take one launch
    /// over their k together where the module sums parts (<see cref="PtxGemm.MaxParts"/>: the warp-specialized ones),
    /// each part is accepted, every part but the last has a k of a multiple of 64, and the form's summed launch passed
    /// its own check (<see cref="SumChecked"/>); false otherwise (nothing queued).
    /// </summary>
    private bool TryMatMulPtx(Tensor c, ReadOnlySpan<MatMulPart> parts, int m, int n, bool transA, bool transB, bool accumulate)
    {
        if (!AcceptsPtxParts(c, parts, m, n, transA, transB)) return false;
        foreach (var slot in PtxChain(Bf16GemmVariant))
        {
            if (TryMatMulPtx(slot, c, parts, m, n, transA, transB, accumulate)) return true;
            if (!PtxFallback) break;
        }
        return false;
    }

    /// <summary>
    /// Whether a product the selected PTX kernel cannot take (its module did not load or is turned off, its form failed
    /// its check, or the driver refused the launch) goes to the next PTX kernel of <see cref="PtxChain"/> before the
    /// ILGPU kernels (true, the default), or straight to those (false: what the bench sets to time one kernel alone).
    /// </summary>
    public bool PtxFallback { get; set; } = true;

    /// <summary>
    /// The PTX kernels a product tries in turn when <paramref name="variant"/> is selected: from the warp-specialized
    /// wgmma down through the TMA and cp.async wgmma to mma (each from the selected one on; none for the ILGPU kernels).
    /// </summary>
    private IEnumerable<PtxGemmSlot> PtxChain(Bf16GemmVariant variant) => PtxFallbackOrder(variant).Select(v => SlotOf(v)!);

    /// <summary>The variants of <see cref="PtxChain"/>: wgmma-ws, wgmma-tma, wgmma, mma from <paramref name="selected"/> on; empty for simple and fast.</summary>
    internal static IReadOnlyList<Bf16GemmVariant> PtxFallbackOrder(Bf16GemmVariant selected)
    {
        Bf16GemmVariant[] chain = [Bf16GemmVariant.WgmmaWs, Bf16GemmVariant.WgmmaTma, Bf16GemmVariant.Wgmma, Bf16GemmVariant.Mma];
        return [.. chain.SkipWhile(v => v != selected)];
    }

    /// <summary>A product (or sum of products) on one PTX kernel, as <see cref="TryMatMulPtx(Tensor, ReadOnlySpan{MatMulPart}, int, int, bool, bool, bool)"/>.</summary>
    private bool TryMatMulPtx(PtxGemmSlot slot, Tensor c, ReadOnlySpan<MatMulPart> parts, int m, int n, bool transA, bool transB, bool accumulate)
    {
        if (Module(slot) is not { } gemm || parts.Length > gemm.MaxParts || !FormChecked(slot, gemm, transA, transB)) return false;
        if (parts.Length > 1 && !SumChecked(slot, gemm, transA, transB)) return false;
        int k = 0;
        foreach (var part in parts) k += part.K;
        var (a, b) = (parts[0].A, parts[0].B);
        GemmPart[]? more = parts.Length > 1 ? [.. parts[1..].ToArray().Select(p => new GemmPart(Address(p.A), Address(p.B), p.K))] : null;
        bool bf16Out = c.Type == DType.BF16;
        bool swapped = slot.Swapped[Form(transA, transB)];
        int tilesM = (m + GemmPtx.TileM - 1) / GemmPtx.TileM, tilesN = (n + GemmPtx.TileN - 1) / GemmPtx.TileN;
        long tiles = (long)tilesM * tilesN;
        var (splits, kPer) = ForceSplitK > 0 ? SplitPlan(tiles, (long)m * n, k, GemmPtx.TileK)
            : PtxSplitPlanFor(tiles, (long)m * n, k, _acc.NumMultiprocessors);
        IntPtr pa = Address(a), pb = Address(b);
        var store = bf16Out ? GemmStore.WriteBf16 : accumulate ? GemmStore.Add : GemmStore.Write;
        if (splits == 1 && bf16Out && !FormChecked(slot, gemm, transA, transB, bf16Out: true)) return false;
        if (splits == 1 && ForceSplitK == 0 && slot == _wgmmaWsSlot && NarrowTiles && TryNarrow(c, pa, pb, m, n, k, transA, transB, store, more)) return true;
        try
        {
            if (splits == 1)
                gemm.Launch(transA, transB, LaunchBlocks(slot, gemm, transA, transB, tiles), Address(c), pa, pb, m, n, k, store, tilesM, tilesN, kPer, m * n, swapped,
                    more);
            else
            {
                var partials = Scratch((long)splits * m * n);
                gemm.Launch(transA, transB, LaunchBlocks(slot, gemm, transA, transB, tiles * splits), _scratch!.NativePtr, pa, pb, m, n, k, GemmStore.Write,
                    tilesM, tilesN, kPer, m * n, swapped, more);
                SplitReduce(c, partials, m, n, splits, accumulate);
            }
        }
        catch (InvalidOperationException e) when (gemm.TensorMaps)
        {
            // The driver refused a tensor map or the launch (nothing was queued): this product takes the next kernel.
            WarnOnce(slot, $"warning: {e.Message}; that product takes the next bf16 kernel");
            return false;
        }
        Interlocked.Increment(ref slot.Launches);
        return true;
    }

    /// <summary>
    /// <see cref="AcceptsPtxGemm"/> for every part, and (several parts) each but the last of a k of a multiple of 64,
    /// every operand bf16, and c F32.
    /// </summary>
    internal static bool AcceptsPtxParts(Tensor c, ReadOnlySpan<MatMulPart> parts, int m, int n, bool transA, bool transB)
    {
        if (parts.Length > 1 && c.Type != DType.F32) return false;
        for (int i = 0; i < parts.Length; i++)
        {
            var (a, b, k) = parts[i];
            if (!AcceptsPtxGemm(c, a, b, m, n, k, transA, transB) || (parts.Length > 1 && (a.Type != DType.BF16 || b.Type != DType.BF16))
                || (i < parts.Length - 1 && k % GemmPtx.TileK != 0)) return false;
        }
        return true;
    }

    /// <inheritdoc/>
    protected override void MatMulSumCore(Tensor c, int m, int n, bool transA, bool transB, bool accumulate, ReadOnlySpan<MatMulPart> parts)
    {
        if (SummedGemm && parts.Length > 1 && parts[0].A.Type == DType.BF16 && TryMatMulPtx(c, parts, m, n, transA, transB, accumulate)) return;
        base.MatMulSumCore(c, m, n, transA, transB, accumulate, parts);
    }

    /// <summary>
    /// Whether tiles of 128 × <see cref="WgmmaWsGemmPtx.NarrowTileN"/> finish an unsplit m × n product in less than 0.9
    /// of the time of 128 × 256 ones, taking a wave of one block per multiprocessor to last in proportion to its tile
    /// width: for n = 768 and m = 8192, 2 waves of 192 columns against 2 of 256 (the 256-wide second wave 45 % full);
    /// for n = 2048, 6 waves of 192 against 4 of 256, so the wide tiles stay.
    /// </summary>
    internal static bool NarrowTilesPay(int m, int n, int multiprocessors)
    {
        long tilesM = (m + GemmPtx.TileM - 1) / GemmPtx.TileM, sms = Math.Max(1, multiprocessors);
        long Waves(int width) => (tilesM * ((n + width - 1) / width) + sms - 1) / sms;
        return Waves(WgmmaWsGemmPtx.NarrowTileN) * WgmmaWsGemmPtx.NarrowTileN < 0.9 * Waves(GemmPtx.TileN) * GemmPtx.TileN;
    }

    /// <summary>
    /// An unsplit product (or sum of products, <paramref name="more"/>) on the 128 × 192 warp-specialized kernel where
    /// <see cref="NarrowTilesPay"/>, its module loads and the form passed its checks; false (nothing queued) otherwise,
    /// and the caller goes on with 128 × 256 tiles.
    /// </summary>
    private bool TryNarrow(Tensor c, IntPtr pa, IntPtr pb, int m, int n, int k, bool transA, bool transB, GemmStore store, GemmPart[]? more)
    {
        var slot = _wgmmaWsNarrowSlot;
        if (!NarrowTilesPay(m, n, _acc.NumMultiprocessors) || Module(slot) is not { } gemm || !FormChecked(slot, gemm, transA, transB)
            || (store == GemmStore.WriteBf16 && !FormChecked(slot, gemm, transA, transB, bf16Out: true))
            || (more is not null && !SumChecked(slot, gemm, transA, transB))) return false;
        int tilesM = (m + GemmPtx.TileM - 1) / GemmPtx.TileM, tilesN = (n + gemm.TileN - 1) / gemm.TileN;
        try
        {
            gemm.Launch(transA, transB, LaunchBlocks(slot, gemm, transA, transB, (long)tilesM * tilesN), Address(c), pa, pb, m, n, k, store, tilesM, tilesN, k, m * n,
                slot.Swapped[Form(transA, transB)], more);
        }
        catch (InvalidOperationException e)
        {
            WarnOnce(slot, $"warning: {e.Message}; that product uses 128×256 tiles");
            return false;
        }
        Interlocked.Increment(ref slot.Launches);
        return true;
    }

    /// <summary>
    /// Blocks for a launch over <paramref name="tiles"/> tiles: for the warp-specialized kernels with
    /// <see cref="PersistentGemm"/>, at most one per multiprocessor (a block's shared memory fills one) once the form's
    /// persistent launch passed its check; otherwise one per tile.
    /// </summary>
    private int LaunchBlocks(PtxGemmSlot slot, PtxGemm gemm, bool transA, bool transB, long tiles)
    {
        int sms = Math.Max(1, _acc.NumMultiprocessors);
        bool persistent = PersistentGemm && (slot == _wgmmaWsSlot || slot == _wgmmaWsNarrowSlot) && tiles > sms && PersistentChecked(slot, gemm, transA, transB);
        return (int)(persistent ? sms : tiles);
    }

    /// <summary>
    /// Whether a form's persistent launch passed its check: on first use, the check's 256×512×320 product (through the
    /// stage ring: 5 k steps per tile) with two blocks over all its tiles, against the simple kernel as in
    /// <see cref="FormChecked"/>. A failure is reported once and kept; that form then launches a block per tile.
    /// </summary>
    private bool PersistentChecked(PtxGemmSlot slot, PtxGemm gemm, bool transA, bool transB)
    {
        int form = Form(transA, transB);
        return CheckedOnce(ref slot.FormPersistent[form], () => CheckShape(gemm, 256, 512, 320, transA, transB, slot.Swapped[form], 20261130 + form, grid: 2),
            $"the {slot.Name} bf16 GEMM's persistent launch ({FormName(form)}) disagrees with the simple kernel", "that form launches a block per tile");
    }

    /// <summary>
    /// A first-use check kept in <paramref name="state"/> ("checked" or "failed: …"): <paramref name="check"/> (null where
    /// it agrees) runs the first time only, and a failure is reported once on stderr as <paramref name="what"/> (where),
    /// then <paramref name="instead"/>. Returns whether the check passed.
    /// </summary>
    private static bool CheckedOnce(ref string? state, Func<string?> check, string what, string instead)
    {
        if (state is { } done) return done == "checked";
        string? mismatch = check();
        state = mismatch is null ? "checked" : "failed: " + mismatch;
        if (mismatch is not null) Console.Error.WriteLine($"warning: {what} ({mismatch}); {instead}");
        return mismatch is null;
    }

    /// <summary>NT, NN or TN for a form index (<see cref="Form"/>).</summary>
    private static string FormName(int form) => form switch { 0 => "NT", 1 => "NN", _ => "TN" };

    /// <summary>
    /// Whether a form's summed launch (<see cref="Backend.MatMulSum"/>) passed its check: on first use, a 256×512 product
    /// over three parts of k 128, 64 and 136 (separate tensors; the last ragged), as one launch, against the simple
    /// kernel over their k together, as in <see cref="FormChecked"/>. A failure is reported once and kept; that form's
    /// sums then take a launch per part.
    /// </summary>
    private bool SumChecked(PtxGemmSlot slot, PtxGemm gemm, bool transA, bool transB)
    {
        int form = Form(transA, transB);
        return CheckedOnce(ref slot.FormSum[form],
            () => CheckShape(gemm, 256, 512, 328, transA, transB, slot.Swapped[form], 20261201 + form, parts: [128, 64, 136]),
            $"the {slot.Name} bf16 GEMM's summed launch ({FormName(form)}) disagrees with the simple kernel", "that form's sums take a launch per product");
    }

    /// <summary>Writes a slot's warning to stderr the first time only.</summary>
    private static void WarnOnce(PtxGemmSlot slot, string message)
    {
        if (Interlocked.Exchange(ref slot.Warned, 1) == 0) Console.Error.WriteLine(message);
    }

    /// <summary>Whether a slot holds one of the wgmma modules (sm_90a; descriptors of <see cref="WgmmaGemmPtx.DescriptorBits"/>).</summary>
    private bool IsWgmma(PtxGemmSlot slot) => slot == _wgmmaSlot || slot == _wgmmaTmaSlot || slot == _wgmmaWsSlot || slot == _wgmmaWsNarrowSlot;

    /// <summary>The device address of a tensor's first byte.</summary>
    private static IntPtr Address(Tensor t) => Arena(t).DeviceAddress(t);

    private static int Form(bool transA, bool transB) => transA ? 2 : transB ? 0 : 1;

    /// <summary>A slot's module, loading it on first use; null where the device cannot run it (the reason is kept).</summary>
    private PtxGemm? Module(PtxGemmSlot slot)
    {
        if (slot.Gemm is not null || slot.Unavailable is not null) return slot.Gemm;
        if (EnvOff(slot.OffSwitch))
        {
            slot.Unavailable = $"turned off by {slot.OffSwitch}=off";
            return null;
        }
        if (_acc is not CudaAccelerator cuda)
        {
            slot.Unavailable = "needs a CUDA device";
            return null;
        }
        var arch = cuda.Architecture;
        try
        {
            if (IsWgmma(slot))
            {
                if (arch.Major != 9 || arch.Minor != 0)
                    slot.Unavailable = $"needs compute capability 9.0 (sm_90a), {_acc.Name} has {arch.Major}.{arch.Minor}";
                else if (slot == _wgmmaWsSlot)
                    slot.Gemm = PtxGemm.Load(cuda, "warp-specialized wgmma GEMM", WgmmaWsGemmPtx.Module, WgmmaWsGemmPtx.EntryOf,
                        WgmmaWsGemmPtx.SharedBytes, tensorMaps: true, WgmmaWsGemmPtx.Threads, maxParts: WgmmaWsGemmPtx.MaxParts);
                else if (slot == _wgmmaWsNarrowSlot)
                    slot.Gemm = PtxGemm.Load(cuda, "warp-specialized wgmma GEMM (128×192 tiles)", WgmmaWsGemmPtx.NarrowModule, WgmmaWsGemmPtx.NarrowEntryOf,
                        WgmmaWsGemmPtx.SharedBytesFor(WgmmaWsGemmPtx.NarrowTileN), tensorMaps: true, WgmmaWsGemmPtx.Threads, WgmmaWsGemmPtx.NarrowTileN,
                        WgmmaWsGemmPtx.MaxParts);
                else if (slot == _wgmmaTmaSlot)
                    slot.Gemm = PtxGemm.Load(cuda, "wgmma GEMM with TMA loads", WgmmaGemmPtx.TmaModule, WgmmaGemmPtx.TmaEntryOf,
                        WgmmaGemmPtx.TmaSharedBytes, tensorMaps: true);
                else slot.Gemm = PtxGemm.Load(cuda, "wgmma GEMM", WgmmaGemmPtx.Module, WgmmaGemmPtx.EntryOf, WgmmaGemmPtx.SharedBytes);
            }
            else
            {
                // As many stages as fit, or fewer with HFT_MMA_STAGES (2 to 4, for tuning on a GPU machine).
                int stages = Math.Min(MmaGemmPtx.StagesFor(SharedBytesPerBlockOptIn(cuda)), EnvInt("HFT_MMA_STAGES", 2, 4, 4));
                if (arch.Major < 8) slot.Unavailable = $"needs compute capability 8.0 or later, {_acc.Name} has {arch.Major}.{arch.Minor}";
                else if (stages == 0) slot.Unavailable = $"{_acc.Name} allows a block less than {MmaGemmPtx.SharedBytes(2)} bytes of shared memory";
                else slot.Gemm = PtxGemm.Load(cuda, $"mma GEMM ({stages} stages)", MmaGemmPtx.Module(stages), MmaGemmPtx.EntryOf, MmaGemmPtx.SharedBytes(stages));
            }
        }
        catch (Exception e) when (e is InvalidOperationException or CudaException)
        {
            slot.Unavailable = e.Message;
            Console.Error.WriteLine($"warning: {e.Message}; its products take the next bf16 kernel");
        }
        return slot.Gemm;
    }

    /// <summary>
    /// The shared memory a block may opt in to (CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN); where the driver
    /// does not say, the multiprocessor's less 1 KiB (what CUDA reserves per block).
    /// </summary>
    private static int SharedBytesPerBlockOptIn(CudaAccelerator cuda)
    {
        cuda.Bind();
        try
        {
            return CudaAPI.CurrentAPI.GetDeviceAttribute((DeviceAttributeKind)97, cuda.DeviceId);
        }
        catch (CudaException)
        {
            return cuda.MaxSharedMemoryPerMultiprocessor - 1024;
        }
    }

    /// <summary>
    /// Whether a form passed its check: on first use, a 256×512×320 product (two tiles each way, five k steps, through
    /// the stage ring) and a ragged 136×264×200 one from random bf16 operands against the simple kernel, within 1e-4 of
    /// the largest magnitude (the two sum the same exact products in another order). A wgmma form with an MN-major
    /// operand (NN, TN) that fails is tried once more with the descriptors' two byte offsets exchanged
    /// (<see cref="WgmmaGemmPtx.DescriptorBits"/>) and keeps that where it passes. A failure is reported once on
    /// stderr and kept. With <paramref name="bf16Out"/> (on a form that passed): the same two products stored in bf16,
    /// each element within 1e-4 of the largest magnitude plus 2⁻⁸ of its own of the simple kernel's fp32 result (one
    /// rounding to bf16); where that fails the form's bf16 products are computed in fp32 and rounded after.
    /// </summary>
    private bool FormChecked(PtxGemmSlot slot, PtxGemm gemm, bool transA, bool transB, bool bf16Out = false)
    {
        int form = Form(transA, transB);
        if (bf16Out) return Bf16StoresChecked(slot, gemm, transA, transB, form);
        if (slot.Form[form] is { } done) return done.StartsWith("checked", StringComparison.Ordinal);
        string name = transA ? "TN" : transB ? "NT" : "NN", first = "";
        bool tryExchanged = IsWgmma(slot) && (transA || !transB);
        foreach (bool swapped in tryExchanged ? new[] { false, true } : [false])
        {
            string? mismatch = CheckShape(gemm, 256, 512, 320, transA, transB, swapped, 20261126 + form)
                ?? CheckShape(gemm, 136, 264, 200, transA, transB, swapped, 20261127 + form);
            if (mismatch is null)
            {
                slot.Swapped[form] = swapped;
                slot.Form[form] = swapped ? "checked (descriptor byte offsets exchanged)" : "checked";
                return true;
            }
            if (!swapped) first = mismatch;
            else first += $"; with the byte offsets exchanged: {mismatch}";
        }
        slot.Form[form] = "failed: " + first;
        Console.Error.WriteLine($"warning: the {slot.Name} bf16 GEMM ({name}) disagrees with the simple kernel ({first}); that form takes the next bf16 kernel");
        return false;
    }

    /// <summary>The bf16 stores' check of a form (see <see cref="FormChecked"/>), on its first bf16 product.</summary>
    private bool Bf16StoresChecked(PtxGemmSlot slot, PtxGemm gemm, bool transA, bool transB, int form)
    {
        bool swapped = slot.Swapped[form];
        return CheckedOnce(ref slot.FormBf16[form],
            () => CheckShape(gemm, 256, 512, 320, transA, transB, swapped, 20261128 + form, bf16Out: true)
                ?? CheckShape(gemm, 136, 264, 200, transA, transB, swapped, 20261129 + form, bf16Out: true),
            $"the {slot.Name} bf16 GEMM's bf16 stores ({FormName(form)}) disagree with the simple kernel", "those products are computed in fp32 and rounded after");
    }

    /// <summary>The first-use checks' operands: <paramref name="count"/> bf16 values uniform in [−1, 1).</summary>
    private static ushort[] RandomBf16(Random rng, int count) =>
        Enumerable.Range(0, count).Select(_ => Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1))).ToArray();

    /// <summary>
    /// One product of the check: null where the PTX kernel agrees with the simple one, else where it does not. With
    /// <paramref name="bf16Out"/> the PTX kernel stores bf16, compared with the fp32 result within one rounding. With
    /// <paramref name="parts"/> (their k summing to k) the PTX kernel sums that many products of a and b cut along k
    /// into tensors of their own, in one launch.
    /// </summary>
    private string? CheckShape(PtxGemm gemm, int m, int n, int k, bool transA, bool transB, bool swapped, int seed, bool bf16Out = false, int grid = 0,
        int[]? parts = null)
    {
        parts ??= [k];
        var rng = new Random(seed);
        ushort[] a = RandomBf16(rng, m * k), b = RandomBf16(rng, n * k);
        using var arena = CreateArena();
        var ta = arena.Reserve("ptx_gemm_check_a", a.Length, DType.BF16);
        var tb = arena.Reserve("ptx_gemm_check_b", b.Length, DType.BF16);
        var want = arena.Reserve("ptx_gemm_check_want", m * n);
        var got = bf16Out ? arena.Reserve("ptx_gemm_check_got_bf16", m * n, DType.BF16) : arena.Reserve("ptx_gemm_check_got", m * n);
        var pieces = parts.Length == 1 ? [(ta, tb)] : parts.Select((pk, p) =>
            (arena.Reserve($"ptx_gemm_check_a{p}", m * pk, DType.BF16), arena.Reserve($"ptx_gemm_check_b{p}", n * pk, DType.BF16))).ToArray();
        arena.Commit();
        Upload<ushort>(ta, a);
        Upload<ushort>(tb, b);
        if (parts.Length > 1)
            for (int p = 0, kFrom = 0; p < parts.Length; kFrom += parts[p], p++)
            {
                Upload<ushort>(pieces[p].Item1, GemmPart.CutK(a, m, k, kContiguous: !transA, kFrom, parts[p]));
                Upload<ushort>(pieces[p].Item2, GemmPart.CutK(b, n, k, kContiguous: transB, kFrom, parts[p]));
            }
        MatMulBf16Simple(want, ta, tb, m, n, k, transA, transB, accumulate: false);
        if (bf16Out) Upload<ushort>(got, Enumerable.Repeat((ushort)0x7FC0, m * n).ToArray());
        else Fill(got, float.NaN);
        int tilesM = (m + GemmPtx.TileM - 1) / GemmPtx.TileM, tilesN = (n + gemm.TileN - 1) / gemm.TileN;
        GemmPart[]? more = parts.Length > 1 ? [.. pieces.Skip(1).Select((x, p) => new GemmPart(Address(x.Item1), Address(x.Item2), parts[p + 1]))] : null;
        try
        {
            gemm.Launch(transA, transB, grid > 0 ? grid : tilesM * tilesN, Address(got), Address(pieces[0].Item1), Address(pieces[0].Item2), m, n, k,
                bf16Out ? GemmStore.WriteBf16 : GemmStore.Write, tilesM, tilesN, (k + GemmPtx.TileK - 1) / GemmPtx.TileK * GemmPtx.TileK, m * n, swapped, more);
        }
        catch (InvalidOperationException e) when (gemm.TensorMaps)
        {
            return $"{m}×{n}×{k}: {e.Message}";
        }
        float[] result = bf16Out ? ToArray<ushort>(got).Select(Bf16.ToFloat).ToArray() : ToArray<float>(got);
        string? mismatch = Mismatch(ToArray<float>(want), result, n, bf16Out ? 1.0 / 256 : 0);
        return mismatch is null ? null : $"{m}×{n}×{k}: {mismatch}";
    }

    /// <summary>
    /// Where <paramref name="got"/> differs from <paramref name="want"/> by more than 1e-4 of want's largest magnitude
    /// plus <paramref name="relative"/> of the element's own (null: nowhere).
    /// </summary>
    internal static string? Mismatch(float[] want, float[] got, int n, double relative = 0)
    {
        double scale = want.Max(Math.Abs), worst = 0;
        int at = -1;
        for (int i = 0; i < want.Length; i++)
        {
            double e = Math.Abs(want[i] - got[i]) - relative * Math.Abs(want[i]);
            if (!(e <= worst)) { worst = double.IsNaN(e) ? double.PositiveInfinity : e; at = i; }
        }
        return at >= 0 && worst > 1e-4 * scale ? $"element ({at / n}, {at % n}) is {got[at]}, the simple kernel gives {want[at]}" : null;
    }
}
