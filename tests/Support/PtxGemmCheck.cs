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
        var ptx = Interpreter(transA, transB, at, late, ahead);
        Buffer.BlockCopy(c, 0, ptx.Global, 0, c.Length);
        for (int p = 0; p < pieces.Count; p++)
        {
            Buffer.BlockCopy(pieces[p].A, 0, ptx.Global, (int)addresses[p].A, pieces[p].A.Length * 2);
            Buffer.BlockCopy(pieces[p].B, 0, ptx.Global, (int)addresses[p].B, pieces[p].B.Length * 2);
        }
        // Everything past c (the gaps, a and b) must come out as it went in: no store outside c.
        var outside = ptx.Global.AsSpan((int)cBytes).ToArray();
        int tilesM = (m + WgmmaGemmPtx.TileM - 1) / WgmmaGemmPtx.TileM, tilesN = (n + TileN - 1) / TileN;
        var shape = new GemmLaunchShape(transA, transB, m, n, k, store, tilesM, tilesN, kPer, m * n, swapped, group);
        if (!TensorMaps && parts.Length > 1) throw new ArgumentException("only a module with tensor maps sums parts");
        Launch(ptx, shape, [.. pieces.Select((piece, p) => new GemmPart(At(addresses[p].A), At(addresses[p].B), piece.K))],
            grid > 0 ? grid : tilesM * tilesN * splits);
        if (!ptx.Global.AsSpan((int)cBytes).SequenceEqual(outside)) return null;
        return ptx.Global.AsSpan(0, (int)cBytes).ToArray();
    }

    /// <summary>
    /// Runs the NT entry as a <see cref="GemmStore.SwiGlu"/> launch: x [m, k] with W_gate and W_up [f, k] (random bf16),
    /// gate, up and h [m, f] in bf16 (a <paramref name="grid"/> below the tiles: persistent). Null where gate and up are
    /// the float64 products within 1e-5 of Σ|x·w| plus one bf16 rounding, h is silu(gate)·up of the stored values
    /// (float64, rounded) within one bf16 step, and nothing landed outside the three outputs; else where not.
    /// </summary>
    public string? SwiGluMismatch(int m, int f, int k, bool late = false, bool ahead = false, int grid = 0)
    {
        var rng = new Random(m * 3 + f * 5 + k);
        ushort[] x = Bf16Gemm.RandomBf16(rng, m * k), wg = Bf16Gemm.RandomBf16(rng, f * k), wu = Bf16Gemm.RandomBf16(rng, f * k);
        long outBytes = (long)m * f * 2, upAt = Align(outBytes), hAt = Align(upAt + outBytes), xAt = Align(hAt + outBytes),
            wgAt = Align(xAt + x.Length * 2L), wuAt = Align(wgAt + wg.Length * 2L), end = Align(wuAt + wu.Length * 2L);
        var ptx = Interpreter(false, true, end, late, ahead);
        ptx.Global.AsSpan(0, (int)xAt).Fill(0xFF);
        Buffer.BlockCopy(x, 0, ptx.Global, (int)xAt, x.Length * 2);
        Buffer.BlockCopy(wg, 0, ptx.Global, (int)wgAt, wg.Length * 2);
        Buffer.BlockCopy(wu, 0, ptx.Global, (int)wuAt, wu.Length * 2);
        var before = ptx.Global.ToArray();
        int n = 2 * f, tilesM = (m + WgmmaGemmPtx.TileM - 1) / WgmmaGemmPtx.TileM, tilesN = n / TileN;
        var shape = new GemmLaunchShape(false, true, m, n, k, GemmStore.SwiGlu, tilesM, tilesN, (k + 63) / 64 * 64, m * n, false, WgmmaGemmPtx.Group);
        Launch(ptx, shape, [new GemmPart(At(xAt), At(wgAt), k)], grid > 0 ? grid : tilesM * tilesN, swiGlu: new GemmSwiGlu(At(upAt), At(hAt), At(wuAt)));
        for (long i = 0; i < ptx.Global.Length; i++)
        {
            bool output = i < outBytes || (i >= upAt && i < upAt + outBytes) || (i >= hAt && i < hAt + outBytes);
            if (!output && ptx.Global[i] != before[i]) return $"a store landed outside the outputs, at byte {i}";
        }
        static double W(ushort v) => Kernels.Bf16.ToFloat(v);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < f; j++)
            {
                double rg = 0, ru = 0, scale = 0;
                for (int q = 0; q < k; q++)
                {
                    rg += W(x[i * k + q]) * W(wg[j * k + q]);
                    ru += W(x[i * k + q]) * W(wu[j * k + q]);
                    scale += Math.Abs(W(x[i * k + q])) * (Math.Abs(W(wg[j * k + q])) + Math.Abs(W(wu[j * k + q])));
                }
                int e = i * f + j;
                ushort gate = BitConverter.ToUInt16(ptx.Global, 2 * e), up = BitConverter.ToUInt16(ptx.Global, (int)upAt + 2 * e),
                    h = BitConverter.ToUInt16(ptx.Global, (int)hAt + 2 * e);
                if (Math.Abs(W(gate) - rg) > Math.Abs(rg) / 256 + 1e-5 * scale) return $"gate ({i}, {j}) is {W(gate)}, float64 gives {rg}";
                if (Math.Abs(W(up) - ru) > Math.Abs(ru) / 256 + 1e-5 * scale) return $"up ({i}, {j}) is {W(up)}, float64 gives {ru}";
                double want = W(gate) / (1 + Math.Exp(-W(gate))) * W(up);
                if (Math.Abs(W(h) - want) > Math.Abs(want) / 128 + 1e-6) return $"h ({i}, {j}) is {W(h)}, silu(gate)·up of the stored values is {want}";
            }
        return null;
    }

    /// <summary>
    /// Runs the NT entry as a <see cref="GemmStore.WriteBf16Rope"/> launch: a [m, k] · b [n, k]ᵀ (random bf16), each
    /// 64-wide head of c rotated by the angles of its row's position (random tables of <paramref name="maxPositions"/>
    /// rows; every fifth row's position outside them: stored unrotated), in bf16. Null where every element is the
    /// float64 result within one bf16 rounding plus 1e-5 of its partners' Σ|a·b|, and nothing landed outside c.
    /// </summary>
    public string? RopeMismatch(int m, int n, int k, int maxPositions, bool late = false, bool ahead = false, int grid = 0)
    {
        var rng = new Random(m * 7 + n + k * 5);
        ushort[] a = Bf16Gemm.RandomBf16(rng, m * k), b = Bf16Gemm.RandomBf16(rng, n * k);
        var positions = Enumerable.Range(0, m).Select(i => i % 5 == 4 ? (i % 2 == 0 ? -1 : maxPositions + i) : rng.Next(maxPositions)).ToArray();
        float[] cos = Enumerable.Range(0, maxPositions * 32).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] sin = Enumerable.Range(0, maxPositions * 32).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        long cBytes = (long)m * n * 2, aAt = Align(cBytes), bAt = Align(aAt + a.Length * 2L), pAt = Align(bAt + b.Length * 2L),
            cosAt = Align(pAt + m * 4L), sinAt = Align(cosAt + cos.Length * 4L), end = Align(sinAt + sin.Length * 4L);
        var ptx = Interpreter(false, true, end, late, ahead);
        ptx.Global.AsSpan(0, (int)cBytes).Fill(0xFF);
        Buffer.BlockCopy(a, 0, ptx.Global, (int)aAt, a.Length * 2);
        Buffer.BlockCopy(b, 0, ptx.Global, (int)bAt, b.Length * 2);
        Buffer.BlockCopy(positions, 0, ptx.Global, (int)pAt, m * 4);
        Buffer.BlockCopy(cos, 0, ptx.Global, (int)cosAt, cos.Length * 4);
        Buffer.BlockCopy(sin, 0, ptx.Global, (int)sinAt, sin.Length * 4);
        var outside = ptx.Global.AsSpan((int)cBytes).ToArray();
        int tilesM = (m + WgmmaGemmPtx.TileM - 1) / WgmmaGemmPtx.TileM, tilesN = (n + TileN - 1) / TileN;
        var shape = new GemmLaunchShape(false, true, m, n, k, GemmStore.WriteBf16Rope, tilesM, tilesN, (k + 63) / 64 * 64, m * n, false, WgmmaGemmPtx.Group);
        Launch(ptx, shape, [new GemmPart(At(aAt), At(bAt), k)], grid > 0 ? grid : tilesM * tilesN, rope: new GemmRope(At(pAt), At(cosAt), At(sinAt), maxPositions));
        if (!ptx.Global.AsSpan((int)cBytes).SequenceEqual(outside)) return "a store landed outside c";
        static double W(ushort v) => Kernels.Bf16.ToFloat(v);
        (double Value, double Scale) Product(int i, int j)
        {
            double v = 0, sc = 0;
            for (int q = 0; q < k; q++) { v += W(a[i * k + q]) * W(b[j * k + q]); sc += Math.Abs(W(a[i * k + q]) * W(b[j * k + q])); }
            return (v, sc);
        }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                int col = j % 64, partner = col < 32 ? j + 32 : j - 32, p = positions[i];
                var (x, sx) = Product(i, j);
                var (y, sy) = Product(i, partner);
                double want = x;
                if (p >= 0 && p < maxPositions)
                {
                    double c = cos[p * 32 + col % 32], sn = sin[p * 32 + col % 32];
                    want = col < 32 ? x * c - y * sn : x * c + y * sn;
                }
                double got = W(BitConverter.ToUInt16(ptx.Global, 2 * (i * n + j)));
                if (Math.Abs(got - want) > Math.Abs(want) / 256 + 1e-5 * (sx + sy))
                    return $"({i}, {j}) is {got}, float64 gives {want} (position {p})";
            }
        return null;
    }

    /// <summary>An interpreter of a form's entry over <paramref name="bytes"/> of global memory, in the given interleaving.</summary>
    private PtxInterpreter Interpreter(bool transA, bool transB, long bytes, bool late, bool ahead) =>
        new(Module, EntryOf(transA, transB), PtxGemm.ParameterNames(TensorMaps, MaxParts), (int)bytes)
        {
            LateWgmmaEarlyCopies = late,
            ReverseThreadOrder = late && !ahead,
            FirstWarpgroupAhead = ahead,
        };

    /// <summary>
    /// Runs <paramref name="grid"/> blocks with the arguments PtxGemm.Launch would pass (c at the start of global
    /// memory); the maps' values are handles the interpreter looks up (the driver's encoding is opaque).
    /// </summary>
    private void Launch(PtxInterpreter ptx, GemmLaunchShape shape, GemmPart[] parts, int grid, GemmSwiGlu? swiGlu = null, GemmRope? rope = null)
    {
        var (scalars, maps) = PtxGemm.Arguments(shape, PtxInterpreter.GlobalBase, parts, TensorMaps, MaxParts, TileN, swiGlu, rope);
        var args = scalars.ToList();
        for (int i = 0; i < maps.Length; i++)
        {
            ptx.TensorMaps[1 + (ulong)i] = maps[i];
            args.Add(1 + (ulong)i);
        }
        ptx.Run(grid, Threads, SharedBytes, [.. args]);
    }

    /// <summary>A device address of the interpreter's global memory from a byte offset.</summary>
    private static IntPtr At(long offset) => (IntPtr)(long)(PtxInterpreter.GlobalBase + (ulong)offset);

    private static long Align(long bytes) => (bytes + 255) / 256 * 256;
}
