using HftRuntime.Kernels.Ilgpu;

namespace HftRuntime.Tests.Support;

/// <summary>
/// TMA copies and mbarriers for <see cref="PtxInterpreter"/>: <c>mbarrier.init</c>, <c>mbarrier.arrive</c> (with or without <c>expect_tx</c>),
/// <c>mbarrier.try_wait.parity</c> and <c>cp.async.bulk.tensor.2d</c> from a tensor map in a kernel parameter into
/// shared memory with the 128-byte swizzle, completing its bytes on an mbarrier. A tensor map is opaque (the driver
/// encodes it), so the test gives the interpreter the <see cref="TensorMapSpec"/> behind each map parameter's value.
/// A copy lands when a thread first waits on its mbarrier after issuing it (the latest the kernel may rely on), or,
/// with <see cref="LateWgmmaEarlyCopies"/>, as it is issued; a thread whose wait fails yields until an mbarrier changes.
/// </summary>
internal sealed partial class PtxInterpreter
{
    /// <summary>Generic addresses of kernel parameters (parameter i at ParamBase + 256·i): only tensor maps are read through them.</summary>
    private const ulong ParamBase = 0xA000_0000_0000_0000;

    /// <summary>The tensor map behind each value a map parameter is given.</summary>
    public Dictionary<ulong, TensorMapSpec> TensorMaps { get; } = [];

    private sealed class Mbarrier
    {
        public int Count, Pending, Phase;
        public long Tx;
        public readonly List<(TensorMapSpec Map, int C0, int C1, uint Dst)> Copies = [];
    }

    private readonly Dictionary<uint, Mbarrier> _mbarriers = [];

    /// <summary>Changes of any mbarrier so far: a thread whose wait failed runs again only after one.</summary>
    private long _mbarrierChanges;

    private Mbarrier MbarrierAt(Thread t, string operand, byte[] shared, bool init = false)
    {
        uint at = (uint)Aligned(Address(t, operand), 8, _code[t.Pc]);
        Checked(at, 8, shared.Length, "shared");
        if (init) return _mbarriers[at] = new Mbarrier();
        return _mbarriers.TryGetValue(at, out var b) ? b : throw new InvalidOperationException($"PTX interpreter: mbarrier at {at} used before mbarrier.init");
    }

    private void MbarrierInit(Thread t, string[] a, byte[] shared, int block, int grid, int threads)
    {
        var b = MbarrierAt(t, a[0], shared, init: true);
        b.Count = b.Pending = (int)Val(t, a[1], block, grid, threads);
        _mbarrierChanges++;
    }

    /// <summary>One arrival with <c>expect_tx</c>: the phase then waits for that many more transaction bytes.</summary>
    private void MbarrierExpectTx(Thread t, string[] a, byte[] shared, int block, int grid, int threads)
    {
        if (a[0] != "_") throw new NotSupportedException("mbarrier.arrive.expect_tx with a state register");
        var b = MbarrierAt(t, a[1], shared);
        b.Tx += (long)Val(t, a[2], block, grid, threads);
        if (--b.Pending < 0) throw new InvalidOperationException("PTX interpreter: more arrivals than the mbarrier's count in one phase");
        Complete(b);
    }

    /// <summary>One arrival without transaction bytes.</summary>
    private void MbarrierArrive(Thread t, string[] a, byte[] shared)
    {
        if (a[0] != "_") throw new NotSupportedException("mbarrier.arrive with a state register");
        var b = MbarrierAt(t, a[1], shared);
        if (--b.Pending < 0) throw new InvalidOperationException("PTX interpreter: more arrivals than the mbarrier's count in one phase");
        Complete(b);
    }

    private void Complete(Mbarrier b)
    {
        _mbarrierChanges++;
        if (b.Pending != 0 || b.Tx != 0) return;
        b.Phase++;
        b.Pending = b.Count;
    }

