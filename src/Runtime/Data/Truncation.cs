namespace HftRuntime.Runtime.Data;

/// <summary>
/// How an example longer than a training sequence is cut. An example is a prompt (every token before its first
/// loss token: BOS, template headers, system and user turns) followed by a response (everything from the first loss
/// token on). When prompt + response ≤ seq nothing is cut. Otherwise the prompt keeps its last
/// <c>min(prompt, max(seq − response, seq / 2))</c> tokens (its beginning, BOS included, is dropped) and the response
/// keeps its first <c>seq − kept prompt</c> tokens (its end, EOS included, is dropped). So a short prompt is kept
/// whole, a short response is kept whole, and when both are long each gets half of the sequence. A DPO pair cuts its
/// shared prompt once, by the longer of its two responses, so that chosen and rejected see the same prompt.
/// An example left without a trained position (with seq ≥ 2 this cannot happen) is skipped and counted.
/// </summary>
public static class Truncation
{
    /// <summary>
    /// The tokens kept of a prompt of <paramref name="prompt"/> tokens and a response of <paramref name="response"/>
    /// tokens in a sequence of <paramref name="seq"/> tokens: the prompt's last PromptKeep tokens and the response's
    /// first ResponseKeep tokens.
    /// </summary>
    public static (int PromptKeep, int ResponseKeep) Keep(int prompt, int response, int seq)
    {
        if (prompt < 0 || response < 0) throw new ArgumentOutOfRangeException(nameof(prompt), $"lengths must not be negative, got {prompt} and {response}");
        if (seq <= 0) throw new ArgumentOutOfRangeException(nameof(seq), seq, "sequence length must be positive");
        if ((long)prompt + response <= seq) return (prompt, response);
        int p = Math.Min(prompt, Math.Max(seq - response, seq / 2));
        return (p, Math.Min(response, seq - p));
    }
}
