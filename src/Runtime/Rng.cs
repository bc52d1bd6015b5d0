namespace HftRuntime.Runtime;

/// <summary>
/// A small, fast, reproducible random generator (SplitMix64). Same seed, same sequence on every machine and .NET
/// version; its whole state is one 64-bit number, saved in checkpoints so that a resumed run draws what an
/// uninterrupted one would.
/// </summary>
public sealed class Rng
{
    /// <summary>Creates a generator from a seed.</summary>
    public Rng(ulong seed) => State = seed;

    /// <summary>The generator's state (save it to resume the sequence).</summary>
    public ulong State { get; set; }

    /// <summary>A seed for an independent stream, derived from a base seed and stream numbers (e.g. stage index).</summary>
    public static ulong Derive(ulong seed, params ReadOnlySpan<long> stream)
    {
        ulong s = Mix(seed ^ 0x9E3779B97F4A7C15UL);
        foreach (long x in stream) s = Mix(s ^ Mix((ulong)x + 0xD1B54A32D192ED03UL));
        return s;
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        State += 0x9E3779B97F4A7C15UL;
        return Mix(State);
    }

    /// <summary>A uniform integer in [0, <paramref name="max"/>), without modulo bias.</summary>
    public int NextInt(int max)
    {
        if (max <= 0) throw new ArgumentOutOfRangeException(nameof(max), max, "max must be positive");
        ulong limit = ulong.MaxValue - ulong.MaxValue % (ulong)max;
        ulong r;
        do r = NextUInt64(); while (r >= limit);
        return (int)(r % (ulong)max);
    }

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A standard normal sample (Box–Muller).</summary>
    public double NextNormal()
    {
        double u1 = 1.0 - NextDouble(), u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary>Shuffles <paramref name="items"/> in place (Fisher–Yates).</summary>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    /// <summary><paramref name="count"/> distinct indices of [0, <paramref name="n"/>), in increasing order.</summary>
    public int[] Choose(int n, int count)
    {
        if (count < 0 || count > n) throw new ArgumentOutOfRangeException(nameof(count), count, $"cannot choose {count} of {n}");
        var all = new int[n];
        for (int i = 0; i < n; i++) all[i] = i;
        Shuffle<int>(all);
        var r = all.AsSpan(0, count).ToArray();
        Array.Sort(r);
        return r;
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
