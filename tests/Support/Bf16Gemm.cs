using System.Text.RegularExpressions;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Ilgpu;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;

namespace HftRuntime.Tests.Support;

/// <summary>What the bf16 GEMM tests share: random bf16 operands, the check against float64, and a kernel's PTX.</summary>
internal static class Bf16Gemm
{
    /// <summary>
    /// Runs c (+)= op(a)·op(b) with random bf16 a, b on <paramref name="gpu"/> and checks every element of c against
    /// float64: |c − ref| at most 1e-5 of Σ_k |a·b| (+ |c₀|) for that element. Unwritten elements (NaN poison) and
    /// any misplaced element fail. a and b start <paramref name="offsetA"/> and <paramref name="offsetB"/> elements
    /// into their buffers.
    /// </summary>
    public static void Check(IlgpuBackend gpu, int m, int n, int k, bool transA, bool transB, bool accumulate, int offsetA = 0, int offsetB = 0, int seed = 1)
    {
        var rng = new Random(seed * 7919 + m * 31 + n * 17 + k);
        ushort[] a = RandomBf16(rng, m * k), b = RandomBf16(rng, k * n);
        float[] c0 = new float[m * n];
        for (int i = 0; i < c0.Length; i++) c0[i] = accumulate ? (float)(rng.NextDouble() * 2 - 1) : float.NaN;

        using var arena = gpu.CreateArena();
        var ta = arena.Reserve("a", m * k + offsetA, DType.BF16);
        var tb = arena.Reserve("b", k * n + offsetB, DType.BF16);
        var tc = arena.Reserve("c", m * n);
        arena.Commit();
        ta = ta.Slice(offsetA, m * k);
        tb = tb.Slice(offsetB, k * n);
        gpu.Upload<ushort>(ta, a);
        gpu.Upload<ushort>(tb, b);
        gpu.Upload<float>(tc, c0);
        gpu.MatMul(tc, ta, tb, m, n, k, transA, transB, accumulate);
        gpu.Synchronize();
        var got = gpu.ToArray<float>(tc);

        double worst = WorstRatio(a, b, c0, got, m, n, k, transA, transB, accumulate, 0, k, out int wi, out int wj);
        Assert.That(worst, Is.LessThanOrEqualTo(1.0),
            $"{m}x{n}x{k} transA={transA} transB={transB} accumulate={accumulate}: element ({wi}, {wj}) is {got[wi * n + wj]}, error {worst:g3} × the tolerance");
    }

    /// <summary>
    /// The worst |c − ref| over c[m, n] against the float64 product of a and b over k0 .. k1 − 1 (plus c0 where
    /// accumulating), as a multiple of the tolerance 1e-5 · (Σ_k |a·b| + |c0|); infinite for a NaN (an unwritten
    /// element); where it is, in (i, j).
    /// </summary>
    public static double WorstRatio(ushort[] a, ushort[] b, ReadOnlySpan<float> c0, ReadOnlySpan<float> got, int m, int n, int k,
        bool transA, bool transB, bool accumulate, int k0, int k1, out int worstI, out int worstJ)
    {
        double worst = -1;
        worstI = worstJ = 0;
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = accumulate ? c0[i * n + j] : 0, scale = Math.Abs(sum);
                for (int kk = k0; kk < k1; kk++)
                {
                    double x = Bf(a[transA ? kk * m + i : i * k + kk]) * Bf(b[transB ? j * k + kk : kk * n + j]);
                    sum += x;
                    scale += Math.Abs(x);
                }
                double ratio = Math.Abs(got[i * n + j] - sum) / (1e-5 * scale + 1e-30);
                if (double.IsNaN(ratio)) ratio = double.PositiveInfinity;
                if (ratio > worst) { worst = ratio; worstI = i; worstJ = j; }
            }
        }
        return worst;
    }

    /// <summary>Uniform random values in [−1, 1) rounded to bf16.</summary>
    public static ushort[] RandomBf16(Random rng, int count)
    {
        var x = new ushort[count];
        for (int i = 0; i < count; i++) x[i] = FloatConversions.FloatToBFloat16((float)(rng.NextDouble() * 2 - 1));
        return x;
    }

    /// <summary>A bf16 value as a double.</summary>
    public static double Bf(ushort bits) => FloatConversions.BFloat16ToFloat(bits);

    /// <summary>A kernel's PTX for sm_90 at <paramref name="level"/>; with HFT_DUMP_PTX set to a folder, also written there.</summary>
    public static string CompilePtx(string kernel, OptimizationLevel level)
    {
        using var context = IlgpuBackend.CreateContext(_ => { }, level);
        using var ptxBackend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null);
        var method = PtxCompileTests.MarkedKernels().Single(mi => mi.Name == kernel);
        var compiled = (PTXCompiledKernel)ptxBackend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), new KernelSpecialization());
        var dump = Environment.GetEnvironmentVariable("HFT_DUMP_PTX");
        if (!string.IsNullOrEmpty(dump)) File.WriteAllText(Path.Combine(dump, $"{kernel}.{level}.ptx"), compiled.PTXAssembly);
        return compiled.PTXAssembly;
    }
}
