namespace HftRuntime.Runtime.Data;

/// <summary>
/// What the SFT and DPO batchers share: a split of a <see cref="JsonlDataset"/> of one format, visited in an order
/// shuffled per epoch from (seed, epoch) (the held-out split keeps file order), its parsed examples cached, and one
/// reused <see cref="ModelInputs"/> padded with EOS (0 without one).
/// </summary>
public abstract class JsonlBatcher : IBatchSource
{
    /// <summary>The dataset's index of the split's first example.</summary>
    private protected int First { get; }

    /// <summary>The order of the examples (the one to place next: <see cref="First"/> + Order.Current; then Advance).</summary>
    private protected EpochOrder Order { get; }

    /// <summary>The batch <see cref="Next"/> fills and returns.</summary>
    private protected ModelInputs Inputs { get; }

    /// <summary>The token that pads a sequence.</summary>
    private protected int Pad { get; }

    /// <summary>
    /// Checks the dataset's format and the batch size (<paramref name="perBatch"/>, the constructor argument
    /// <paramref name="perBatchName"/>: at least one, and no more than the split holds, else an
    /// <see cref="InvalidInputException"/> naming the file; a batch counts <paramref name="batchUnit"/>, the data
    /// <paramref name="noun"/>), and sets up the order (<paramref name="seed"/>, <paramref name="shuffleStream"/>) and the
    /// inputs (<paramref name="rows"/> sequences).
    /// </summary>
    private protected JsonlBatcher(JsonlDataset data, DatasetSplit split, DatasetFormat format, ulong seed, long shuffleStream,
        int perBatch, string perBatchName, string batchUnit, string noun, int rows)
    {
        ArgumentNullException.ThrowIfNull(data);
        string name = DatasetFormats.Name(format);
        string a = "aefhilmnorsx".Contains(name[0], StringComparison.Ordinal) ? "an" : "a"; // "an sft", "a dpo": as the letters are read
        if (data.Format != format) throw new ArgumentException($"{a} {name} batcher needs {a} {name} dataset, {data.Path} is {DatasetFormats.Name(data.Format)}", nameof(data));
        if (perBatch <= 0) throw new ArgumentOutOfRangeException(perBatchName, perBatch, $"{perBatchName} must be positive");
        (First, Examples) = data.Range(split);
        if (Examples < perBatch)
            throw new InvalidInputException(data.Path, $"too few {(split == DatasetSplit.Train ? "training" : "held-out")} {noun} for one batch: " +
                $"{Examples} {noun}, and a batch of {perBatch} {batchUnit} needs at least {perBatch}");
        Order = new EpochOrder(Examples, seed, shuffleStream, split == DatasetSplit.Train, noun);
        Seq = data.Seq;
        Pad = data.Tokenizer.EosId ?? 0;
        Inputs = new ModelInputs(rows, Seq);
    }

    /// <inheritdoc/>
    public abstract int Batch { get; }

    /// <inheritdoc/>
    public int Seq { get; }

    /// <summary>Examples (or pairs) per epoch.</summary>
    public int Examples { get; }

    /// <inheritdoc/>
    public DataPosition Position
    {
        get => Order.Position;
        set => Order.Position = value;
    }

    /// <inheritdoc/>
    public abstract ModelInputs Next();

    /// <summary>A cache of parsed examples for a batch of <paramref name="tokensPerBatch"/> tokens (at least 1 Mi tokens).</summary>
    private protected static ExampleCache<T> Cache<T>(Func<int, T> read, Func<T, int> tokens, long tokensPerBatch) =>
        new(read, tokens, Math.Max(1L << 20, 16 * tokensPerBatch));
}
