using System.Text.Json.Nodes;

namespace HftRuntime.Runtime.Data;

/// <summary>What run.json records about the training data.</summary>
/// <param name="Path">The data file.</param>
/// <param name="Format">"text", "lm", "sft" or "dpo".</param>
/// <param name="Sha256">SHA-256 of the file's bytes (hex).</param>
/// <param name="ExampleUnit">What the example counts count: "windows" (text), "documents" (lm), "examples" (sft), "pairs" (dpo).</param>
/// <param name="TrainExamples">Training examples.</param>
/// <param name="HeldOutExamples">Held-out examples.</param>
/// <param name="BadLinesSkipped">Bad lines skipped (with skipBadLines).</param>
/// <param name="Truncated">Examples cut to the sequence length (sft, dpo).</param>
/// <param name="SkippedTooLong">Examples skipped because truncation left them nothing to train (sft, dpo).</param>
/// <param name="TrainTokens">Training tokens (text, lm), null otherwise.</param>
/// <param name="HeldOutTokens">Held-out tokens (text, lm), null otherwise.</param>
public sealed record DatasetInfo(string Path, string Format, string Sha256, string ExampleUnit, long TrainExamples, long HeldOutExamples,
    long BadLinesSkipped, long Truncated, long SkippedTooLong, long? TrainTokens, long? HeldOutTokens)
{
    /// <summary>The info as a run.json object (snake_case keys).</summary>
    public JsonObject ToJson() => new()
    {
        ["path"] = Path,
        ["format"] = Format,
        ["sha256"] = Sha256,
        ["example_unit"] = ExampleUnit,
        ["train_examples"] = TrainExamples,
        ["held_out_examples"] = HeldOutExamples,
        ["bad_lines_skipped"] = BadLinesSkipped,
        ["truncated"] = Truncated,
        ["skipped_too_long"] = SkippedTooLong,
        ["train_tokens"] = TrainTokens,
        ["held_out_tokens"] = HeldOutTokens,
    };
}

/// <summary>An opened training data file: the batch sources of its two splits and what run.json records about it.</summary>
public sealed class TrainingData : IDisposable
{
    internal TrainingData(IBatchSource train, IBatchSource? heldOut, DatasetInfo info, JsonlDataset? jsonl)
    {
        Train = train; HeldOut = heldOut; Info = info; Jsonl = jsonl;
    }

    /// <summary>Training batches (shuffled per epoch).</summary>
    public IBatchSource Train { get; }

    /// <summary>Held-out batches (file order), or null when the held-out part cannot fill one batch.</summary>
    public IBatchSource? HeldOut { get; }

    /// <summary>Path, format, hash and counts for run.json.</summary>
    public DatasetInfo Info { get; }

    /// <summary>The JSON Lines dataset behind the batches, or null for a text file.</summary>
    public JsonlDataset? Jsonl { get; }

    /// <summary>
    /// SFT: up to <paramref name="max"/> held-out examples as (prompt rendered by <see cref="ChatTemplate"/>,
    /// reference answer, prompt ids) for exact-match evaluation; see <see cref="JsonlDataset.HeldOutPrompts"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The data is not SFT.</exception>
    public IReadOnlyList<HeldOutPrompt> HeldOutPrompts(int max) =>
        Jsonl?.HeldOutPrompts(max) ?? throw new InvalidOperationException($"held-out prompts need an sft dataset, this one is {Info.Format}");

    /// <summary>Closes the data file.</summary>
    public void Dispose() => Jsonl?.Dispose();
}

