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
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _swigluForward = null!;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _swigluBackward = null!;

    private void LoadSwiGlu()
    {
        _swigluForward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluForwardKernel);
        _swigluBackward = Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluBackwardKernel);
    }

    /// <inheritdoc/>
    protected override void SwiGluForwardCore(Tensor h, Tensor gate, Tensor up)
    {
        if (h.Count == 0) return;
        _swigluForward(Config(StreamGroups(h.Count)), F(h), F(gate), F(up));
    }

    /// <inheritdoc/>
    protected override void SwiGluBackwardCore(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up)
    {
        if (dh.Count == 0) return;
        _swigluBackward(Config(StreamGroups(dh.Count)), F(dGate), F(dUp), F(dh), F(gate), F(up));
    }

    /// <summary>h = gate·σ(gate)·up.</summary>
    [IlgpuKernel]
    internal static void SwiGluForwardKernel(ArrayView<float> h, ArrayView<float> gate, ArrayView<float> up)
    {
        long n = h.Length, stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            float g = gate[i];
            float s = 1f / (1f + XMath.Exp(-g));
            h[i] = g * s * up[i];
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
