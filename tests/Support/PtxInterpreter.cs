using System.Globalization;
using System.Text.RegularExpressions;
using HftRuntime.Kernels;

namespace HftRuntime.Tests.Support;

/// <summary>
/// Runs one entry of a PTX module, thread by thread, for the subset of PTX that <c>WgmmaGemmPtx</c> writes: integer
/// and f32 arithmetic, predicates and branches, <c>ld.param</c>, <c>ld/st.global.v2.f32</c>, <c>cvt.rn.bf16x2.f32</c> and
/// <c>st.global.b32</c>, <c>cp.async</c> with its
/// groups (a copy lands only when a <c>cp.async.wait_group</c> of its thread lets it, so a missing wait shows), block
/// barriers, and <c>wgmma.mma_async</c> m64nNk16 f32 += bf16·bf16 from shared-memory descriptors with the 128-byte
/// swizzle, run when all 128 threads of a warpgroup reach it, with the same descriptors required of all of them.
/// Global and shared accesses are bounds- and alignment-checked. The descriptor and fragment semantics are PTX's documented ones
/// (CUTLASS's canonical layouts): this checks that the generated code puts and finds every element where it intends,
/// not what the hardware does.
/// </summary>
internal sealed partial class PtxInterpreter
{
    /// <summary>Where the global memory starts (above 4 GiB, so that a truncated address is out of bounds).</summary>
    public const ulong GlobalBase = 0x1_0000_0000;

    /// <summary>The shared address of the dynamic shared array (not 1 KiB-aligned, so that the code must align it).</summary>
    public const uint SharedSymbolAddress = 48;

    private enum Op
    {
        LdParam, Cvta, Mov, MovPack, Add, Sub, MulLo, MulWide, Div, Rem, Min, Shl, Shr, And, Or, Xor, Cvt, Setp, Selp, Bra,
        CpAsync, CpCommit, CpWait, Nop, Bar, Wgmma, WgmmaCommit, WgmmaWait, Ldmatrix, Mma, StGlobal, StGlobal32, LdGlobal, LdGlobal32, AddF, SubF, MulF, Ex2, Rcp, CvtBf16x2, Ret,
        MbarInit, MbarExpectTx, MbarArrive, MbarTryWait, TensorCopy,
    }

    private sealed record Ins(Op Op, int Guard, bool GuardNeg, string[] Args, string Type, string Text);

    private readonly List<Ins> _code = [];
    private readonly Dictionary<string, int> _labels = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _regs = new(StringComparer.Ordinal);
    private readonly string[] _params;
    private readonly string _sharedSymbol;

    /// <summary>Global memory (at <see cref="GlobalBase"/>).</summary>
    public byte[] Global { get; }

    /// <summary>
    /// The other extreme of asynchrony: a <c>cp.async</c> lands as it is issued, and a wgmma reads shared memory only
    /// when the first thread of its warpgroup waits for it (<c>wgmma.wait_group</c>), the latest moment the hardware
    /// may; a copy into a stage that an unfinished wgmma still reads then shows. Off: copies land when waited for and
    /// wgmma reads as issued, which shows a missing copy wait.
    /// </summary>
    public bool LateWgmmaEarlyCopies { get; init; }

    /// <summary>Runs the threads of a block from the last to the first (another interleaving).</summary>
    public bool ReverseThreadOrder { get; init; }

    /// <summary>
    /// Runs only the first warpgroup (128 threads) that has a thread able to go on, so that a warpgroup runs as far
    /// ahead of the others as the code lets it: a missing barrier between warpgroups shows.
    /// </summary>
    public bool FirstWarpgroupAhead { get; init; }

    /// <summary>Instructions executed by all threads so far.</summary>
    public long Executed { get; private set; }

