namespace HftRuntime.Tests.Support;

/// <summary>Plain float64 implementations of the operations, written for clarity; the oracle of the op tests.</summary>
public static class Reference
{
    /// <summary>c[m,n] = op(a)·op(b), row-major, op as in Backend.MatMul.</summary>
    public static double[] MatMul(double[] a, double[] b, int m, int n, int k, bool transA, bool transB)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                    s += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
                c[i * n + j] = s;
            }
        return c;
    }

    /// <summary>RMSNorm rows of x [n, d].</summary>
    public static double[] RmsNorm(double[] x, double[] w, int n, int d, double eps)
    {
        var y = new double[n * d];
        for (int i = 0; i < n; i++)
        {
            double ss = 0;
            for (int j = 0; j < d; j++) ss += x[i * d + j] * x[i * d + j];
            double r = 1 / Math.Sqrt(ss / d + eps);
            for (int j = 0; j < d; j++) y[i * d + j] = x[i * d + j] * r * w[j];
        }
        return y;
    }

    /// <summary>RoPE (rotate-half) of x [n, heads, hd] with tables [maxPos, hd/2].</summary>
    public static double[] Rope(double[] x, int[] pos, double[] cos, double[] sin, int n, int heads, int hd)
    {
        var y = new double[x.Length];
        int half = hd / 2;
        for (int i = 0; i < n; i++)
            for (int h = 0; h < heads; h++)
            {
                int o = (i * heads + h) * hd;
                for (int j = 0; j < half; j++)
                {
                    double c = cos[pos[i] * half + j], s = sin[pos[i] * half + j];
                    y[o + j] = x[o + j] * c - x[o + j + half] * s;
                    y[o + j + half] = x[o + j + half] * c + x[o + j] * s;
                }
            }
        return y;
    }

    /// <summary>Causal GQA attention with optional document starts; returns o and lse [b, h, t].</summary>
    public static (double[] O, double[] Lse) Attention(double[] q, double[] k, double[] v, int[]? docStart,
        int batch, int seq, int heads, int kvHeads, int hd, double scale)
    {
        var o = new double[batch * seq * heads * hd];
        var lse = new double[batch * heads * seq];
        int group = heads / kvHeads;
        var s = new double[seq];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int t = 0; t < seq; t++)
                {
                    int g = h / group, j0 = docStart?[b * seq + t] ?? 0;
                    double max = double.NegativeInfinity;
                    for (int j = j0; j <= t; j++)
                    {
                        double dot = 0;
                        for (int x = 0; x < hd; x++)
                            dot += q[((b * seq + t) * heads + h) * hd + x] * k[((b * seq + j) * kvHeads + g) * hd + x];
                        s[j] = dot * scale;
                        max = Math.Max(max, s[j]);
                    }
                    double sum = 0;
                    for (int j = j0; j <= t; j++) sum += Math.Exp(s[j] - max);
                    lse[(b * heads + h) * seq + t] = max + Math.Log(sum);
                    for (int x = 0; x < hd; x++)
                    {
                        double acc = 0;
                        for (int j = j0; j <= t; j++) acc += Math.Exp(s[j] - max) / sum * v[((b * seq + j) * kvHeads + g) * hd + x];
                        o[((b * seq + t) * heads + h) * hd + x] = acc;
                    }
                }
        return (o, lse);
    }

    /// <summary>silu(g)·u.</summary>
    public static double[] SwiGlu(double[] g, double[] u)
    {
        var h = new double[g.Length];
        for (int i = 0; i < g.Length; i++) h[i] = g[i] / (1 + Math.Exp(-g[i])) * u[i];
        return h;
    }

    /// <summary>Per-row cross-entropy (0 for target −100).</summary>
    public static double[] CrossEntropy(double[] logits, int[] targets, int n, int vocab)
    {
        var loss = new double[n];
        for (int i = 0; i < n; i++)
        {
            if (targets[i] == -100) continue;
            double max = double.NegativeInfinity;
            for (int j = 0; j < vocab; j++) max = Math.Max(max, logits[i * vocab + j]);
            double sum = 0;
            for (int j = 0; j < vocab; j++) sum += Math.Exp(logits[i * vocab + j] - max);
            loss[i] = max + Math.Log(sum) - logits[i * vocab + targets[i]];
        }
        return loss;
    }

    /// <summary>RoPE tables for theta with float64 angles.</summary>
    public static (float[] Cos, float[] Sin) RopeTables(int maxPos, int hd, double theta)
    {
        int half = hd / 2;
        var cos = new float[maxPos * half];
        var sin = new float[maxPos * half];
        for (int p = 0; p < maxPos; p++)
            for (int j = 0; j < half; j++)
            {
                double a = p / Math.Pow(theta, 2.0 * j / hd);
                cos[p * half + j] = (float)Math.Cos(a);
                sin[p * half + j] = (float)Math.Sin(a);
            }
        return (cos, sin);
    }
}
