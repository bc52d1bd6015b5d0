using HftRuntime.Kernels;

namespace HftRuntime.Runtime.Data;

/// <summary>
/// Causal-LM batches from a JSON Lines dataset of documents (<c>{"text": ...}</c>). Each document is BOS, its tokens
/// and EOS (when the tokenizer has them); the documents of a split, in file order, form one stream cut into windows of
/// seq + 1 tokens (stride seq) exactly as <see cref="LmBatcher"/> cuts a text file, visited in an order shuffled per
/// epoch from (seed, epoch) (the held-out split keeps file order). Unlike <see cref="LmBatcher"/>, a window knows its
/// document boundaries: a token never attends across one (DocStart is where its document starts within the window,
/// or 0 when the document began in an earlier window), Positions count from there, Segment numbers the documents of a
/// batch, and a position whose next token starts another document has no target (−100): the last token of a
/// document, its EOS, predicts nothing, and the next document starts fresh from its own BOS.
/// </summary>
public sealed class DocumentLmBatcher : IBatchSource
{
    private const long ShuffleStream = 0x4C4D;

    private readonly JsonlDataset _data;
    private readonly long _first;
    private readonly ModelInputs _inputs;
    private readonly int[] _window;
    private readonly EpochOrder _order;

    /// <summary>
    /// Creates the batcher over a split of <paramref name="data"/> (an LM dataset): <paramref name="batch"/> windows of
    /// <paramref name="seq"/> tokens. A split too short for one batch is an <see cref="InvalidInputException"/>
    /// naming the file.
    /// </summary>
    public DocumentLmBatcher(JsonlDataset data, DatasetSplit split, int batch, int seq, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Format != DatasetFormat.Lm) throw new ArgumentException($"a document batcher needs an lm dataset, {data.Path} is {DatasetFormats.Name(data.Format)}", nameof(data));
        if (batch <= 0 || seq <= 0) throw new ArgumentOutOfRangeException(nameof(batch), $"batch and seq must be positive, got {batch} x {seq}");
        var (first, tokens) = data.TokenRange(split);
        long windows = tokens > 0 ? (tokens - 1) / seq : 0;
        if (windows < batch)
            throw new InvalidInputException(data.Path, $"too short for one batch: the {(split == DatasetSplit.Train ? "training" : "held-out")} documents hold " +
                $"{tokens} tokens, which give {windows} windows of {seq + 1} tokens, and a batch needs {batch}");
        if (windows > int.MaxValue) throw new InvalidInputException(data.Path, $"too large: {windows} windows of {seq + 1} tokens");
        _data = data; _first = first;
        _order = new EpochOrder((int)windows, seed, ShuffleStream, split == DatasetSplit.Train, "windows");
        Batch = batch; Seq = seq; Windows = (int)windows;
        _inputs = new ModelInputs(batch, seq);
        _window = new int[seq + 1];
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
        var m = _inputs;
        int seq = Seq, segment = 0;
        var w = _window;
        for (int b = 0; b < Batch; b++)
        {
            _data.ReadTokens(_first + (long)_order.Current * seq, w);
            int docStart = 0;
            for (int t = 0; t < seq; t++)
            {
                int p = b * seq + t;
                int raw = w[t];
                if (t > 0 && raw < 0) { docStart = t; segment++; }
                int next = w[t + 1];
                int target = next < 0 ? Backend.IgnoreIndex : next;
                m.Set(p, raw & ~TokenStreamFile.DocStartFlag, target, t - docStart, docStart, segment);
            }
            segment++;
            _order.Advance();
        }
        return m;
    }

}