    public PtxInterpreter(string module, string entry, IReadOnlyList<string> parameters, int globalBytes)
    {
        _params = [.. parameters];
        Global = new byte[globalBytes];
        _sharedSymbol = Regex.Match(module, @"\.extern \.shared .* (\w+)\[\];").Groups[1].Value;
        var m = Regex.Match(module, @"\.entry\s+" + Regex.Escape(entry) + @"\((?s:.*?)\)(?s:.*?)\{(?<body>(?s:.*?))\n\}");
        if (!m.Success) throw new ArgumentException($"entry {entry} not found");
        foreach (var raw in m.Groups["body"].Value.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith(".reg", StringComparison.Ordinal)) continue;
            if (line.EndsWith(':')) { _labels[line[..^1]] = _code.Count; continue; }
            _code.Add(Parse(line.TrimEnd(';')));
        }
    }

    private Ins Parse(string text)
    {
        int guard = -1;
        bool neg = false;
        string s = text;
        if (s.StartsWith('@'))
        {
            int sp = s.IndexOf(' ');
            string g = s[1..sp];
            neg = g.StartsWith('!');
            guard = Reg(g.TrimStart('!'));
            s = s[(sp + 1)..].Trim();
        }
        int space = s.IndexOf(' ');
        string opcode = space < 0 ? s : s[..space];
        string rest = space < 0 ? "" : s[(space + 1)..];
        var args = SplitArgs(rest);
        string type = opcode[(opcode.LastIndexOf('.') + 1)..];
        Op op = opcode switch
        {
            _ when opcode.StartsWith("ld.param", StringComparison.Ordinal) => Op.LdParam,
            _ when opcode.StartsWith("cvta.to.global", StringComparison.Ordinal) || opcode == "cvta.param.u64" => Op.Cvta,
            "mov.b64" when args[1].StartsWith('{') => Op.MovPack,
            _ when opcode.StartsWith("mov.", StringComparison.Ordinal) => Op.Mov,
            _ when opcode.StartsWith("add.f32", StringComparison.Ordinal) => Op.AddF,
            _ when opcode.StartsWith("sub.f32", StringComparison.Ordinal) => Op.SubF,
            _ when opcode.StartsWith("mul.f32", StringComparison.Ordinal) => Op.MulF,
            // The approximations computed exactly (the hardware's are within 2 ulp; the tests allow for that).
            "ex2.approx.ftz.f32" => Op.Ex2,
            "rcp.approx.ftz.f32" => Op.Rcp,
            _ when opcode.StartsWith("add.", StringComparison.Ordinal) => Op.Add,
            _ when opcode.StartsWith("sub.", StringComparison.Ordinal) => Op.Sub,
            _ when opcode.StartsWith("mul.lo.", StringComparison.Ordinal) => Op.MulLo,
            _ when opcode.StartsWith("mul.wide.u32", StringComparison.Ordinal) => Op.MulWide,
            _ when opcode.StartsWith("div.u32", StringComparison.Ordinal) => Op.Div,
            _ when opcode.StartsWith("rem.u32", StringComparison.Ordinal) => Op.Rem,
            _ when opcode.StartsWith("min.u32", StringComparison.Ordinal) => Op.Min,
            _ when opcode.StartsWith("shl.", StringComparison.Ordinal) => Op.Shl,
            _ when opcode.StartsWith("shr.u", StringComparison.Ordinal) => Op.Shr,
            _ when opcode.StartsWith("and.", StringComparison.Ordinal) => Op.And,
            _ when opcode.StartsWith("or.", StringComparison.Ordinal) => Op.Or,
            _ when opcode.StartsWith("xor.", StringComparison.Ordinal) => Op.Xor,
            "cvt.u64.u32" => Op.Cvt,
            _ when opcode.StartsWith("setp.", StringComparison.Ordinal) && opcode.EndsWith(".u32", StringComparison.Ordinal) => Op.Setp,
            "selp.u32" or "selp.b64" or "selp.f32" => Op.Selp,
            "bra" or "bra.uni" => Op.Bra,
            "cp.async.cg.shared.global" => Op.CpAsync,
            "cp.async.commit_group" => Op.CpCommit,
            "cp.async.wait_group" => Op.CpWait,
            "fence.proxy.async.shared::cta" or "wgmma.fence.sync.aligned" or "fence.mbarrier_init.release.cluster" => Op.Nop,
            "mbarrier.init.shared::cta.b64" => Op.MbarInit,
            "mbarrier.arrive.expect_tx.shared::cta.b64" => Op.MbarExpectTx,
            "mbarrier.arrive.shared::cta.b64" => Op.MbarArrive,
            // Register counts change nothing here; ptxas checks that the code fits them.
            "setmaxnreg.dec.sync.aligned.u32" or "setmaxnreg.inc.sync.aligned.u32" => Op.Nop,
            "mbarrier.try_wait.parity.shared::cta.b64" => Op.MbarTryWait,
            "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes" => Op.TensorCopy,
            "wgmma.commit_group.sync.aligned" => Op.WgmmaCommit,
            "bar.sync" => Op.Bar,
            _ when opcode.StartsWith("wgmma.mma_async.sync.aligned.m64n", StringComparison.Ordinal) && opcode.EndsWith(".f32.bf16.bf16", StringComparison.Ordinal) => Op.Wgmma,
            "wgmma.wait_group.sync.aligned" => Op.WgmmaWait,
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16" or "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" => Op.Ldmatrix,
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" => Op.Mma,
            "st.global.v2.f32" => Op.StGlobal,
            "st.global.b32" => Op.StGlobal32,
            "cvt.rn.bf16x2.f32" => Op.CvtBf16x2,
            "ld.global.v2.f32" => Op.LdGlobal,
            "ld.global.u32" => Op.LdGlobal32,
            "ret" => Op.Ret,
            _ => throw new NotSupportedException($"PTX interpreter: unsupported instruction '{text}'"),
        };
        if (op == Op.Setp) type = opcode.Split('.')[1]; // the comparison
        if (op == Op.Wgmma) type = Regex.Match(opcode, @"m64n(\d+)k16").Groups[1].Value;
        foreach (var a in args) foreach (Match r in Regex.Matches(a, @"%[A-Za-z_][A-Za-z0-9_]*")) if (!IsSpecial(r.Value)) Reg(r.Value);
        return new Ins(op, guard, neg, args, type, text);
    }

    private static bool IsSpecial(string name) => name is "%tid" or "%ctaid" or "%ntid" or "%nctaid";

    private int Reg(string name)
    {
        if (!_regs.TryGetValue(name, out int i)) _regs[name] = i = _regs.Count;
        return i;
    }

    private static string[] SplitArgs(string s)
    {
        var list = new List<string>();
        int depth = 0, start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] is '{' or '[') depth++;
            else if (s[i] is '}' or ']') depth--;
            else if (s[i] == ',' && depth == 0) { list.Add(s[start..i].Trim()); start = i + 1; }
        }
        if (s.Trim().Length > 0) list.Add(s[start..].Trim());
        return [.. list];
    }

    private sealed class Thread
    {
        public ulong[] R = null!;
        public int Pc, Tid;
        public bool Done, AtBarrier, AtCollective;
        /// <summary>Where an mbarrier wait failed: the mbarrier changes seen then (-1: not waiting).</summary>
        public long WaitedAt = -1;
        public int WgmmaCommits;
        public readonly List<(uint Shared, ulong Global, int Size)> Open = [];
        public readonly Queue<List<(uint Shared, ulong Global, int Size)>> Pending = new();
    }

    /// <summary>
    /// Runs blocks 0 .. <paramref name="grid"/> − 1 of <paramref name="threads"/> threads, one after another, with
    /// <paramref name="sharedBytes"/> of dynamic shared memory each; <paramref name="args"/> in parameter order.
    /// </summary>
    public void Run(int grid, int threads, int sharedBytes, ulong[] args)
    {
        for (int block = 0; block < grid; block++) RunBlock(block, grid, threads, sharedBytes, args);
    }

    private void RunBlock(int block, int grid, int threads, int sharedBytes, ulong[] args)
    {
        var shared = new byte[SharedSymbolAddress + sharedBytes];
        var ts = new Thread[threads];
        for (int i = 0; i < threads; i++) ts[i] = new Thread { R = new ulong[_regs.Count], Tid = i };
        _pending.Clear();
        _mbarriers.Clear();
        var order = ReverseThreadOrder ? ts.Reverse().ToArray() : ts;
        while (true)
        {
            bool ran = false;
            var pick = order;
            if (FirstWarpgroupAhead && order.FirstOrDefault(CanGoOn) is { } first)
                pick = [.. order.Where(t => t.Tid >> 7 == first.Tid >> 7)];
            foreach (var t in pick)
            {
                if (!CanGoOn(t)) continue;
                Step(t, block, grid, threads, shared, args);
                ran = true;
                // A warp (ldmatrix, mma.sync) or warpgroup (wgmma) whose last thread just arrived runs its collective at
                // once, before the other threads go on: what they have not yet copied is not there.
                if (t.AtCollective) RunCollective(ts, t, shared);
            }
            if (ts.All(t => t.Done)) return;
            var live = ts.Where(t => !t.Done).ToArray();
            if (live.All(t => t.AtBarrier))
            {
                foreach (var t in live) { t.AtBarrier = false; t.Pc++; }
                ran = true;
            }
            else if (ts.Any(t => t.Done) && live.Any(t => t.AtBarrier))
                throw new InvalidOperationException("PTX interpreter: a barrier that exited threads never reach");
            if (!ran) throw new InvalidOperationException("PTX interpreter: deadlock (threads wait at different barriers or wgmma)");
        }
    }

    private bool CanGoOn(Thread t) => !(t.Done || t.AtBarrier || t.AtCollective || t.WaitedAt == _mbarrierChanges);

    /// <summary>Runs one thread until it exits or waits at a barrier or a wgmma.</summary>
    /// <summary>A wgmma as issued: its shape, accumulator registers, descriptors and transposes, warpgroup, commit group and threads.</summary>
    private void Step(Thread t, int block, int grid, int threads, byte[] shared, ulong[] args)
    {
        while (true)
        {
            var ins = _code[t.Pc];
            Executed++;
            if (ins.Guard >= 0 && (t.R[ins.Guard] != 0) == ins.GuardNeg) { t.Pc++; continue; }
            string[] a = ins.Args;
            switch (ins.Op)
            {
                case Op.LdParam:
                    {
                        string name = a[1].Trim('[', ']');
                        int idx = Array.IndexOf(_params, name);
                        if (idx < 0) throw new InvalidOperationException($"unknown parameter {name}");
                        Set(t, a[0], ins.Type == "u32" ? (uint)args[idx] : args[idx]);
                        break;
                    }
                case Op.Cvta: Set(t, a[0], Val(t, a[1], block, grid, threads)); break;
                case Op.Mov: Set(t, a[0], Mask(Val(t, a[1], block, grid, threads), ins.Type)); break;
                case Op.MovPack:
                    {
                        var parts = a[1].Trim('{', '}').Split(',').Select(x => x.Trim()).ToArray();
                        Set(t, a[0], (uint)Val(t, parts[0], block, grid, threads) | ((ulong)(uint)Val(t, parts[1], block, grid, threads) << 32));
                        break;
                    }
                case Op.Add: Bin(t, a, ins.Type, block, grid, threads, (x, y) => x + y); break;
                case Op.Sub: Bin(t, a, ins.Type, block, grid, threads, (x, y) => x - y); break;
                case Op.MulLo: Bin(t, a, ins.Type, block, grid, threads, (x, y) => x * y); break;
                case Op.Div: Bin(t, a, ins.Type, block, grid, threads, (x, y) => (uint)x / (uint)y); break;
                case Op.Rem: Bin(t, a, ins.Type, block, grid, threads, (x, y) => (uint)x % (uint)y); break;
                case Op.Min: Bin(t, a, ins.Type, block, grid, threads, (x, y) => Math.Min((uint)x, (uint)y)); break;
                case Op.Shl: Bin(t, a, ins.Type, block, grid, threads, (x, y) => x << (int)y); break;
                case Op.Shr: Bin(t, a, ins.Type, block, grid, threads, (x, y) => (uint)x >> (int)y); break;
                case Op.And: Bin(t, a, ins.Type, block, grid, threads, (x, y) => x & y); break;
                case Op.Or: Bin(t, a, ins.Type, block, grid, threads, (x, y) => x | y); break;
                case Op.Xor: Bin(t, a, ins.Type, block, grid, threads, (x, y) => x ^ y); break;
                case Op.MulWide: Set(t, a[0], (ulong)(uint)Val(t, a[1], block, grid, threads) * (uint)Val(t, a[2], block, grid, threads)); break;
                case Op.Cvt: Set(t, a[0], (uint)Val(t, a[1], block, grid, threads)); break;
                case Op.Setp:
                    {
                        uint x = (uint)Val(t, a[1], block, grid, threads), y = (uint)Val(t, a[2], block, grid, threads);
                        bool r = ins.Type switch { "lt" => x < y, "le" => x <= y, "ge" => x >= y, "eq" => x == y, "ne" => x != y, _ => throw new NotSupportedException(ins.Text) };
                        Set(t, a[0], r ? 1UL : 0UL);
                        break;
                    }
                case Op.Selp:
                    Set(t, a[0], t.R[_regs[a[3]]] != 0 ? Val(t, a[1], block, grid, threads) : Val(t, a[2], block, grid, threads));
                    break;
                case Op.Bra: t.Pc = _labels[a[0]]; continue;
                case Op.CpAsync:
                    {
                        if (a[2] != "16") throw new NotSupportedException(ins.Text);
                        // The source size (16 unless given): bytes read, the rest of the 16 zeros.
                        int size = a.Length > 3 ? (int)Val(t, a[3], block, grid, threads) : 16;
                        if (size is not (0 or 16)) throw new NotSupportedException($"cp.async source size {size}");
                        var copy = ((uint)Aligned(Address(t, a[0]), 16, ins), Aligned(Address(t, a[1]), 16, ins), size);
                        if (LateWgmmaEarlyCopies) Land(shared, copy);
                        else t.Open.Add(copy);
                        break;
                    }
                case Op.CpCommit: t.Pending.Enqueue([.. t.Open]); t.Open.Clear(); break;
                case Op.CpWait:
                    {
                        int allowed = int.Parse(a[0], CultureInfo.InvariantCulture);
                        while (t.Pending.Count > allowed)
                            foreach (var copy in t.Pending.Dequeue()) Land(shared, copy);
                        break;
                    }
                case Op.Nop: break;
                case Op.WgmmaCommit: t.WgmmaCommits++; break;
                case Op.WgmmaWait:
                    {
                        // The groups this wait retires: every one but the newest N this thread committed.
                        int retired = t.WgmmaCommits - int.Parse(a[0], CultureInfo.InvariantCulture);
                        foreach (var op in _pending)
                            if (!op.Done && op.Warpgroup == (t.Tid >> 7) && op.Group < retired)
                            {
                                Apply(op, shared);
                                op.Done = true;
                            }
                        break;
                    }
                case Op.Bar: t.AtBarrier = true; return;
                case Op.MbarInit: MbarrierInit(t, a, shared, block, grid, threads); break;
                case Op.MbarExpectTx: MbarrierExpectTx(t, a, shared, block, grid, threads); break;
                case Op.MbarArrive: MbarrierArrive(t, a, shared); break;
                case Op.TensorCopy: TensorCopy(t, ins, shared, args, block, grid, threads); break;
                case Op.MbarTryWait:
                    if (MbarrierTryWait(t, a, shared, block, grid, threads)) { t.WaitedAt = -1; break; }
                    // The wait failed: the loop would spin; yield until an mbarrier changes.
                    t.WaitedAt = _mbarrierChanges;
                    t.Pc++;
                    return;
                case Op.Wgmma: case Op.Ldmatrix: case Op.Mma: t.AtCollective = true; return;
                case Op.StGlobal:
                    {
                        long at = Checked(Aligned(Address(t, a[0]), 8, ins) - GlobalBase, 8, Global.Length, "global");
                        var v = a[1].Trim('{', '}').Split(',').Select(x => (uint)t.R[_regs[x.Trim()]]).ToArray();
                        BitConverter.TryWriteBytes(Global.AsSpan((int)at), v[0]);
                        BitConverter.TryWriteBytes(Global.AsSpan((int)at + 4), v[1]);
                        break;
                    }
                case Op.StGlobal32:
                    {
                        long at = Checked(Aligned(Address(t, a[0]), 4, ins) - GlobalBase, 4, Global.Length, "global");
                        BitConverter.TryWriteBytes(Global.AsSpan((int)at), (uint)t.R[_regs[a[1]]]);
                        break;
                    }
                case Op.CvtBf16x2:
                    {
                        // d = bf16(a) in the high half, bf16(b) in the low half, each rounded to nearest even.
                        float hi = BitConverter.UInt32BitsToSingle((uint)t.R[_regs[a[1]]]), lo = BitConverter.UInt32BitsToSingle((uint)t.R[_regs[a[2]]]);
                        Set(t, a[0], Bf16.FromFloat(lo) | ((ulong)Bf16.FromFloat(hi) << 16));
                        break;
                    }
                case Op.LdGlobal:
                    {
                        long at = Checked(Aligned(Address(t, a[1]), 8, ins) - GlobalBase, 8, Global.Length, "global");
                        var regs = a[0].Trim('{', '}').Split(',').Select(x => _regs[x.Trim()]).ToArray();
                        t.R[regs[0]] = BitConverter.ToUInt32(Global, (int)at);
                        t.R[regs[1]] = BitConverter.ToUInt32(Global, (int)at + 4);
                        break;
                    }
                case Op.LdGlobal32:
                    {
                        long at = Checked(Aligned(Address(t, a[1]), 4, ins) - GlobalBase, 4, Global.Length, "global");
                        Set(t, a[0], BitConverter.ToUInt32(Global, (int)at));
                        break;
                    }
                case Op.SubF: SetF(t, a[0], F(t, a[1], block, grid, threads) - F(t, a[2], block, grid, threads)); break;
                case Op.AddF: SetF(t, a[0], F(t, a[1], block, grid, threads) + F(t, a[2], block, grid, threads)); break;
                case Op.MulF: SetF(t, a[0], F(t, a[1], block, grid, threads) * F(t, a[2], block, grid, threads)); break;
                case Op.Ex2: SetF(t, a[0], Ftz(MathF.Pow(2f, Ftz(F(t, a[1], block, grid, threads))))); break;
                case Op.Rcp: SetF(t, a[0], Ftz(1f / Ftz(F(t, a[1], block, grid, threads)))); break;
                case Op.Ret:
                    if (_pending.Any(op => !op.Done && op.Warpgroup == (t.Tid >> 7)))
                        throw new InvalidOperationException("PTX interpreter: a thread exits with a wgmma never waited for");
                    t.Done = true;
                    return;
            }
            t.Pc++;
        }
    }

    /// <summary>A copy lands: its source size from global memory (whose address must be in bounds even when that is 0), zeros after.</summary>
    private void Land(byte[] shared, (uint Shared, ulong Global, int Size) c)
    {
        long from = Checked(c.Global - GlobalBase, 16, Global.Length, "global"), to = Checked(c.Shared, 16, shared.Length, "shared");
        Array.Copy(Global, from, shared, to, c.Size);
        Array.Clear(shared, (int)to + c.Size, 16 - c.Size);
    }

    /// <summary>An address that must be a multiple of <paramref name="bytes"/> (a misaligned access faults on a card).</summary>
    private static ulong Aligned(ulong address, int bytes, Ins ins)
    {
        if (address % (ulong)bytes != 0) throw new InvalidOperationException($"PTX interpreter: address 0x{address:x} is not on {bytes} bytes in '{ins.Text}'");
        return address;
    }

    private static long Checked(ulong offset, int bytes, int length, string space)
    {
        if (offset > (ulong)(length - bytes)) throw new InvalidOperationException($"PTX interpreter: {space} access of {bytes} bytes at offset {offset} is out of bounds ({length})");
        return (long)offset;
    }

    private void Bin(Thread t, string[] a, string type, int block, int grid, int threads, Func<ulong, ulong, ulong> f) =>
        Set(t, a[0], Mask(f(Val(t, a[1], block, grid, threads), Val(t, a[2], block, grid, threads)), type));

    /// <summary>An f32 operand (register or 0f immediate).</summary>
    private float F(Thread t, string s, int block, int grid, int threads) => BitConverter.UInt32BitsToSingle((uint)Val(t, s, block, grid, threads));

    private void SetF(Thread t, string reg, float v) => Set(t, reg, BitConverter.SingleToUInt32Bits(v));

    /// <summary>A subnormal flushed to a zero of its sign (.ftz).</summary>
    private static float Ftz(float v) => float.IsSubnormal(v) ? MathF.CopySign(0f, v) : v;

    private static ulong Mask(ulong v, string type) => type is "u64" or "b64" or "s64" ? v : (uint)v;

    private void Set(Thread t, string reg, ulong v) => t.R[_regs[reg]] = v;

    private ulong Val(Thread t, string s, int block, int grid, int threads)
    {
        if (s.StartsWith('%'))
            return s switch
            {
                "%tid.x" => (ulong)t.Tid,
                "%ctaid.x" => (ulong)block,
                "%ntid.x" => (ulong)threads,
                "%nctaid.x" => (ulong)grid,
                _ => t.R[_regs[s]],
            };
        if (s.StartsWith("0f", StringComparison.Ordinal)) return uint.Parse(s[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        if (s == _sharedSymbol) return SharedSymbolAddress;
        int param = Array.IndexOf(_params, s);
        if (param >= 0) return ParamBase + 256 * (ulong)param;
        return (ulong)long.Parse(s, CultureInfo.InvariantCulture);
    }

    /// <summary>The address of a [reg] or [reg+offset] operand.</summary>
    private ulong Address(Thread t, string s)
    {
        var m = Regex.Match(s, @"^\[(?<r>%[A-Za-z_0-9]+)(\+(?<o>-?\d+))?\]$");
        if (!m.Success) throw new NotSupportedException($"address {s}");
        ulong off = m.Groups["o"].Success ? (ulong)long.Parse(m.Groups["o"].Value, CultureInfo.InvariantCulture) : 0;
        return t.R[_regs[m.Groups["r"].Value]] + off;
    }
}
