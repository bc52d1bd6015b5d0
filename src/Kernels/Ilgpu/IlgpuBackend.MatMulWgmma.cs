using ILGPU;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

public sealed partial class IlgpuBackend
{
    private const int WgmmaForms = 3;

    private WgmmaGemm? _wgmma;
    private string? _wgmmaUnavailable;
    private readonly string?[] _wgmmaForm = new string?[WgmmaForms];
    private readonly bool[] _wgmmaSwapped = new bool[WgmmaForms];
    private long _wgmmaLaunches;

    /// <summary>Launches of the wgmma kernel so far.</summary>
    public long WgmmaLaunches => Interlocked.Read(ref _wgmmaLaunches);

    /// <summary>
    /// Whether the wgmma kernel computes c[m, n] (+)= op(a)·op(b): the NT, NN or TN form, m a multiple of 128, n of 256,
    /// k of 64, a and b starting on 16 bytes and c on 8, m·n within 2³¹.
    /// </summary>
    internal static bool AcceptsWgmma(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB) =>
        !(transA && transB) && m > 0 && n > 0 && k > 0
        && m % WgmmaGemmPtx.TileM == 0 && n % WgmmaGemmPtx.TileN == 0 && k % WgmmaGemmPtx.TileK == 0
        && a.ByteOffset % 16 == 0 && b.ByteOffset % 16 == 0 && c.ByteOffset % 8 == 0 && (long)m * n <= int.MaxValue
        && a.Count >= (long)m * k && b.Count >= (long)n * k && c.Count >= (long)m * n;

    /// <summary>
    /// What the wgmma kernel did on this back-end: "unused", "unavailable: …" (not CUDA compute capability 9.0, the
    /// module did not load, or HFT_WGMMA=off), or per form NT, NN, TN "checked" / "failed: …" / "unchecked".
    /// </summary>
    public string WgmmaStatus =>
        _wgmmaUnavailable is not null ? "unavailable: " + _wgmmaUnavailable
        : _wgmma is null ? "unused"
        : string.Join("; ", new[] { "NT", "NN", "TN" }.Select((f, i) => $"{f} {_wgmmaForm[i] ?? "unchecked"}"));

    /// <summary>
    /// Runs the wgmma kernel when <see cref="Bf16GemmVariant"/> is <see cref="Bf16GemmVariant.Wgmma"/>, the device
    /// runs it, <see cref="AcceptsWgmma"/> holds and the form passed its check; split in k as the other kernels (slices
    /// of a multiple of 64, partials summed by the split reduce kernel). Returns whether it did.
    /// </summary>
    private bool TryMatMulWgmma(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        if (Bf16GemmVariant != Bf16GemmVariant.Wgmma || !AcceptsWgmma(c, a, b, m, n, k, transA, transB)) return false;
        if (WgmmaModule() is not { } gemm || !WgmmaFormChecked(transA, transB)) return false;
        bool swapped = _wgmmaSwapped[WgmmaForm(transA, transB)];
        int tilesM = m / WgmmaGemmPtx.TileM, tilesN = n / WgmmaGemmPtx.TileN;
        long tiles = (long)tilesM * tilesN;
        var (splits, kPer) = SplitPlan(tiles, (long)m * n, k, WgmmaGemmPtx.TileK);
        IntPtr pa = Address(a), pb = Address(b);
        if (splits == 1)
            gemm.Launch(transA, transB, (int)tiles, Address(c), pa, pb, m, n, k, accumulate, tilesM, tilesN, kPer, m * n, swapped);
        else
        {
            var partials = Scratch((long)splits * m * n);
            gemm.Launch(transA, transB, (int)(tiles * splits), _scratch!.NativePtr, pa, pb, m, n, k, false, tilesM, tilesN, kPer, m * n, swapped);
            _matmulSplitReduce(Config(StreamGroups((long)m * n)), F(c).SubView(0, (long)m * n), partials, splits, accumulate ? 1 : 0);
        }
        Interlocked.Increment(ref _wgmmaLaunches);
        return true;
    }

    /// <summary>The device address of a tensor's first byte.</summary>
    private static IntPtr Address(Tensor t) => Arena(t).DeviceAddress(t);

