using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// Warp and group reductions used inside kernels; every thread (lane) receives the result, and the result does not
/// depend on timing. On a GPU they use butterfly (xor) shuffles, which give every lane the same value (each level
/// adds the same two numbers in either order), and a fixed tree across warps. On ILGPU's CPU accelerator, where a
/// shuffle costs four simulated barriers, every thread instead adds the values in shared memory in a fixed order, in
/// double (about as accurate as the tree). <see cref="Accelerator.CurrentType"/> becomes a constant when the kernel is
/// compiled, so on a GPU the CPU path is dead code that ptxas drops.
/// </summary>
internal static class DeviceReduce
{
    /// <summary>Floats (or doubles) of shared memory a reduction needs: one per thread of the group.</summary>
    public const int SharedSize = IlgpuBackend.GroupSize;

    /// <summary>Sum over the 32 lanes of the warp. <paramref name="shared"/>: <see cref="SharedSize"/> floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float WarpSum(float v, ArrayView<float> shared)
    {
        if (Accelerator.CurrentType == AcceleratorType.CPU)
        {
            shared[Group.IdxX] = v;
            Warp.Barrier();
            int first = Warp.WarpIdx * IlgpuBackend.WarpSize;
            double s = 0.0;
            for (int i = 0; i < IlgpuBackend.WarpSize; i++) s += shared[first + i];
            Warp.Barrier();
            return (float)s;
        }
        v = XorSum(v);
        return v;
    }

    /// <summary>
    /// Sum over the group (<see cref="IlgpuBackend.GroupSize"/> threads). <paramref name="shared"/>:
    /// <see cref="SharedSize"/> floats, free again once this returns.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float GroupSum(float v, ArrayView<float> shared)
    {
        if (Accelerator.CurrentType == AcceleratorType.CPU)
        {
            shared[Group.IdxX] = v;
            Group.Barrier();
            double s = 0.0;
            for (int i = 0; i < IlgpuBackend.GroupSize; i++) s += shared[i];
            Group.Barrier();
            return (float)s;
        }
        v = XorSum(v);
        if (Warp.LaneIdx == 0) shared[Warp.WarpIdx] = v;
        Group.Barrier();
        v = Warp.LaneIdx < IlgpuBackend.WarpsPerGroup ? shared[Warp.LaneIdx] : 0f;
        v = XorSum(v);
        Group.Barrier();
        return v;
    }

    /// <summary>Sum over the group in double; as <see cref="GroupSum(float, ArrayView{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double GroupSum(double v, ArrayView<double> shared)
    {
        if (Accelerator.CurrentType == AcceleratorType.CPU)
        {
            shared[Group.IdxX] = v;
            Group.Barrier();
            double s = 0.0;
            for (int i = 0; i < IlgpuBackend.GroupSize; i++) s += shared[i];
            Group.Barrier();
            return s;
        }
        v = XorSum(v);
        if (Warp.LaneIdx == 0) shared[Warp.WarpIdx] = v;
        Group.Barrier();
        v = Warp.LaneIdx < IlgpuBackend.WarpsPerGroup ? shared[Warp.LaneIdx] : 0.0;
        v = XorSum(v);
        Group.Barrier();
        return v;
    }

    /// <summary>Maximum over the group; as <see cref="GroupSum(float, ArrayView{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float GroupMax(float v, ArrayView<float> shared)
    {
        if (Accelerator.CurrentType == AcceleratorType.CPU)
        {
            shared[Group.IdxX] = v;
            Group.Barrier();
            float m = float.NegativeInfinity;
            for (int i = 0; i < IlgpuBackend.GroupSize; i++) m = Max(m, shared[i]);
            Group.Barrier();
            return m;
        }
        v = XorMax(v);
        if (Warp.LaneIdx == 0) shared[Warp.WarpIdx] = v;
        Group.Barrier();
        v = Warp.LaneIdx < IlgpuBackend.WarpsPerGroup ? shared[Warp.LaneIdx] : float.NegativeInfinity;
        v = XorMax(v);
        Group.Barrier();
        return v;
    }

    /// <summary>Butterfly sum over the warp: every lane gets the same value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float XorSum(float v)
    {
        v += Warp.ShuffleXor(v, 16);
        v += Warp.ShuffleXor(v, 8);
        v += Warp.ShuffleXor(v, 4);
        v += Warp.ShuffleXor(v, 2);
        return v + Warp.ShuffleXor(v, 1);
    }

    /// <summary>Butterfly sum over the warp, in double.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double XorSum(double v)
    {
        v += Warp.ShuffleXor(v, 16);
        v += Warp.ShuffleXor(v, 8);
        v += Warp.ShuffleXor(v, 4);
        v += Warp.ShuffleXor(v, 2);
        return v + Warp.ShuffleXor(v, 1);
    }

    /// <summary>Butterfly maximum over the warp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float XorMax(float v)
    {
        v = Max(v, Warp.ShuffleXor(v, 16));
        v = Max(v, Warp.ShuffleXor(v, 8));
        v = Max(v, Warp.ShuffleXor(v, 4));
        v = Max(v, Warp.ShuffleXor(v, 2));
        return Max(v, Warp.ShuffleXor(v, 1));
    }

    /// <summary>max(a, b) for floats; a NaN in either argument propagates (as TensorPrimitives.Max does).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max(float a, float b) => b > a || float.IsNaN(b) ? b : a;

    /// <summary>min(a, b) for ints.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Min(int a, int b) => a < b ? a : b;
}
