namespace HftRuntime.Runtime.Data;

/// <summary>
/// Causal-LM batches from a token stream: the stream is cut into windows of seq + 1 tokens (stride seq); a window
/// gives seq inputs and the seq next tokens as targets. Windows are visited in a shuffled order that depends only on
/// (seed, epoch), so a position (epoch, index) determines everything that follows.
/// </summary>
public sealed class LmBatcher : IBatchSource
{
    private readonly int[] _tokens;
    private readonly ModelInputs _inputs;
    private readonly EpochOrder _order;

    /// <summary>Creates the batcher; <paramref name="source"/> names the data in errors.</summary>
    public LmBatcher(int[] tokens, int batch, int seq, ulong seed, string source, bool shuffle = true)
    {
        if (batch <= 0 || seq <= 0) throw new ArgumentOutOfRangeException(nameof(batch), $"batch and seq must be positive, got {batch} x {seq}");
        _tokens = tokens;
        Batch = batch; Seq = seq;
        Windows = tokens.Length > 0 ? (tokens.Length - 1) / seq : 0;
        if (Windows < batch)
            throw new InvalidInputException(source,
                $"too short for one batch: {tokens.Length} tokens give {Windows} windows of {seq + 1} tokens, and a batch needs {batch}");
        _inputs = new ModelInputs(batch, seq);
        _order = new EpochOrder(Windows, seed, 0x4C4D, shuffle, "windows");
    }

    /// <inheritdoc/>
    public int Batch { get; }

    /// <inheritdoc/>
    public int Seq { get; }

    /// <summary>Windows per epoch.</summary>
    public int Windows { get; }

    /// <inheritdoc/>
    public DataPosition Position
    {
        get => _order.Position;
        set => _order.Position = value;
    }

    /// <inheritdoc/>
    public ModelInputs Next()
    {
        for (int b = 0; b < Batch; b++)
        {
            int start = _order.Current * Seq;
            for (int t = 0; t < Seq; t++)
            {
                int r = b * Seq + t;
                _inputs.Ids[r] = _tokens[start + t];
                _inputs.Targets[r] = _tokens[start + t + 1];
                _inputs.RowScale[r] = 1f;
            }
            _order.Advance();
        }
        return _inputs;
    }

}
