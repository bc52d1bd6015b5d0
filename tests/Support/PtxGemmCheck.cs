using HftRuntime.Kernels.Ilgpu;

namespace HftRuntime.Tests.Support;

/// <summary>
/// Runs a bf16 GEMM module written as PTX (one of the <see cref="WgmmaGemmPtx"/>-style modules: same parameters, tiles
/// and layouts of a, b and c) through <see cref="PtxInterpreter"/> against float64; with <paramref name="TensorMaps"/>
/// its entries also take a's and b's tensor maps (<see cref="GemmTensorMaps.For"/>) after the other parameters; blocks
/// of <paramref name="Threads"/> threads, tiles <paramref name="TileN"/> wide.
/// </summary>
internal sealed record PtxGemmCheck(string Module, Func<bool, bool, string> EntryOf, int SharedBytes, bool TensorMaps = false, int Threads = WgmmaGemmPtx.Threads,
    int TileN = WgmmaGemmPtx.TileN)
{
    /// <summary>
    /// Runs the entry of a form in the interpreter (with <paramref name="late"/> the other extreme of asynchrony, in
    /// the other thread order, or with <paramref name="ahead"/> in thread order with the first warpgroup running ahead
    /// of the second); the worst error against float64 as a multiple of the tolerance (1e-5 of Σ|a·b|).
    /// </summary>
    public double WorstError(bool transA, bool transB, int m, int n, int k, bool accumulate, int splits, out string where,
        bool swapped = false, int group = WgmmaGemmPtx.Group, bool late = false, bool ahead = false)
    {
        var rng = new Random(m * 7 + n * 3 + k + (transA ? 1 : 0) + (transB ? 2 : 0));
        ushort[] a = Bf16Gemm.RandomBf16(rng, m * k), b = Bf16Gemm.RandomBf16(rng, n * k);
        int kPer = splits == 1 ? (k + 63) / 64 * 64 : ((k + splits - 1) / splits + 63) / 64 * 64;
        long cBytes = (long)splits * m * n * 4, aAt = Align(cBytes), bAt = Align(aAt + a.Length * 2L);
        string[] parameters = TensorMaps ? [.. WgmmaGemmPtx.Parameters, WgmmaGemmPtx.TensorMapA, WgmmaGemmPtx.TensorMapB] : [.. WgmmaGemmPtx.Parameters];
        var ptx = new PtxInterpreter(Module, EntryOf(transA, transB), parameters, (int)Align(bAt + b.Length * 2L))
        {
            LateWgmmaEarlyCopies = late,
            ReverseThreadOrder = late && !ahead,
            FirstWarpgroupAhead = ahead,
        };
        var c0 = new float[splits * m * n];
        for (int i = 0; i < c0.Length; i++) c0[i] = accumulate ? (float)(rng.NextDouble() * 2 - 1) : float.NaN;
        Buffer.BlockCopy(c0, 0, ptx.Global, 0, (int)cBytes);
        Buffer.BlockCopy(a, 0, ptx.Global, (int)aAt, a.Length * 2);
        Buffer.BlockCopy(b, 0, ptx.Global, (int)bAt, b.Length * 2);
        // Everything past c (the gaps, a and b) must come out as it went in: no store outside c.
        var outside = ptx.Global.AsSpan((int)cBytes).ToArray();
        int tilesM = (m + WgmmaGemmPtx.TileM - 1) / WgmmaGemmPtx.TileM, tilesN = (n + TileN - 1) / TileN;
        ulong g = PtxInterpreter.GlobalBase;
        var (aLo, aHi) = WgmmaGemmPtx.DescriptorBits(kMajor: !transA, swapped);
        var (bLo, bHi) = WgmmaGemmPtx.DescriptorBits(kMajor: transB, swapped);
        ulong[] args = [g, g + (ulong)aAt, g + (ulong)bAt, (ulong)m, (ulong)n, (ulong)k, accumulate ? 1UL : 0, (ulong)tilesM, (ulong)tilesN, (ulong)kPer, (ulong)(m * n),
             aLo, aHi, bLo, bHi, (ulong)group];
        if (TensorMaps)
        {
            // The maps' values are handles the interpreter looks up (the driver's encoding is opaque).
            (ptx.TensorMaps[1], ptx.TensorMaps[2]) = GemmTensorMaps.For(transA, transB, m, n, k, g + (ulong)aAt, g + (ulong)bAt, TileN);
            args = [.. args, 1, 2];
        }
        ptx.Run(tilesM * tilesN * splits, Threads, SharedBytes, args);
        if (!ptx.Global.AsSpan((int)cBytes).SequenceEqual(outside))
        {
            where = "a store landed outside c";
            return double.PositiveInfinity;
        }
        var got = new float[splits * m * n];
        Buffer.BlockCopy(ptx.Global, 0, got, 0, (int)cBytes);

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

    private static long Align(long bytes) => (bytes + 255) / 256 * 256;
}
