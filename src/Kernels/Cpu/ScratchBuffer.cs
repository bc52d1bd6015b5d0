using System.Runtime.InteropServices;

namespace HftRuntime.Kernels.Cpu;

/// <summary>
/// Per-thread scratch memory for CPU kernels: grows on demand (so only the first calls allocate) and is kept for
/// the thread's lifetime. Pool threads live as long as the back-end; the caller thread's buffer lives with it.
/// </summary>
internal static unsafe class ScratchBuffer
{
    [ThreadStatic] private static float* t_ptr;
    [ThreadStatic] private static long t_capacity;

    /// <summary>At least <paramref name="floats"/> floats of 64-byte-aligned memory for this thread, contents undefined.</summary>
    public static float* Get(long floats)
    {
        if (floats > t_capacity)
        {
            if (t_ptr != null) NativeMemory.AlignedFree(t_ptr);
            long cap = Math.Max(floats, t_capacity * 2);
            t_ptr = (float*)NativeMemory.AlignedAlloc((nuint)(cap * sizeof(float)), 64);
            t_capacity = cap;
        }
        return t_ptr;
    }
}
