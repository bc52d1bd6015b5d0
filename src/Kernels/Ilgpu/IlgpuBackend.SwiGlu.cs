using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// SwiGLU, element-wise: h = silu(gate)·up forward; the backward pass reads gate and up before it writes, so dGate
/// may alias gate and dUp may alias up, in fp32 or (a kernel of its own) in bf16.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<F4>, ArrayView<F4>, ArrayView<F4>, ArrayView<U2>, ArrayView<U2>, ArrayView<U2>, long, int> _swigluForwardQuads = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, long, int> _swigluForward = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _swigluBackward = null!;
    private Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>> _swigluBackwardBf16 = null!;
    private Action<KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<F2>, ArrayView<uint>, ArrayView<uint>> _swigluBackwardBf16Pairs = null!;

    private void LoadSwiGlu()
    {
        _swigluForwardQuads = Load<ArrayView<F4>, ArrayView<F4>, ArrayView<F4>, ArrayView<U2>, ArrayView<U2>, ArrayView<U2>, long, int>(SwiGluForwardQuadsKernel);
        _swigluForward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, long, int>(SwiGluForwardKernel);
        _swigluBackward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluBackwardKernel);
        _swigluBackwardBf16 = Load<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>>(SwiGluBackwardBf16Kernel);
        _swigluBackwardBf16Pairs = Load<ArrayView<uint>, ArrayView<uint>, ArrayView<F2>, ArrayView<uint>, ArrayView<uint>>(SwiGluBackwardBf16PairsKernel);
        LoadSwiGluBf16();
    }

    /// <inheritdoc/>
    protected override void SwiGluForwardCore(Tensor h, Tensor gate, Tensor up, Tensor hBf16, Tensor gateBf16, Tensor upBf16)
    {
        if (gate.Count == 0) return;
        if (gate.Type == DType.BF16) { SwiGluForwardFromBf16(h, gate, up, hBf16); return; }
        int flags = (h.IsEmpty ? 0 : 1) | (hBf16.IsEmpty ? 0 : 2) | (gateBf16.IsEmpty ? 0 : 4);
        // Quads (16-byte loads, 8-byte bf16 stores) where every tensor allows: ILGPU placed the second element's
        // loads of the two-element loop after the first one's stores (three 4-byte loads in flight; 100 µs per
        // 8192 × 2048 call on an H100, 84 % of its bytes).
        if (gate.Count % 4 == 0 && gate.ByteOffset % 16 == 0 && up.ByteOffset % 16 == 0 && (h.IsEmpty || h.ByteOffset % 16 == 0)
            && (hBf16.IsEmpty || hBf16.ByteOffset % 8 == 0) && (gateBf16.IsEmpty || (gateBf16.ByteOffset % 8 == 0 && upBf16.ByteOffset % 8 == 0)))
        {
            long quads = gate.Count / 4;
            ArrayView<U2> U2Of(Tensor t) => t.IsEmpty ? _dummy.View.BaseView.Cast<U2>() : Bf16View(t).SubView(0, gate.Count).Cast<U2>();
            _swigluForwardQuads(Config(StreamGroups(quads)), h.IsEmpty ? _dummy.View.BaseView.Cast<F4>() : Quads(h, gate.Count), Quads(gate, gate.Count),
                Quads(up, gate.Count), U2Of(hBf16), U2Of(gateBf16), U2Of(upBf16), quads, flags);
            return;
        }
        _swigluForward(Config(StreamGroups(gate.Count)), FOrDummy(h), F(gate), F(up), Bf16OrDummy(hBf16), Bf16OrDummy(gateBf16), Bf16OrDummy(upBf16), gate.Count, flags);
    }

    /// <inheritdoc/>
    protected override void SwiGluBackwardCore(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up)
    {
        if (dh.Count == 0) return;
        if (dh.Type == DType.BF16) { SwiGluBackwardFromBf16(dGate, dUp, dh, gate, up); return; }
        // bf16 pairs (4-byte loads and stores, 8 bytes of dh) where every tensor allows it: one element per thread
        // and step took 116 µs per 8192 × 2048 call on an H100, 61 % of what its bytes take.
        if (gate.Type == DType.BF16 && dh.Count % 2 == 0 && dh.ByteOffset % 8 == 0
            && dGate.ByteOffset % 4 == 0 && dUp.ByteOffset % 4 == 0 && gate.ByteOffset % 4 == 0 && up.ByteOffset % 4 == 0)
        {
            long pairs = dh.Count / 2;
            _swigluBackwardBf16Pairs(Config(StreamGroups(pairs)), Pairs(dGate, pairs), Pairs(dUp, pairs), F(dh).SubView(0, dh.Count).Cast<F2>(),
                Pairs(gate, pairs), Pairs(up, pairs));
        }
        else if (gate.Type == DType.BF16)
            _swigluBackwardBf16(Config(StreamGroups(dh.Count)), Bf16View(dGate), Bf16View(dUp), F(dh), Bf16View(gate), Bf16View(up));
        else
            _swigluBackward(Config(StreamGroups(dh.Count)), F(dGate), F(dUp), F(dh), F(gate), F(up));
    }

    /// <summary>
    /// h = gate·σ(gate)·up over n elements: to h (flags bit 0) and rounded to bfloat16 to h16 (bit 1); bit 2: gate and
    /// up rounded to g16 and u16 as well.
    /// </summary>
    [IlgpuKernel]
    internal static void SwiGluForwardKernel(ArrayView<float> h, ArrayView<float> gate, ArrayView<float> up, ArrayView<ushort> h16,
        ArrayView<ushort> g16, ArrayView<ushort> u16, long n, int flags)
    {
        // Two elements per step, their loads issued together (one per step left the loads of the next element
        // behind this one's arithmetic: 116 µs per 8192 × 2048 call on an H100, 72 % of the copy bandwidth).
        long stride = (long)Grid.DimX * Group.DimX, i = Grid.GlobalIndex.X;
        for (; i + stride < n; i += 2 * stride)
        {
            float ga = gate[i], ua = up[i], gb = gate[i + stride], ub = up[i + stride];
            SwiGluForwardAt(h, h16, g16, u16, i, ga, ua, flags);
            SwiGluForwardAt(h, h16, g16, u16, i + stride, gb, ub, flags);
        }
        if (i < n) SwiGluForwardAt(h, h16, g16, u16, i, gate[i], up[i], flags);
    }

    /// <summary><see cref="SwiGluForwardKernel"/> on quads: two per thread and step, every load of a step issued before its stores.</summary>
    [IlgpuKernel]
    internal static void SwiGluForwardQuadsKernel(ArrayView<F4> h, ArrayView<F4> gate, ArrayView<F4> up, ArrayView<U2> h16,
        ArrayView<U2> g16, ArrayView<U2> u16, long n, int flags)
    {
        long stride = (long)Grid.DimX * Group.DimX, i = Grid.GlobalIndex.X;
        for (; i + stride < n; i += 2 * stride)
        {
            // Both quads computed before either is stored: ILGPU places a load where its value is first used, and
            // ptxas cannot move a load above a store to another buffer (it might alias).
            F4 ga = gate[i], ua = up[i], gb = gate[i + stride], ub = up[i + stride];
            F4 va = SwiGluQuad(ga, ua), vb = SwiGluQuad(gb, ub);
            StoreSwiGluQuad(h, h16, g16, u16, i, ga, ua, va, flags);
            StoreSwiGluQuad(h, h16, g16, u16, i + stride, gb, ub, vb, flags);
        }
        if (i < n)
        {
            F4 g = gate[i], u = up[i];
            StoreSwiGluQuad(h, h16, g16, u16, i, g, u, SwiGluQuad(g, u), flags);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static F4 SwiGluQuad(F4 g, F4 u)
    {
        F4 v;
        v.X = SwiGlu(g.X, u.X); v.Y = SwiGlu(g.Y, u.Y); v.Z = SwiGlu(g.Z, u.Z); v.W = SwiGlu(g.W, u.W);
        return v;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void StoreSwiGluQuad(ArrayView<F4> h, ArrayView<U2> h16, ArrayView<U2> g16, ArrayView<U2> u16, long i, F4 g, F4 u, F4 v, int flags)
    {
        if ((flags & 1) != 0) h[i] = v;
        if ((flags & 2) != 0) h16[i] = PackQuad(v);
        if ((flags & 4) != 0)
        {
            g16[i] = PackQuad(g);
            u16[i] = PackQuad(u);
        }
    }

    /// <summary>g·σ(g)·u, as every SwiGLU forward kernel computes it.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float SwiGlu(float g, float u) => g * Sigmoid(g) * u;

    /// <summary>
    /// σ(g) = 1 / (1 + e^−g): on CUDA <c>ex2.approx.ftz</c> and <c>rcp.approx.ftz</c>, two instructions without a
    /// branch (the IEEE division's slow path was a branch per element, and ptxas moves no load across it: the next
    /// element's loads waited for this one's arithmetic); elsewhere the exact expression. σ → 0 for g → −∞
    /// (e^−g = ∞), 1 for g → ∞.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static float Sigmoid(float g)
    {
        switch (Accelerator.CurrentType)
        {
            case AcceleratorType.Cuda:
                Ref<float> d = 0f;
                Input<float> a = 1f + TcExp2(-g * Log2E);
                CudaAsm.EmitRef("rcp.approx.ftz.f32 %0, %1;", ref d, ref a);
                return d.Value;
            case AcceleratorType.CPU:
            case AcceleratorType.OpenCL:
            default:
                return 1f / (1f + XMath.Exp(-g));
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void SwiGluForwardAt(ArrayView<float> h, ArrayView<ushort> h16, ArrayView<ushort> g16, ArrayView<ushort> u16, long i, float g, float u, int flags)
    {
        float v = SwiGlu(g, u);
        if ((flags & 1) != 0) h[i] = v;
        if ((flags & 2) != 0) h16[i] = RoundToBf16(v);
        if ((flags & 4) != 0)
        {
            g16[i] = RoundToBf16(g);
            u16[i] = RoundToBf16(u);
        }
    }

    /// <summary>As <see cref="SwiGluBackwardKernel"/> with bf16 gate and up (widened) and bf16 gradients (rounded).</summary>
    [IlgpuKernel]
    internal static void SwiGluBackwardBf16Kernel(ArrayView<ushort> dGate, ArrayView<ushort> dUp, ArrayView<float> dh, ArrayView<ushort> gate, ArrayView<ushort> up)
    {
        // Two elements per step (see SwiGluForwardKernel).
        long n = dh.Length, stride = (long)Grid.DimX * Group.DimX, i = Grid.GlobalIndex.X;
        for (; i + stride < n; i += 2 * stride)
        {
            ushort ga = gate[i], ua = up[i], gb = gate[i + stride], ub = up[i + stride];
            float da = dh[i], db = dh[i + stride];
            SwiGluBackwardBf16At(dGate, dUp, i, ga, ua, da);
            SwiGluBackwardBf16At(dGate, dUp, i + stride, gb, ub, db);
        }
        if (i < n) SwiGluBackwardBf16At(dGate, dUp, i, gate[i], up[i], dh[i]);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void SwiGluBackwardBf16At(ArrayView<ushort> dGate, ArrayView<ushort> dUp, long i, ushort g16, ushort u16, float d)
    {
        SwiGluGradient(Widen(g16), Widen(u16), d, out float dg, out float du);
        dGate[i] = RoundToBf16(dg);
        dUp[i] = RoundToBf16(du);
    }

    /// <summary>The SwiGLU gradients of one element: dGate = d·u·σ·(1 + g·(1 − σ)), dUp = d·g·σ, σ = σ(g).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void SwiGluGradient(float g, float u, float d, out float dGate, out float dUp)
    {
        float s = Sigmoid(g);
        dGate = d * u * s * (1f + g * (1f - s));
        dUp = d * (g * s);
    }

    /// <summary>The first <paramref name="pairs"/> bf16 pairs of a BF16 tensor that starts on 4 bytes.</summary>
    private static ArrayView<uint> Pairs(Tensor t, long pairs) => Bf16View(t).Cast<uint>().SubView(0, pairs);

    /// <summary>
    /// <see cref="SwiGluBackwardBf16Kernel"/> on bf16 pairs: elements 2i and 2i + 1 of gate, up, dGate and dUp as
    /// uint i (the even one in the low half), of dh as F2 i; two pairs per thread and step.
    /// </summary>
    [IlgpuKernel]
    internal static void SwiGluBackwardBf16PairsKernel(ArrayView<uint> dGate, ArrayView<uint> dUp, ArrayView<F2> dh, ArrayView<uint> gate, ArrayView<uint> up)
    {
        long n = dh.Length, stride = (long)Grid.DimX * Group.DimX, i = Grid.GlobalIndex.X;
        for (; i + stride < n; i += 2 * stride)
        {
            uint ga = gate[i], ua = up[i], gb = gate[i + stride], ub = up[i + stride];
            F2 da = dh[i], db = dh[i + stride];
            SwiGluBackwardPairAt(dGate, dUp, i, ga, ua, da);
            SwiGluBackwardPairAt(dGate, dUp, i + stride, gb, ub, db);
        }
        if (i < n) SwiGluBackwardPairAt(dGate, dUp, i, gate[i], up[i], dh[i]);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void SwiGluBackwardPairAt(ArrayView<uint> dGate, ArrayView<uint> dUp, long i, uint g2, uint u2, F2 d)
    {
        SwiGluGradient(WidenLo(g2), WidenLo(u2), d.X, out float dg0, out float du0);
        SwiGluGradient(WidenHi(g2), WidenHi(u2), d.Y, out float dg1, out float du1);
        dGate[i] = RoundToBf16(dg0) | (uint)RoundToBf16(dg1) << 16;
        dUp[i] = RoundToBf16(du0) | (uint)RoundToBf16(du1) << 16;
    }

    /// <summary>dGate = dh·up·σ·(1 + gate·(1 − σ)), dUp = dh·silu(gate), σ = σ(gate).</summary>
    [IlgpuKernel]
    internal static void SwiGluBackwardKernel(ArrayView<float> dGate, ArrayView<float> dUp, ArrayView<float> dh, ArrayView<float> gate, ArrayView<float> up)
    {
        long n = dh.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            SwiGluGradient(gate[i], up[i], dh[i], out float dg, out float du);
            dGate[i] = dg;
            dUp[i] = du;
        }
    }
}