    /// <summary>
    /// try_wait.parity: the copies on the mbarrier land (the wait is what they must have reached), then true when the
    /// phase of the given parity has completed (the current phase's parity differs).
    /// </summary>
    private bool MbarrierTryWait(Thread t, string[] a, byte[] shared, int block, int grid, int threads)
    {
        var b = MbarrierAt(t, a[1], shared);
        foreach (var c in b.Copies) { LandBox(shared, c.Map, c.C0, c.C1, c.Dst); b.Tx -= c.Map.BoxBytes; }
        if (b.Copies.Count > 0) { b.Copies.Clear(); Complete(b); }
        ulong parity = Val(t, a[2], block, grid, threads);
        bool done = (ulong)(b.Phase & 1) != (parity & 1);
        Set(t, a[0], done ? 1UL : 0UL);
        return done;
    }

    /// <summary>cp.async.bulk.tensor.2d [dst], [map, {c0, c1}], [mbar]: one box of the map's tensor.</summary>
    private void TensorCopy(Thread t, Ins ins, byte[] shared, ulong[] args, int block, int grid, int threads)
    {
        string[] a = ins.Args;
        uint dst = (uint)Address(t, a[0]);
        var inner = a[1].Trim('[', ']').Split(',', 2);
        ulong mapAt = t.R[_regs[inner[0].Trim()]];
        int index = (int)((mapAt - ParamBase) / 256);
        if (mapAt < ParamBase || (mapAt - ParamBase) % 256 != 0 || index >= _params.Length)
            throw new InvalidOperationException($"PTX interpreter: tensor map address 0x{mapAt:x} is no parameter's ('{ins.Text}')");
        if (!TensorMaps.TryGetValue(args[index], out var map)) throw new InvalidOperationException($"PTX interpreter: no tensor map given for parameter {_params[index]}");
        var coords = inner[1].Trim().Trim('{', '}').Split(',').Select(x => (int)(uint)Val(t, x.Trim(), block, grid, threads)).ToArray();
        if (coords.Length != 2) throw new NotSupportedException(ins.Text);
        if (map.BoxInner * 2 != 128) throw new NotSupportedException("the interpreter models boxes with rows of 128 bytes (the 128-byte swizzle's span)");
        if (dst % 1024 != 0) throw new InvalidOperationException($"PTX interpreter: a 128-byte-swizzled TMA copy to shared {dst}, not on 1 KiB");
        Checked(dst, map.BoxBytes, shared.Length, "shared");
        var b = MbarrierAt(t, a[2], shared);
        if (LateWgmmaEarlyCopies)
        {
            LandBox(shared, map, coords[0], coords[1], dst);
            b.Tx -= map.BoxBytes;
            Complete(b);
        }
        else
        {
            b.Copies.Add((map, coords[0], coords[1], dst));
            _mbarrierChanges++;
        }
    }

    /// <summary>
    /// The box at (c0, c1): row r (outer c1 + r) is 128 bytes at dst + 128·r with its 16-byte chunk c at chunk
    /// c ^ (r mod 8) (the 128-byte swizzle of shared address bits 4..6 by 7..9); elements outside the tensor are zeros.
    /// </summary>
    private void LandBox(byte[] shared, TensorMapSpec map, int c0, int c1, uint dst)
    {
        if ((map.Address - GlobalBase) % 16 != 0 || map.OuterStrideBytes % 16 != 0)
            throw new InvalidOperationException($"PTX interpreter: tensor map {map} is not on 16 bytes");
        for (int r = 0; r < map.BoxOuter; r++)
            for (int e = 0; e < map.BoxInner; e++)
            {
                long x = c0 + (long)e, y = c1 + (long)r;
                ushort v = 0;
                if (x >= 0 && y >= 0 && x < map.Inner && y < map.Outer)
                {
                    long at = Checked(map.Address + (ulong)y * map.OuterStrideBytes + (ulong)x * 2 - GlobalBase, 2, Global.Length, "global");
                    v = BitConverter.ToUInt16(Global, (int)at);
                }
                uint offset = (uint)(r * 128 + e * 2);
                offset ^= ((offset >> 7) & 7) << 4;
                BitConverter.TryWriteBytes(shared.AsSpan((int)(dst + offset)), v);
            }
    }
}
