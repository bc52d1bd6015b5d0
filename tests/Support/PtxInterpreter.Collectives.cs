using System.Globalization;

namespace HftRuntime.Tests.Support;

/// <summary>
/// The collectives of <see cref="PtxInterpreter"/>: wgmma (a warpgroup's 128 threads), ldmatrix and mma.sync (a warp's
/// 32), each run when the last thread of its group arrives.
/// </summary>
internal sealed partial class PtxInterpreter
{
    private void RunCollective(Thread[] ts, Thread arrived, byte[] shared)
    {
        var ins = _code[arrived.Pc];
        int width = ins.Op == Op.Wgmma ? 128 : 32, w = arrived.Tid / width;
        var group = ts.AsSpan(w * width, Math.Min(width, ts.Length - w * width)).ToArray();
        if (!group.All(t => t.AtCollective && t.Pc == arrived.Pc)) return;
        if (ins.Op == Op.Wgmma)
        {
            var op = Capture(ins, w, group);
            if (LateWgmmaEarlyCopies) _pending.Add(op);
            else Apply(op, shared);
        }
        else if (ins.Op == Op.Ldmatrix) Ldmatrix(ins, group, shared);
        else Mma(ins, group);
        foreach (var t in group) { t.AtCollective = false; t.Pc++; }
    }

    private sealed record PendingWgmma(int N, int[] D, ulong DescA, ulong DescB, bool TransA, bool TransB, int Warpgroup, int Group, Thread[] Threads)
    {
        public bool Done { get; set; }
    }

    private readonly List<PendingWgmma> _pending = [];

    /// <summary>
    /// D[64, N] += A[64, 16]·B[N, 16]ᵀ for the warpgroup: A and B read from their descriptors (K-major, or MN-major
    /// where the transpose immediate is 1), D from the threads' accumulators (warp w rows 16w + g and + 8, columns
    /// 8j + 2t and + 1 in registers 4j .. 4j + 3).
    /// </summary>
    private PendingWgmma Capture(Ins ins, int warpgroup, Thread[] group)
    {
        int n = int.Parse(ins.Type, CultureInfo.InvariantCulture);
        var d = ins.Args[0].Trim('{', '}').Split(',').Select(x => _regs[x.Trim()]).ToArray();
        if (d.Length != n / 2) throw new InvalidOperationException($"wgmma m64n{n}k16 needs {n / 2} accumulators, has {d.Length}");
        int descA = _regs[ins.Args[1]], descB = _regs[ins.Args[2]];
        if (ins.Args[4] != "1" || ins.Args[5] != "1") throw new NotSupportedException("wgmma scales other than 1");
        ulong da = group[0].R[descA], db = group[0].R[descB];
        foreach (var t in group)
        {
            if (t.R[descA] != da || t.R[descB] != db) throw new InvalidOperationException($"wgmma: thread {t.Tid} has other descriptors than thread {group[0].Tid}");
            if (t.R[_regs[ins.Args[3]]] == 0) throw new NotSupportedException("wgmma with scale-d false");
        }
        return new PendingWgmma(n, d, da, db, ins.Args[6] == "1", ins.Args[7] == "1", warpgroup, group[0].WgmmaCommits, [.. group]);
    }

    private int[] Regs(string vector) => [.. vector.Trim('{', '}').Split(',').Select(x => _regs[x.Trim()])];

    /// <summary>
    /// ldmatrix.x4 (.trans): lane l gives the address of row l mod 8 of matrix l / 8; register i of lane (g, t) gets
    /// row g, columns 2t and 2t + 1 of matrix i (transposed: rows 2t and 2t + 1 of column g), the first in the low half.
    /// </summary>
    private void Ldmatrix(Ins ins, Thread[] warp, byte[] shared)
    {
        bool trans = ins.Text.Contains(".trans", StringComparison.Ordinal);
        var rows = warp.Select(t => Address(t, ins.Args[1])).ToArray();
        var dst = Regs(ins.Args[0]);
        foreach (var a in rows)
            if (a % 16 != 0) throw new InvalidOperationException($"ldmatrix: row address {a} is not on 16 bytes");
        ushort At(ulong addr) => BitConverter.ToUInt16(shared, (int)Checked(addr, 2, shared.Length, "shared (ldmatrix)"));
        for (int lane = 0; lane < 32; lane++)
        {
            int g = lane >> 2, t = lane & 3;
            for (int i = 0; i < 4; i++)
            {
                ushort lo, hi;
                if (!trans) { lo = At(rows[8 * i + g] + (ulong)(4 * t)); hi = At(rows[8 * i + g] + (ulong)(4 * t + 2)); }
                else { lo = At(rows[8 * i + 2 * t] + (ulong)(2 * g)); hi = At(rows[8 * i + 2 * t + 1] + (ulong)(2 * g)); }
                warp[lane].R[dst[i]] = lo | ((uint)hi << 16);
            }
        }
    }

