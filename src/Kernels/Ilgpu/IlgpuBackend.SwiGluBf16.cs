using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// SwiGLU on bf16 inputs: the forward pass from bf16 gate and up (the products' bf16 outputs) to bf16 h, and the
/// backward pass from a bf16 dh; arithmetic in fp32, results rounded to nearest even. Octets (16-byte loads) where the
/// tensors allow, two per thread and step with all their loads issued first; element by element otherwise.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>> _swigluForwardBf16Octets = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, int> _swigluForwardBf16 = null!;
    private Action<KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>> _swigluBackwardBf16DhOctets = null!;
    private Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> _swigluBackwardBf16Dh = null!;

    private void LoadSwiGluBf16()
    {
        _swigluForwardBf16Octets = Load<ArrayView<U4>, ArrayView<U4>, ArrayView<U4>>(SwiGluForwardBf16OctetsKernel);
        _swigluForwardBf16 = Load<ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, int>(SwiGluForwardBf16Kernel);
        _swigluBackwardBf16DhOctets = Load<ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>>(SwiGluBackwardBf16DhOctetsKernel);
        _swigluBackwardBf16Dh = Load<ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>>(SwiGluBackwardBf16DhKernel);
    }

    /// <summary>The first <paramref name="count"/> elements of a BF16 tensor as octets (where <see cref="OctetsFit"/>).</summary>
    private static ArrayView<U4> Octets(Tensor t, long count) => Bf16View(t).SubView(0, count).Cast<U4>();

    /// <summary>Whether count is a multiple of 8 and every tensor starts on 16 bytes.</summary>
    private static bool OctetsFit(long count, params Tensor[] tensors) => count % 8 == 0 && tensors.All(t => t.ByteOffset % 16 == 0);

    /// <summary>h16 (and h where given) = silu(gate)·up from bf16 gate and up.</summary>
    private void SwiGluForwardFromBf16(Tensor h, Tensor gate, Tensor up, Tensor hBf16)
    {
        long n = gate.Count;
        if (h.IsEmpty && OctetsFit(n, gate, up, hBf16))
        {
            _swigluForwardBf16Octets(Config(StreamGroups(n / 8)), Octets(hBf16, n), Octets(gate, n), Octets(up, n));
            return;
        }
        int flags = (h.IsEmpty ? 0 : 1) | (hBf16.IsEmpty ? 0 : 2);
        _swigluForwardBf16(Config(StreamGroups(n)), FOrDummy(h), Bf16OrDummy(hBf16), Bf16View(gate).SubView(0, n), Bf16View(up), flags);
    }

    /// <summary>dGate, dUp (BF16) from a bf16 dh and bf16 gate and up.</summary>
    private void SwiGluBackwardFromBf16(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up)
    {
        long n = dh.Count;
        if (OctetsFit(n, dGate, dUp, dh, gate, up))
            _swigluBackwardBf16DhOctets(Config(StreamGroups(n / 8)), Octets(dGate, n), Octets(dUp, n), Octets(dh, n), Octets(gate, n), Octets(up, n));
        else
            _swigluBackwardBf16Dh(Config(StreamGroups(n)), Bf16View(dGate), Bf16View(dUp), Bf16View(dh).SubView(0, n), Bf16View(gate), Bf16View(up));
    }

    /// <summary>silu(g)·u of a pair of bf16 pairs, rounded to a bf16 pair.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint SwiGluPair(uint g, uint u) => PackBf16(SwiGlu(WidenLo(g), WidenLo(u)), SwiGlu(WidenHi(g), WidenHi(u)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U4 SwiGluOctet(U4 g, U4 u)
    {
        U4 h;
        h.X = SwiGluPair(g.X, u.X); h.Y = SwiGluPair(g.Y, u.Y); h.Z = SwiGluPair(g.Z, u.Z); h.W = SwiGluPair(g.W, u.W);
        return h;
    }

    /// <summary>h = silu(gate)·up over octets of bf16, two per thread and step (their four loads issued before either store).</summary>
    [IlgpuKernel]
    internal static void SwiGluForwardBf16OctetsKernel(ArrayView<U4> h, ArrayView<U4> gate, ArrayView<U4> up)
    {
        long n = gate.Length, stride = (long)Grid.DimX * Group.DimX, i = Grid.GlobalIndex.X;
        for (; i + stride < n; i += 2 * stride)
        {
            U4 ga = gate[i], ua = up[i], gb = gate[i + stride], ub = up[i + stride];
            U4 va = SwiGluOctet(ga, ua), vb = SwiGluOctet(gb, ub);
            h[i] = va;
            h[i + stride] = vb;
        }
        if (i < n) h[i] = SwiGluOctet(gate[i], up[i]);
    }

    /// <summary>
    /// h = silu(gate)·up element by element from bf16 gate and up (n = gate.Length): to h (flags bit 0) and rounded to
    /// h16 (bit 1).
    /// </summary>
    [IlgpuKernel]
    internal static void SwiGluForwardBf16Kernel(ArrayView<float> h, ArrayView<ushort> h16, ArrayView<ushort> gate, ArrayView<ushort> up, int flags)
    {
        long n = gate.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            float v = SwiGlu(Widen(gate[i]), Widen(up[i]));
            if ((flags & 1) != 0) h[i] = v;
            if ((flags & 2) != 0) h16[i] = RoundToBf16(v);
        }
    }

    /// <summary>The SwiGLU gradients of a pair of bf16 pairs (g, u, d), rounded to bf16 pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SwiGluGradientPair(uint g, uint u, uint d, out uint dGate, out uint dUp)
    {
        SwiGluGradient(WidenLo(g), WidenLo(u), WidenLo(d), out float dg0, out float du0);
        SwiGluGradient(WidenHi(g), WidenHi(u), WidenHi(d), out float dg1, out float du1);
        dGate = PackBf16(dg0, dg1);
        dUp = PackBf16(du0, du1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SwiGluGradientOctet(U4 g, U4 u, U4 d, out U4 dg, out U4 du)
    {
        SwiGluGradientPair(g.X, u.X, d.X, out dg.X, out du.X);
        SwiGluGradientPair(g.Y, u.Y, d.Y, out dg.Y, out du.Y);
        SwiGluGradientPair(g.Z, u.Z, d.Z, out dg.Z, out du.Z);
        SwiGluGradientPair(g.W, u.W, d.W, out dg.W, out du.W);
    }

    /// <summary>
    /// dGate, dUp from bf16 dh, gate and up over octets, two per thread and step, both computed before either is stored
    /// (ILGPU places a load where its value is first used, and no load moves above a store to another buffer, which
    /// might alias: storing the first octet's gradients before computing the second's left the second's loads behind
    /// the first's arithmetic). dGate may alias gate and dUp up.
    /// </summary>
    [IlgpuKernel]
    internal static void SwiGluBackwardBf16DhOctetsKernel(ArrayView<U4> dGate, ArrayView<U4> dUp, ArrayView<U4> dh, ArrayView<U4> gate, ArrayView<U4> up)
    {
        long n = dh.Length, stride = (long)Grid.DimX * Group.DimX, i = Grid.GlobalIndex.X;
        for (; i + stride < n; i += 2 * stride)
        {
            U4 ga = gate[i], ua = up[i], da = dh[i], gb = gate[i + stride], ub = up[i + stride], db = dh[i + stride];
            SwiGluGradientOctet(ga, ua, da, out U4 dga, out U4 dua);
            SwiGluGradientOctet(gb, ub, db, out U4 dgb, out U4 dub);
            dGate[i] = dga;
            dUp[i] = dua;
            dGate[i + stride] = dgb;
            dUp[i + stride] = dub;
        }
        if (i < n)
        {
            SwiGluGradientOctet(gate[i], up[i], dh[i], out U4 dg, out U4 du);
            dGate[i] = dg;
            dUp[i] = du;
        }
    }

    /// <summary>dGate, dUp from bf16 dh, gate and up, element by element (n = dh.Length).</summary>
    [IlgpuKernel]
    internal static void SwiGluBackwardBf16DhKernel(ArrayView<ushort> dGate, ArrayView<ushort> dUp, ArrayView<ushort> dh, ArrayView<ushort> gate, ArrayView<ushort> up)
    {
        long n = dh.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            SwiGluGradient(Widen(gate[i]), Widen(up[i]), Widen(dh[i]), out float dg, out float du);
            dGate[i] = RoundToBf16(dg);
            dUp[i] = RoundToBf16(du);
        }
    }
}
