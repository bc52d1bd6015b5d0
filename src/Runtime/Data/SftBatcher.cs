using HftRuntime.Kernels;

namespace HftRuntime.Runtime.Data;

/// <summary>
/// Supervised fine-tuning batches from a <see cref="JsonlDataset"/> of conversations (rendered by
/// <see cref="ChatTemplate"/>, truncated by <see cref="Truncation"/>). Examples are visited in an order shuffled per
/// epoch from (seed, epoch) (the held-out split keeps file order) and packed greedily: each sequence takes examples
/// in that order while the next one fits, the first that does not starts the next sequence (or the next batch), so a
/// position (epoch, index of the next example) determines everything that follows. Within a sequence every example
/// has DocStart = its first index (attention never crosses examples), Positions counting from 0 and a Segment id
/// unique in the batch; Targets[t] is the next token when that token is a response token of the same example
/// (assistant content or the EOS ending it), else −100, and RowScale is 1 exactly where a target is set. The rest of a
/// sequence is padding: Ids EOS (0 without one), Targets −100, RowScale 0, Segment −1, Positions 0 and DocStart the
/// position itself, so a pad token attends only to itself.
/// </summary>
public sealed class SftBatcher : IBatchSource
{
    private const long ShuffleStream = 0x5346;

    private readonly JsonlDataset _data;
    private readonly int _first;
    private readonly int _pad;
    private readonly ModelInputs _inputs;
    private readonly ExampleCache<SftExample> _cache;
    private readonly EpochOrder _order;

    /// <summary>
    /// Creates the batcher over a split of <paramref name="data"/> (an SFT dataset): <paramref name="batch"/>
    /// sequences of <see cref="JsonlDataset.Seq"/> tokens. A split with fewer examples than sequences in a batch is an
    /// <see cref="InvalidInputException"/> naming the file.
    /// </summary>
    public SftBatcher(JsonlDataset data, DatasetSplit split, int batch, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Format != DatasetFormat.Sft) throw new ArgumentException($"an sft batcher needs an sft dataset, {data.Path} is {DatasetFormats.Name(data.Format)}", nameof(data));
        if (batch <= 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, "batch must be positive");
        (_first, Examples) = data.Range(split);
        if (Examples < batch)
            throw new InvalidInputException(data.Path, $"too few {(split == DatasetSplit.Train ? "training" : "held-out")} examples for one batch: " +
                $"{Examples} examples, and a batch of {batch} sequences needs at least {batch}");
        _data = data;
        _order = new EpochOrder(Examples, seed, ShuffleStream, split == DatasetSplit.Train, "examples");
        Batch = batch; Seq = data.Seq;
        _pad = data.Tokenizer.EosId ?? 0;
        _inputs = new ModelInputs(batch, Seq);
        _cache = new ExampleCache<SftExample>(data.ReadSft, ex => ex.Length, Math.Max(1L << 20, 16L * batch * Seq));
    }

    /// <inheritdoc/>
    public int Batch { get; }

    /// <inheritdoc/>
    public int Seq { get; }

    /// <summary>Examples per epoch.</summary>
    public int Examples { get; }

    /// <inheritdoc/>
    public DataPosition Position
    {
        get => _order.Position;
        set => _order.Position = value;
    }

    /// <inheritdoc/>
    public ModelInputs Next()
    {
        var m = _inputs;
        int seq = Seq, segment = 0;
        for (int b = 0; b < Batch; b++)
        {
            int row = b * seq, fill = 0;
            while (true)
            {
                var ex = Current();
                if (fill + ex.Length > seq) break;
                var ids = ex.Ids;
                var loss = ex.Loss;
                int n = ex.Length;
                for (int i = 0; i < n; i++)
                    m.Set(row + fill + i, ids[i], i + 1 < n && loss[i + 1] ? ids[i + 1] : Backend.IgnoreIndex, i, fill, segment);
                segment++;
                fill += n;
                _order.Advance();
                if (fill == seq) break;
            }
            m.Pad(b, fill, _pad);
        }
        return m;
    }

    private SftExample Current() => _cache.Get(_first + _order.Current);
}