    /// <summary>The loaded module, loading it on first use; null where the device cannot run it (the reason is kept).</summary>
    private WgmmaGemm? WgmmaModule()
    {
        if (_wgmma is not null || _wgmmaUnavailable is not null) return _wgmma;
        if (string.Equals(Environment.GetEnvironmentVariable("HFT_WGMMA")?.Trim(), "off", StringComparison.OrdinalIgnoreCase))
        {
            _wgmmaUnavailable = "turned off by HFT_WGMMA=off";
            return null;
        }
        if (!WgmmaGemm.Supports(_acc))
        {
            _wgmmaUnavailable = _acc is CudaAccelerator cuda
                ? $"needs compute capability 9.0 (sm_90a), {_acc.Name} has {cuda.Architecture.Major}.{cuda.Architecture.Minor}"
                : "needs a CUDA device";
            return null;
        }
        try
        {
            _wgmma = WgmmaGemm.Load((CudaAccelerator)_acc);
        }
        catch (InvalidOperationException e)
        {
            _wgmmaUnavailable = e.Message;
            Console.Error.WriteLine($"warning: {e.Message}; the bf16 GEMM falls back to the simple kernel");
        }
        return _wgmma;
    }

    private static int WgmmaForm(bool transA, bool transB) => transA ? 2 : transB ? 0 : 1;

    /// <summary>
    /// Whether a form passed its check: on first use, a 256×512×320 product (two tiles each way, five k steps, through
    /// the stage ring) from random bf16 operands against the simple kernel, within 1e-4 of the largest magnitude (the
    /// two sum the same exact products in another order). A form with an MN-major operand (NN, TN) that fails is
    /// tried once more with the descriptors' two byte offsets exchanged (<see cref="WgmmaGemmPtx.DescriptorBits"/>)
    /// and keeps that where it passes. A failure is reported once on stderr and kept.
    /// </summary>
    private bool WgmmaFormChecked(bool transA, bool transB)
    {
        int form = WgmmaForm(transA, transB);
        if (_wgmmaForm[form] is { } done) return done.StartsWith("checked", StringComparison.Ordinal);
        const int m = 256, n = 512, k = 320;
        var rng = new Random(20261126 + form);
        var a = new ushort[m * k];
        var b = new ushort[n * k];
        for (int i = 0; i < a.Length; i++) a[i] = Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1));
        for (int i = 0; i < b.Length; i++) b[i] = Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1));
        using var arena = CreateArena();
        var ta = arena.Reserve("wgmma_check_a", a.Length, DType.BF16);
        var tb = arena.Reserve("wgmma_check_b", b.Length, DType.BF16);
        var want = arena.Reserve("wgmma_check_want", m * n);
        var got = arena.Reserve("wgmma_check_got", m * n);
        arena.Commit();
        Upload<ushort>(ta, a);
        Upload<ushort>(tb, b);
        MatMulBf16Simple(want, ta, tb, m, n, k, transA, transB, accumulate: false);
        float[] w = ToArray<float>(want);
        string name = transA ? "TN" : transB ? "NT" : "NN", first = "";
        foreach (bool swapped in transA || !transB ? new[] { false, true } : [false])
        {
            Fill(got, float.NaN);
            _wgmma!.Launch(transA, transB, (m / WgmmaGemmPtx.TileM) * (n / WgmmaGemmPtx.TileN), Address(got), Address(ta), Address(tb),
                m, n, k, false, m / WgmmaGemmPtx.TileM, n / WgmmaGemmPtx.TileN, k, m * n, swapped);
            string? mismatch = Mismatch(w, ToArray<float>(got), n);
            if (mismatch is null)
            {
                _wgmmaSwapped[form] = swapped;
                _wgmmaForm[form] = swapped ? "checked (descriptor byte offsets exchanged)" : "checked";
                return true;
            }
            if (!swapped) first = mismatch;
            else first += $"; with the byte offsets exchanged: {mismatch}";
        }
        _wgmmaForm[form] = "failed: " + first;
        Console.Error.WriteLine($"warning: the wgmma bf16 GEMM ({name}) disagrees with the simple kernel ({first}); that form uses the simple kernel");
        return false;
    }

    /// <summary>Where <paramref name="got"/> differs from <paramref name="want"/> by more than 1e-4 of want's largest magnitude (null: nowhere).</summary>
    private static string? Mismatch(float[] want, float[] got, int n)
    {
        double scale = want.Max(Math.Abs), worst = 0;
        int at = -1;
        for (int i = 0; i < want.Length; i++)
        {
            double e = Math.Abs(want[i] - got[i]);
            if (!(e <= worst)) { worst = double.IsNaN(e) ? double.PositiveInfinity : e; at = i; }
        }
        return at >= 0 && worst > 1e-4 * scale ? $"element ({at / n}, {at % n}) is {got[at]}, the simple kernel gives {want[at]}" : null;
    }
}
