using HftRuntime.Runtime.Data;

namespace HftRuntime.Model.Training;

/// <summary>One greedy answer next to its reference.</summary>
/// <param name="Prompt">The rendered prompt.</param>
/// <param name="Reference">The reference answer.</param>
/// <param name="Answer">The model's greedy answer.</param>
public sealed record AnswerSample(string Prompt, string Reference, string Answer)
{
    /// <summary>Whether the answer equals the reference (leading and trailing whitespace ignored).</summary>
    public bool Match => Answer.Trim() == Reference.Trim();
}

/// <summary>Exact match of greedy answers: generate for each prompt, compare with the reference answer.</summary>
public static class ExactMatch
{
    /// <summary>
    /// Greedy answers (KV cache, stop at EOS, at most the reference's token count plus 8 new tokens) for
    /// <paramref name="prompts"/>; returns every sample. The score is the share of samples that match.
    /// </summary>
    public static IReadOnlyList<AnswerSample> Answer(LlamaModel model, ITokenizer tokenizer, IReadOnlyList<HeldOutPrompt> prompts, int batch = 8)
    {
        var samples = new List<AnswerSample>(prompts.Count);
        if (prompts.Count == 0) return samples;
        int limit = model.Config.MaxPositionEmbeddings;
        var reference = new List<int>();
        int longest = 0, maxNew = 1;
        foreach (var p in prompts)
        {
            reference.Clear();
            tokenizer.Encode(p.Answer, reference);
            maxNew = Math.Max(maxNew, reference.Count + 8);
            longest = Math.Max(longest, p.PromptIds.Length);
        }
        int maxLength = Math.Min(limit, longest + maxNew);
        if (longest >= maxLength)
            throw new ArgumentException($"a prompt of {longest} tokens leaves no room for an answer within max_position_embeddings = {limit}");
        using var generator = new LlamaGenerator(model, Math.Min(batch, prompts.Count), maxLength);
        for (int s = 0; s < prompts.Count; s += batch)
        {
            var chunk = prompts.Skip(s).Take(batch).ToList();
            var outputs = generator.Generate(chunk.Select(p => p.PromptIds).ToList(), GenerationOptions.Greedy(maxNew, StopTokens.Of(tokenizer)));
            for (int i = 0; i < chunk.Count; i++)
                samples.Add(new AnswerSample(chunk[i].Prompt, chunk[i].Answer, tokenizer.Decode(outputs[i])));
        }
        return samples;
    }

    /// <summary>The share of matching samples (0 when there are none).</summary>
    public static double Score(IReadOnlyList<AnswerSample> samples) => samples.Count == 0 ? 0 : (double)samples.Count(s => s.Match) / samples.Count;
}
