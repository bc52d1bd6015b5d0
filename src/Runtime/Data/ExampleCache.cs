namespace HftRuntime.Runtime.Data;

/// <summary>
/// Parsed examples of a JSONL file by index, kept while they hold fewer than a budget of tokens (then the cache
/// starts over): packing revisits the example that did not fit, and small files stay parsed across epochs.
/// </summary>
internal sealed class ExampleCache<T>
{
    private readonly Dictionary<int, T> _cache = new();
    private readonly Func<int, T> _read;
    private readonly Func<T, int> _tokens;
    private readonly long _budget;
    private long _cached;

    /// <summary>A cache reading with <paramref name="read"/>, counting each example's <paramref name="tokens"/> against <paramref name="budget"/>.</summary>
    public ExampleCache(Func<int, T> read, Func<T, int> tokens, long budget)
    {
        _read = read; _tokens = tokens; _budget = budget;
    }

    /// <summary>Example <paramref name="index"/>, read if it is not cached.</summary>
    public T Get(int index)
    {
        if (_cache.TryGetValue(index, out var ex)) return ex;
        ex = _read(index);
        int tokens = _tokens(ex);
        if (_cached + tokens > _budget) { _cache.Clear(); _cached = 0; }
        _cache[index] = ex;
        _cached += tokens;
        return ex;
    }
}
