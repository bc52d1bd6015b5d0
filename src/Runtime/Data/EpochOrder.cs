namespace HftRuntime.Runtime.Data;

/// <summary>
/// The order in which a batcher visits its items (windows, examples, pairs) and where it stands. Each epoch visits
/// every item once, in an order shuffled from (seed, stream, epoch) — or in file order for held-out data — so a
/// <see cref="DataPosition"/> determines everything that follows.
/// </summary>
internal sealed class EpochOrder
{
    private readonly ulong _seed;
    private readonly long _stream;
    private readonly bool _shuffle;
    private readonly string _unit;
    private readonly int[] _order;
    private long _orderEpoch = -1;
    private DataPosition _position;

    /// <summary>An order over <paramref name="count"/> items; <paramref name="unit"/> names them in errors ("windows").</summary>
    public EpochOrder(int count, ulong seed, long stream, bool shuffle, string unit)
    {
        _order = new int[count];
        _seed = seed; _stream = stream; _shuffle = shuffle; _unit = unit;
    }

    /// <summary>Items per epoch.</summary>
    public int Count => _order.Length;

    /// <summary>The position of the next item (checked when set).</summary>
    public DataPosition Position
    {
        get => _position;
        set
        {
            if (value.Epoch < 0 || value.Index < 0 || value.Index >= Count)
                throw new ArgumentOutOfRangeException(nameof(value), value, $"position outside the data ({Count} {_unit} per epoch)");
            _position = value;
        }
    }

    /// <summary>The item at the current position.</summary>
    public int Current
    {
        get
        {
            if (_orderEpoch != _position.Epoch) Reorder(_position.Epoch);
            return _order[_position.Index];
        }
    }

    /// <summary>Moves to the next item (the first of the next epoch after the last).</summary>
    public void Advance() =>
        _position = _position.Index + 1 < Count ? _position with { Index = _position.Index + 1 } : new DataPosition(_position.Epoch + 1, 0);

    private void Reorder(long epoch)
    {
        for (int i = 0; i < _order.Length; i++) _order[i] = i;
        if (_shuffle) new Rng(Rng.Derive(_seed, _stream, epoch)).Shuffle<int>(_order);
        _orderEpoch = epoch;
    }
}
