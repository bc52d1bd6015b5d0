namespace HftRuntime.Runtime.Data;

/// <summary>Where the reader of a dataset stands: the epoch and the index of the next example in that epoch's order.</summary>
/// <param name="Epoch">Passes over the data completed.</param>
/// <param name="Index">Next example within the epoch's shuffled order.</param>
public readonly record struct DataPosition(long Epoch, long Index);

/// <summary>An endless, deterministic stream of training batches that can be positioned (for resuming).</summary>
public interface IBatchSource
{
    /// <summary>Sequences per batch.</summary>
    int Batch { get; }

    /// <summary>Tokens per sequence.</summary>
    int Seq { get; }

    /// <summary>
    /// The next batch. Positions that carry a loss have RowScale 1 and the rest 0; the objective normalises.
    /// The returned object is reused by the next call.
    /// </summary>
    ModelInputs Next();

    /// <summary>The position of the next batch (save it to resume; set it to continue from there).</summary>
    DataPosition Position { get; set; }
}
