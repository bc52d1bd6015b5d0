using System.Text.Json.Nodes;
using HftRuntime.Runtime.Data;

namespace HftRuntime.Model.Training;

/// <summary>The training and held-out batches of a run, and what run.json records about the data.</summary>
internal sealed class TrainingData
{
    private TrainingData(IBatchSource train, IBatchSource? heldOut, string sha256, JsonObject info, int rowsPerBatch)
    {
        Train = train; HeldOut = heldOut; Sha256 = sha256; Info = info; RowsPerBatch = rowsPerBatch;
    }

    public IBatchSource Train { get; }

    public IBatchSource? HeldOut { get; }

    public string Sha256 { get; }

    public JsonObject Info { get; }

    /// <summary>Sequences per batch the model must hold (DPO: chosen and rejected rows).</summary>
    public int RowsPerBatch { get; }

    public static TrainingData Open(FineTuneRequest r, ITokenizer tokenizer)
    {
        var o = r.Options;
        if (r.Objective == "lm" && !r.DataPath.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
        {
            var corpus = TokenCorpus.FromTextFile(r.DataPath, tokenizer, r.HeldOutFraction);
            var train = new LmBatcher(corpus.Train, o.Batch, o.Seq, o.Seed, r.DataPath);
            LmBatcher? eval = corpus.HeldOut.Length > o.Batch * o.Seq
                ? new LmBatcher(corpus.HeldOut, o.Batch, o.Seq, o.Seed, r.DataPath + " (held-out part)", shuffle: false)
                : null;
            var info = new JsonObject
            {
                ["path"] = Path.GetFullPath(r.DataPath), ["format"] = "text", ["sha256"] = corpus.Sha256,
                ["tokens_train"] = corpus.Train.Length, ["tokens_held_out"] = corpus.HeldOut.Length,
            };
            return new TrainingData(train, eval, corpus.Sha256, info, o.Batch);
        }
        throw new ArgumentException($"objective '{r.Objective}' with {Path.GetFileName(r.DataPath)} needs the JSONL readers");
    }
}
