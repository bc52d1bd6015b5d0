namespace HftRuntime.Tests.Support;

/// <summary>Random inputs and error measures for numerical tests.</summary>
public static class Numerics
{
    /// <summary>Normal(0, scale²) samples from a seeded generator.</summary>
    public static float[] Randn(Random rng, int count, double scale = 1.0)
    {
        var a = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            a[i] = (float)(scale * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return a;
    }

    /// <summary>Uniform integers in [0, max).</summary>
    public static int[] RandInt(Random rng, int count, int max)
    {
        var a = new int[count];
        for (int i = 0; i < count; i++) a[i] = rng.Next(max);
        return a;
    }

    /// <summary>Widens to double.</summary>
    public static double[] D(float[] a) => Array.ConvertAll(a, x => (double)x);

    /// <summary>‖a − b‖ / ‖b‖; NaN anywhere gives +∞.</summary>
    public static double RelErr(ReadOnlySpan<float> a, ReadOnlySpan<double> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} vs {b.Length}");
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (!double.IsFinite(a[i])) return double.PositiveInfinity;
            double d = a[i] - b[i];
            num += d * d; den += b[i] * b[i];
        }
        if (den == 0) throw new ArgumentException("reference is all zeros: the comparison would prove nothing");
        return Math.Sqrt(num / den);
    }

    /// <summary>‖a − b‖ / ‖b‖ for two double arrays.</summary>
    public static double RelErr(double[] a, double[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} vs {b.Length}");
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (!double.IsFinite(a[i])) return double.PositiveInfinity;
            num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i];
        }
        if (den == 0) throw new ArgumentException("reference is all zeros: the comparison would prove nothing");
        return Math.Sqrt(num / den);
    }

    /// <summary>‖a − b‖ / ‖b‖ for two float arrays.</summary>
    public static double RelErr(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var bd = new double[b.Length];
        for (int i = 0; i < b.Length; i++) bd[i] = b[i];
        return RelErr(a, bd);
    }

    /// <summary>
    /// Central finite-difference gradient of the scalar function <paramref name="f"/> at <paramref name="x"/>
    /// (computed in double; x is restored).
    /// </summary>
    public static double[] FiniteDifference(double[] x, Func<double> f, double h = 1e-6)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + h; double fp = f();
            x[i] = keep - h; double fm = f();
            x[i] = keep;
            g[i] = (fp - fm) / (2 * h);
        }
        return g;
    }

    /// <summary>Σ a·b.</summary>
    public static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
