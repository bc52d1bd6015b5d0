using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// SwiGLU, element-wise: h = silu(gate)·up forward; the backward pass reads gate and up before it writes, so dGate
/// may alias gate and dUp may alias up.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, long, int> _swigluForward = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _swigluBackward = null!;

    private void LoadSwiGlu()
    {
        _swigluForward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, long, int>(SwiGluForwardKernel);
        _swigluBackward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluBackwardKernel);
    }

    /// <inheritdoc/>
    protected override void SwiGluForwardCore(Tensor h, Tensor gate, Tensor up, Tensor hBf16)
    {
        if (gate.Count == 0) return;
        int flags = (h.IsEmpty ? 0 : 1) | (hBf16.IsEmpty ? 0 : 2);
        _swigluForward(Config(StreamGroups(gate.Count)), FOrDummy(h), F(gate), F(up), Bf16OrDummy(hBf16), gate.Count, flags);
    }

    /// <inheritdoc/>
    protected override void SwiGluBackwardCore(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up)
    {
        if (dh.Count == 0) return;
        _swigluBackward(Config(StreamGroups(dh.Count)), F(dGate), F(dUp), F(dh), F(gate), F(up));
    }

    /// <summary>h = gate·σ(gate)·up over n elements: to h (flags bit 0) and rounded to bfloat16 to h16 (bit 1).</summary>
    [IlgpuKernel]
    internal static void SwiGluForwardKernel(ArrayView<float> h, ArrayView<float> gate, ArrayView<float> up, ArrayView<ushort> h16, long n, int flags)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            float g = gate[i];
            float s = 1f / (1f + XMath.Exp(-g));
            float v = g * s * up[i];
            if ((flags & 1) != 0) h[i] = v;
            if ((flags & 2) != 0) h16[i] = RoundToBf16(v);
        }
    }

    /// <summary>dGate = dh·up·σ·(1 + gate·(1 − σ)), dUp = dh·silu(gate), σ = σ(gate).</summary>
    [IlgpuKernel]
    internal static void SwiGluBackwardKernel(ArrayView<float> dGate, ArrayView<float> dUp, ArrayView<float> dh, ArrayView<float> gate, ArrayView<float> up)
    {
        long n = dh.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            float g = gate[i], u = up[i], d = dh[i];
            float s = 1f / (1f + XMath.Exp(-g));
            dGate[i] = d * u * s * (1f + g * (1f - s));
            dUp[i] = d * (g * s);
        }
    }
}
