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
public sealed class SftBatcher : JsonlBatcher
{
    /// <summary>
    /// Creates the batcher over a split of <paramref name="data"/> (an SFT dataset): <paramref name="batch"/>
    /// sequences of <see cref="JsonlDataset.Seq"/> tokens. A split with fewer examples than sequences in a batch is an
    /// <see cref="InvalidInputException"/> naming the file.
    /// </summary>
    public SftBatcher(JsonlDataset data, DatasetSplit split, int batch, ulong seed)
        : base(data, split, DatasetFormat.Sft, seed, 0x5346, batch, nameof(batch), "sequences", "examples", batch)
    {
        Batch = batch;
        _cache = Cache(data.ReadSft, ex => ex.Length, (long)batch * Seq);
    }

    /// <inheritdoc/>
    public override int Batch { get; }

    private readonly ExampleCache<SftExample> _cache;

    /// <inheritdoc/>
    public override ModelInputs Next()
    {
        var m = Inputs;
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
                Order.Advance();
                if (fill == seq) break;
            }
            m.Pad(b, fill, Pad);
        }
        return m;
    }

    private SftExample Current() => _cache.Get(First + Order.Current);
}
