namespace HftRuntime.Kernels;

/// <summary>
/// Device time per operation name (see <see cref="Backend.Profile"/>): calls, milliseconds and, for matrix products,
/// FLOPs, summed over the operations run while it was set.
/// </summary>
public sealed class OpProfile
{
    /// <summary>One operation's calls, total milliseconds and total FLOPs (0 where not counted).</summary>
    public sealed record Entry(int Calls, double Ms, double Flops);

    private readonly Dictionary<string, Entry> _ops = new(StringComparer.Ordinal);

    /// <summary>The operations by name.</summary>
    public IReadOnlyDictionary<string, Entry> Ops => _ops;

    /// <summary>The milliseconds of every operation together.</summary>
    public double TotalMs => _ops.Values.Sum(e => e.Ms);

    internal void Add(string op, double ms, double flops)
    {
        var e = _ops.GetValueOrDefault(op, new Entry(0, 0, 0));
        _ops[op] = new Entry(e.Calls + 1, e.Ms + ms, e.Flops + flops);
    }
}
