using HftRuntime.Kernels;

namespace HftRuntime.Runtime.Data;

/// <summary>
/// DPO batches from a <see cref="JsonlDataset"/> of preference pairs. A batch of <see cref="Pairs"/> rows per side is a
/// <see cref="ModelInputs"/> of 2·pairs sequences: row r &lt; pairs holds chosen sequences and row pairs + r the
/// rejected sequences of the same pairs in the same order. Each sequence is the pair's shared prompt (rendered by
/// <see cref="ChatTemplate"/> as one user turn) followed by that response and EOS, truncated by
/// <see cref="Truncation"/>. Pairs are visited in an order shuffled per epoch from (seed, epoch) (the held-out split
/// keeps file order) and packed greedily: rows r and pairs + r take pairs while both the chosen and the rejected
/// sequence still fit; the first pair that does not starts the next row pair (or the next batch). A pair's chosen and
/// rejected positions carry the same Segment id, unique in the batch; DocStart, Positions and padding are as in
/// <see cref="SftBatcher"/>; Targets are set only where the next token belongs to the sequence's own response, and
/// RowScale is 1 there (the DPO objective overwrites it).
/// </summary>
public sealed class DpoBatcher : JsonlBatcher
{
    /// <summary>
    /// Creates the batcher over a split of <paramref name="data"/> (a DPO dataset): <paramref name="pairs"/> rows of
    /// chosen and as many of rejected sequences of <see cref="JsonlDataset.Seq"/> tokens. A split with fewer pairs than
    /// <paramref name="pairs"/> is an <see cref="InvalidInputException"/> naming the file.
    /// </summary>
    public DpoBatcher(JsonlDataset data, DatasetSplit split, int pairs, ulong seed)
        : base(data, split, DatasetFormat.Dpo, seed, 0x4450, pairs, nameof(pairs), "pairs", "pairs", 2 * pairs)
    {
        Pairs = pairs;
        _cache = Cache(data.ReadDpo, ex => ex.ChosenLength + ex.RejectedLength, 2L * pairs * Seq);
    }

    /// <summary>Rows per side: the batch holds 2·Pairs sequences.</summary>
    public int Pairs { get; }

    /// <summary>Sequences per batch: 2·<see cref="Pairs"/>.</summary>
    public override int Batch => 2 * Pairs;

    private readonly ExampleCache<DpoExample> _cache;

    /// <inheritdoc/>
    public override ModelInputs Next()
    {
        int seq = Seq, segment = 0;
        for (int r = 0; r < Pairs; r++)
        {
            int chosenRow = r * seq, rejectedRow = (Pairs + r) * seq, fillC = 0, fillR = 0;
            while (true)
            {
                var ex = Current();
                if (fillC + ex.ChosenLength > seq || fillR + ex.RejectedLength > seq) break;
                Place(chosenRow, fillC, ex.Prompt, ex.Chosen, segment);
                Place(rejectedRow, fillR, ex.Prompt, ex.Rejected, segment);
                fillC += ex.ChosenLength;
                fillR += ex.RejectedLength;
                segment++;
                Order.Advance();
                if (fillC == seq || fillR == seq) break;
            }
            Inputs.Pad(r, fillC, Pad);
            Inputs.Pad(Pairs + r, fillR, Pad);
        }
        return Inputs;
    }

    private void Place(int row, int offset, int[] prompt, int[] response, int segment)
    {
        var m = Inputs;
        int np = prompt.Length, n = np + response.Length;
        for (int i = 0; i < n; i++)
            m.Set(row + offset + i, i < np ? prompt[i] : response[i - np], i + 1 < n && i + 1 >= np ? response[i + 1 - np] : Backend.IgnoreIndex,
                i, offset, segment);
    }

    private DpoExample Current() => _cache.Get(First + Order.Current);
}