/// <summary>Opens training data for an objective.</summary>
public static class Datasets
{
    /// <summary>
    /// Opens <paramref name="path"/> for <paramref name="objective"/> ("lm", "sft" or "dpo"). For lm a file named
    /// *.jsonl or *.json is read as <c>{"text"}</c> JSON Lines (<see cref="DocumentLmBatcher"/>), anything else as
    /// plain text (<see cref="TokenCorpus"/>, <see cref="LmBatcher"/>); sft and dpo read JSON Lines
    /// (<see cref="SftBatcher"/>, <see cref="DpoBatcher"/>). <paramref name="batch"/> counts sequences (lm, sft) or
    /// pairs (dpo: the batches hold 2·batch sequences). The last <paramref name="heldOutFraction"/> of the examples
    /// (of the tokens for text) is held out; <paramref name="skipBadLines"/> skips and counts bad JSON Lines lines
    /// instead of failing. Bad data, or too little for one training batch, is an <see cref="InvalidInputException"/>.
    /// </summary>
    public static TrainingData Open(string path, string objective, ITokenizer tokenizer, int batch, int seq, ulong seed,
        double heldOutFraction, bool skipBadLines)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(objective);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (batch <= 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, "batch must be positive");
        if (seq <= 0) throw new ArgumentOutOfRangeException(nameof(seq), seq, "sequence length must be positive");
        DatasetFormat format = objective.ToLowerInvariant() switch
        {
            "lm" => IsJsonl(path) ? DatasetFormat.Lm : DatasetFormat.Text,
            "sft" => DatasetFormat.Sft,
            "dpo" => DatasetFormat.Dpo,
            _ => throw new ArgumentException($"unknown objective '{objective}' (expected lm, sft or dpo)", nameof(objective)),
        };
        if (format == DatasetFormat.Text) return OpenText(path, tokenizer, batch, seq, seed, heldOutFraction);

        var data = JsonlDataset.Open(path, tokenizer, seq, format, heldOutFraction, skipBadLines);
        try
        {
            IBatchSource train;
            IBatchSource? heldOut;
            string unit;
            switch (format)
            {
                case DatasetFormat.Lm:
                    train = new DocumentLmBatcher(data, DatasetSplit.Train, batch, seq, seed);
                    long heldTokens = data.TokenRange(DatasetSplit.HeldOut).Count;
                    heldOut = heldTokens > 0 && (heldTokens - 1) / seq >= batch ? new DocumentLmBatcher(data, DatasetSplit.HeldOut, batch, seq, seed) : null;
                    unit = "documents";
                    break;
                case DatasetFormat.Sft:
                    train = new SftBatcher(data, DatasetSplit.Train, batch, seed);
                    heldOut = data.HeldOutCount >= batch ? new SftBatcher(data, DatasetSplit.HeldOut, batch, seed) : null;
                    unit = "examples";
                    break;
                default:
                    train = new DpoBatcher(data, DatasetSplit.Train, batch, seed);
                    heldOut = data.HeldOutCount >= batch ? new DpoBatcher(data, DatasetSplit.HeldOut, batch, seed) : null;
                    unit = "pairs";
                    break;
            }
            bool lm = format == DatasetFormat.Lm;
            var info = new DatasetInfo(path, DatasetFormats.Name(format), data.Sha256, unit, data.TrainCount, data.HeldOutCount,
                data.BadLines, data.Truncated, data.SkippedTooLong, lm ? data.TrainTokens : null, lm ? data.HeldOutTokens : null);
            return new TrainingData(train, heldOut, info, data);
        }
        catch
        {
            data.Dispose();
            throw;
        }
    }

    /// <summary>True for a file named *.jsonl or *.json (read as JSON Lines by the lm objective).</summary>
    public static bool IsJsonl(string path)
    {
        string ext = System.IO.Path.GetExtension(path);
        return ext.Equals(".jsonl", StringComparison.OrdinalIgnoreCase) || ext.Equals(".json", StringComparison.OrdinalIgnoreCase);
    }

    private static TrainingData OpenText(string path, ITokenizer tokenizer, int batch, int seq, ulong seed, double heldOutFraction)
    {
        var corpus = TokenCorpus.FromTextFile(path, tokenizer, heldOutFraction);
        var train = new LmBatcher(corpus.Train, batch, seq, seed, path);
        int heldWindows = corpus.HeldOut.Length > 0 ? (corpus.HeldOut.Length - 1) / seq : 0;
        var heldOut = heldWindows >= batch ? new LmBatcher(corpus.HeldOut, batch, seq, seed, path, shuffle: false) : null;
        var info = new DatasetInfo(path, DatasetFormats.Name(DatasetFormat.Text), corpus.Sha256, "windows", train.Windows, heldWindows,
            0, 0, 0, corpus.Train.Length, corpus.HeldOut.Length);
        return new TrainingData(train, heldOut, info, null);
    }
}
