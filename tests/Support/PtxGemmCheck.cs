using HftRuntime.Kernels.Ilgpu;

namespace HftRuntime.Tests.Support;

/// <summary>
/// Runs a bf16 GEMM module written as PTX (one of the <see cref="WgmmaGemmPtx"/>-style modules: same parameters, tiles
/// and layouts of a, b and c) through <see cref="PtxInterpreter"/> against float64; with <paramref name="TensorMaps"/>
/// its entries also take a's and b's tensor maps (<see cref="GemmTensorMaps.For"/>) after the other parameters; blocks
/// of <paramref name="Threads"/> threads, tiles <paramref name="TileN"/> wide.
/// </summary>
/// <paramref name="MaxParts"/> above 1: the entries take <see cref="WgmmaWsGemmPtx.PartStarts"/> and the parts' maps
/// (<see cref="WgmmaWsGemmPtx.TensorMaps"/>), and a product may be run as a sum of parts.
internal sealed record PtxGemmCheck(string Module, Func<bool, bool, string> EntryOf, int SharedBytes, bool TensorMaps = false, int Threads = WgmmaGemmPtx.Threads,
    int TileN = WgmmaGemmPtx.TileN, int MaxParts = 1)
{
    /// <summary>
    /// Runs the entry of a form in the interpreter (with <paramref name="late"/> the other extreme of asynchrony, in
    /// the other thread order, or with <paramref name="ahead"/> in thread order with the first warpgroup running ahead
    /// of the second); the worst error against float64 as a multiple of the tolerance (1e-5 of Σ|a·b|). A
    /// <paramref name="grid"/> below the tiles launches that many blocks (a persistent kernel loops over the rest).
    /// <paramref name="parts"/>: the k of each part of a summed launch (their sum is k): a and b are cut along k into
    /// that many separate tensors, and the launch sums their products.
    /// </summary>
    public double WorstError(bool transA, bool transB, int m, int n, int k, bool accumulate, int splits, out string where,
        bool swapped = false, int group = WgmmaGemmPtx.Group, bool late = false, bool ahead = false, int grid = 0, int[]? parts = null)
    {
        var rng = new Random(m * 7 + n * 3 + k + (transA ? 1 : 0) + (transB ? 2 : 0));
        ushort[] a = Bf16Gemm.RandomBf16(rng, m * k), b = Bf16Gemm.RandomBf16(rng, n * k);
        int kPer = splits == 1 ? (k + 63) / 64 * 64 : ((k + splits - 1) / splits + 63) / 64 * 64;
        var c0 = new float[splits * m * n];
        for (int i = 0; i < c0.Length; i++) c0[i] = accumulate ? (float)(rng.NextDouble() * 2 - 1) : float.NaN;
        var cBytes = new byte[c0.Length * 4];
        Buffer.BlockCopy(c0, 0, cBytes, 0, cBytes.Length);
        var result = Run(transA, transB, m, n, k, a, b, cBytes, accumulate ? GemmStore.Add : GemmStore.Write, splits, kPer, swapped, group, late, ahead, grid, parts);
        if (result is null)
        {
            where = "a store landed outside c";
            return double.PositiveInfinity;
        }
        var got = new float[splits * m * n];
        Buffer.BlockCopy(result, 0, got, 0, result.Length);

        double worst = 0;
        where = "";
        for (int z = 0; z < splits; z++)
        {
            // Slice z holds the product over its k range.
            int mn = m * n;
            double ratio = Bf16Gemm.WorstRatio(a, b, c0.AsSpan(z * mn, mn), got.AsSpan(z * mn, mn), m, n, k, transA, transB, accumulate,
                z * kPer, Math.Min(k, (z + 1) * kPer), out int i, out int j);
            if (ratio > worst) { worst = ratio; where = $"slice {z} ({i}, {j}): {got[z * mn + i * n + j]}, error {ratio:g3} × the tolerance"; }
        }
        return worst;
    }

    /// <summary>
    /// Runs a form with bf16 stores (<see cref="GemmStore.WriteBf16"/>) and with fp32 ones on the same operands: null
    /// where every bf16 element is the fp32 one rounded to nearest even (and nothing landed outside c), else where not.
    /// </summary>
    public string? Bf16StoresMismatch(bool transA, bool transB, int m, int n, int k, bool late = false)
    {
        var rng = new Random(m * 5 + n + k * 3);
        ushort[] a = Bf16Gemm.RandomBf16(rng, m * k), b = Bf16Gemm.RandomBf16(rng, n * k);
        int kPer = (k + 63) / 64 * 64;
        var fp32 = Run(transA, transB, m, n, k, a, b, Enumerable.Repeat((byte)0xFF, m * n * 4).ToArray(), GemmStore.Write, 1, kPer, false,
            WgmmaGemmPtx.Group, late, ahead: false);
        var bf16 = Run(transA, transB, m, n, k, a, b, Enumerable.Repeat((byte)0xFF, m * n * 2).ToArray(), GemmStore.WriteBf16, 1, kPer, false,
            WgmmaGemmPtx.Group, late, ahead: false);
        if (fp32 is null || bf16 is null) return "a store landed outside c";
        for (int i = 0; i < m * n; i++)
        {
            float want = BitConverter.ToSingle(fp32, 4 * i);
            ushort got = BitConverter.ToUInt16(bf16, 2 * i);
            if (got != Kernels.Bf16.FromFloat(want))
                return $"({i / n}, {i % n}): bf16 0x{got:x4}, the fp32 store {want} rounds to 0x{Kernels.Bf16.FromFloat(want):x4}";
        }
        return null;
    }

    /// <summary>
    /// Runs the entry of a form on a and b with c's initial bytes <paramref name="c"/> (<paramref name="splits"/> slices
    /// of m·n elements, 4 or, with bf16 stores, 2 bytes each): c's bytes afterwards, or null where a store landed
    /// outside c. With <paramref name="parts"/>, a and b are cut along k into separate tensors, one pair per part.
    /// </summary>
    private byte[]? Run(bool transA, bool transB, int m, int n, int k, ushort[] a, ushort[] b, byte[] c, GemmStore store, int splits, int kPer,
        bool swapped, int group, bool late, bool ahead, int grid = 0, int[]? parts = null)
    {
        parts ??= [k];
        if (parts.Sum() != k || parts.Length > MaxParts) throw new ArgumentException("the parts' k must sum to k, at most MaxParts of them");
        // Part p's a and b: k from kFrom to kFrom + its k, along rows or columns as the operand's layout has it.
        var pieces = new List<(ushort[] A, ushort[] B, int K)>();
        for (int p = 0, kFrom = 0; p < parts.Length; kFrom += parts[p], p++)
            pieces.Add(parts.Length == 1 ? (a, b, k) : (GemmPart.CutK(a, m, k, kContiguous: !transA, kFrom, parts[p]), GemmPart.CutK(b, n, k, kContiguous: transB, kFrom, parts[p]), parts[p]));
        long cBytes = c.Length, at = Align(cBytes);
        var addresses = new List<(long A, long B)>();
        foreach (var piece in pieces)
        {
            long aAt = at, bAt = Align(aAt + piece.A.Length * 2L);
            addresses.Add((aAt, bAt));
            at = Align(bAt + piece.B.Length * 2L);
        }
        var ptx = new PtxInterpreter(Module, EntryOf(transA, transB), PtxGemm.ParameterNames(TensorMaps, MaxParts), (int)at)
        {
            LateWgmmaEarlyCopies = late,
            ReverseThreadOrder = late && !ahead,
            FirstWarpgroupAhead = ahead,
        };
        Buffer.BlockCopy(c, 0, ptx.Global, 0, c.Length);
        for (int p = 0; p < pieces.Count; p++)
        {
            Buffer.BlockCopy(pieces[p].A, 0, ptx.Global, (int)addresses[p].A, pieces[p].A.Length * 2);
            Buffer.BlockCopy(pieces[p].B, 0, ptx.Global, (int)addresses[p].B, pieces[p].B.Length * 2);
        }
        // Everything past c (the gaps, a and b) must come out as it went in: no store outside c.
        var outside = ptx.Global.AsSpan((int)cBytes).ToArray();
        int tilesM = (m + WgmmaGemmPtx.TileM - 1) / WgmmaGemmPtx.TileM, tilesN = (n + TileN - 1) / TileN;
        ulong g = PtxInterpreter.GlobalBase;
        // The arguments as PtxGemm.Launch builds them; the maps' values are handles the interpreter looks up (the
        // driver's encoding is opaque).
        var shape = new GemmLaunchShape(transA, transB, m, n, k, store, tilesM, tilesN, kPer, m * n, swapped, group);
        var gemmParts = pieces.Select((piece, p) => new GemmPart((IntPtr)(long)(g + (ulong)addresses[p].A), (IntPtr)(long)(g + (ulong)addresses[p].B), piece.K)).ToArray();
        if (!TensorMaps && parts.Length > 1) throw new ArgumentException("only a module with tensor maps sums parts");
        var (scalars, maps) = PtxGemm.Arguments(shape, g, gemmParts, TensorMaps, MaxParts, TileN);
        var args = scalars.ToList();
        for (int i = 0; i < maps.Length; i++)
        {
            ptx.TensorMaps[1 + (ulong)i] = maps[i];
            args.Add(1 + (ulong)i);
        }
        ptx.Run(grid > 0 ? grid : tilesM * tilesN * splits, Threads, SharedBytes, [.. args]);
        if (!ptx.Global.AsSpan((int)cBytes).SequenceEqual(outside)) return null;
        return ptx.Global.AsSpan(0, (int)cBytes).ToArray();
    }

    private static long Align(long bytes) => (bytes + 255) / 256 * 256;
}
