using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Model.Training;

/// <summary>What <see cref="ModelEvaluation.Run"/> measured.</summary>
/// <param name="Loss">Mean cross-entropy over every counted position of the file.</param>
/// <param name="Tokens">Positions counted.</param>
/// <param name="Batches">Batches run.</param>
/// <param name="Data">The dataset's description (format, hash, counts).</param>
/// <param name="Answers">For SFT data with exact match asked for: every greedy answer next to its reference.</param>
public sealed record EvaluationResult(double Loss, long Tokens, int Batches, DatasetInfo Data, IReadOnlyList<AnswerSample> Answers)
{
    /// <summary>exp(loss).</summary>
    public double Perplexity => Math.Exp(Loss);

    /// <summary>Share of exact-match answers (null when none were asked for).</summary>
    public double? ExactMatch => Answers.Count == 0 ? null : Training.ExactMatch.Score(Answers);
}

/// <summary>Loss and perplexity of a model over a whole data file; exact match of greedy answers on SFT data.</summary>
public static class ModelEvaluation
{
    /// <summary>
    /// Runs <paramref name="model"/> over <paramref name="dataPath"/> (lm: text or {"text"} JSONL; sft: JSONL) once,
    /// each counted position exactly once (at most <paramref name="maxBatches"/> batches when positive), and answers
    /// the first <paramref name="exactMatchPrompts"/> SFT prompts greedily. <paramref name="objective"/> null: sft for
    /// JSONL whose examples are prompts or conversations, else lm.
    /// </summary>
    public static EvaluationResult Run(LlamaModel model, ITokenizer tokenizer, string dataPath, string? objective = null,
        int maxBatches = 0, int exactMatchPrompts = 0, bool skipBadLines = false)
    {
        if (maxBatches < 0 || exactMatchPrompts < 0) throw new ArgumentException("maxBatches and exactMatchPrompts must be >= 0");
        objective ??= Detect(dataPath, tokenizer, model.MaxSeq, skipBadLines);
        if (objective is not ("lm" or "sft")) throw new ArgumentException($"evaluation takes lm or sft data, not '{objective}'");
        using var data = Datasets.Open(dataPath, objective, tokenizer, model.MaxBatch, model.MaxSeq, seed: 1, heldOutFraction: 0, skipBadLines);
        var (sum, tokens, batches) = Evaluator.SumLoss(model, data.Train, maxBatches, wholeEpoch: true);
        var answers = objective == "sft" && exactMatchPrompts > 0
            ? Training.ExactMatch.Answer(model, tokenizer, data.Jsonl!.Prompts(DatasetSplit.Train, exactMatchPrompts))
            : [];
        return new EvaluationResult(sum / Math.Max(1, tokens), tokens, batches, data.Info, answers);
    }

    private static string Detect(string path, ITokenizer tokenizer, int seq, bool skipBadLines)
    {
        if (!Datasets.IsJsonl(path)) return "lm";
        using var d = JsonlDataset.Open(path, tokenizer, seq, format: null, heldOutFraction: 0, skipBadLines);
        return d.Format switch { DatasetFormat.Sft => "sft", DatasetFormat.Dpo => "dpo", _ => "lm" };
    }
}