    /// <summary>
    /// mma.sync m16n8k16 row.col, f32 += bf16·bf16: lane (g, t) holds a0 (row g, k 2t, 2t + 1), a1 (row g + 8), a2
    /// (row g, k + 8), a3 (row g + 8, k + 8); b0 (k 2t, 2t + 1, column g), b1 (k + 8); c0, c1 (row g, columns 2t,
    /// 2t + 1), c2, c3 (row g + 8).
    /// </summary>
    private void Mma(Ins ins, Thread[] warp)
    {
        int[] d = Regs(ins.Args[0]), a = Regs(ins.Args[1]), b = Regs(ins.Args[2]), c = Regs(ins.Args[3]);
        var am = new float[16, 16];
        var bm = new float[16, 8];
        static float Lo(ulong v) => BitConverter.UInt32BitsToSingle((uint)v << 16);
        static float Hi(ulong v) => BitConverter.UInt32BitsToSingle((uint)v & 0xFFFF0000u);
        for (int lane = 0; lane < 32; lane++)
        {
            int g = lane >> 2, t = lane & 3;
            var r = warp[lane].R;
            for (int q = 0; q < 4; q++)
            {
                int row = g + 8 * (q & 1), k = 2 * t + 8 * (q >> 1);
                am[row, k] = Lo(r[a[q]]);
                am[row, k + 1] = Hi(r[a[q]]);
            }
            for (int q = 0; q < 2; q++)
            {
                bm[2 * t + 8 * q, g] = Lo(r[b[q]]);
                bm[2 * t + 8 * q + 1, g] = Hi(r[b[q]]);
            }
        }
        var results = new float[32, 4];
        for (int lane = 0; lane < 32; lane++)
        {
            int g = lane >> 2, t = lane & 3;
            for (int q = 0; q < 4; q++)
            {
                int row = g + 8 * (q >> 1), col = 2 * t + (q & 1);
                float acc = BitConverter.UInt32BitsToSingle((uint)warp[lane].R[c[q]]);
                for (int k = 0; k < 16; k++) acc += am[row, k] * bm[k, col];
                results[lane, q] = acc;
            }
        }
        for (int lane = 0; lane < 32; lane++)
            for (int q = 0; q < 4; q++) warp[lane].R[d[q]] = BitConverter.SingleToUInt32Bits(results[lane, q]);
    }

    /// <summary>Reads the operands from shared memory now and adds their product to the threads' accumulators.</summary>
    private static void Apply(PendingWgmma op, byte[] shared)
    {
        var am = Operand(op.DescA, op.TransA, 64, shared);
        var bm = Operand(op.DescB, op.TransB, op.N, shared);
        foreach (var t in op.Threads)
        {
            int warp = (t.Tid & 127) >> 5, lane = t.Tid & 31, g = lane >> 2, q = lane & 3;
            for (int r = 0; r < op.D.Length; r++)
            {
                int row = 16 * warp + g + ((r & 2) != 0 ? 8 : 0), col = 8 * (r >> 2) + 2 * q + (r & 1);
                float acc = BitConverter.UInt32BitsToSingle((uint)t.R[op.D[r]]);
                for (int k = 0; k < 16; k++) acc += am[row, k] * bm[col, k];
                t.R[op.D[r]] = BitConverter.SingleToUInt32Bits(acc);
            }
        }
    }

    /// <summary>
    /// The rows × 16 bf16 operand of a descriptor with the 128-byte swizzle: element (i, k) at start + (i mod 8)·128 +
    /// (i / 8)·SBO + 2k (K-major), or start + 2(i mod 64) + (i / 64)·LBO + (k mod 8)·128 + (k / 8)·SBO (MN-major);
    /// then bits 4..6 of the shared address XOR bits 7..9.
    /// </summary>
    private static float[,] Operand(ulong desc, bool mnMajor, int rows, byte[] shared)
    {
        if (desc >> 62 != 1) throw new NotSupportedException("descriptor without the 128-byte swizzle");
        if (((desc >> 49) & 7) != 0) throw new NotSupportedException("descriptor with a base offset");
        ulong start = (desc & 0x3FFF) << 4, lbo = ((desc >> 16) & 0x3FFF) << 4, sbo = ((desc >> 32) & 0x3FFF) << 4;
        var x = new float[rows, 16];
        for (int i = 0; i < rows; i++)
            for (int k = 0; k < 16; k++)
            {
                ulong addr = mnMajor
                    ? start + (ulong)(2 * (i % 64)) + (ulong)(i / 64) * lbo + (ulong)(k % 8 * 128) + (ulong)(k / 8) * sbo
                    : start + (ulong)(i % 8 * 128) + (ulong)(i / 8) * sbo + (ulong)(2 * k);
                addr ^= ((addr >> 7) & 7) << 4;
                long at = Checked(addr, 2, shared.Length, "shared (wgmma)");
                x[i, k] = BitConverter.UInt32BitsToSingle((uint)BitConverter.ToUInt16(shared, (int)at) << 16);
            }
        return x;
    }
}
