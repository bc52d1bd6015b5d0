using HftRuntime.Kernels;

namespace HftRuntime.Runtime.Objectives;

/// <summary>Summed log-probabilities of the chosen and rejected responses of the pairs in one batch.</summary>
/// <param name="Chosen">Chosen log-probability per pair (pairs in order of first appearance).</param>
/// <param name="Rejected">Rejected log-probability per pair, same order.</param>
/// <param name="Ids">The pairs' segment ids, same order.</param>
public sealed record PairLogProbs(double[] Chosen, double[] Rejected, int[] Ids)
{
    /// <summary>Number of pairs.</summary>
    public int Count => Ids.Length;
}

/// <summary>The DPO loss and statistics of some pairs.</summary>
/// <param name="Loss">Σ over pairs of −log σ(z), divided by the normaliser.</param>
/// <param name="MarginSum">Σ over pairs of z = β · ((π_c − ρ_c) − (π_r − ρ_r)) (the reward margin).</param>
/// <param name="Correct">Pairs with z &gt; 0.</param>
/// <param name="Pairs">Pairs counted.</param>
public readonly record struct DpoStats(double Loss, double MarginSum, int Correct, int Pairs);

/// <summary>
/// Direct preference optimisation (Rafailov et al.): loss = −log σ(β · ((π_c − ρ_c) − (π_r − ρ_r))), mean over
/// pairs, where π and ρ are the policy's and the reference's log-probabilities of the chosen (c) and rejected (r)
/// responses, each the sum over response tokens of log p(token | prefix). A batch of pairs is a ModelInputs whose
/// first half of rows holds chosen sequences and second half rejected ones; <see cref="ModelInputs.Segment"/> gives
/// each position's pair (the same id on its chosen and rejected positions), so several pairs can share a row.
/// </summary>
public static class Dpo
{
    /// <summary>
    /// Builds inputs for <paramref name="pairs"/> unpacked pairs from Hugging Face style labels (the token where it is
    /// part of the response, −100 elsewhere): rows [0, pairs) hold the chosen sequences, [pairs, 2·pairs) the rejected
    /// ones; pair p has segment id p.
    /// </summary>
    public static ModelInputs BuildInputs(ReadOnlySpan<int> chosenIds, ReadOnlySpan<int> chosenLabels,
        ReadOnlySpan<int> rejectedIds, ReadOnlySpan<int> rejectedLabels, int pairs, int seq)
    {
        int n = pairs * seq;
        if (chosenIds.Length != n || chosenLabels.Length != n || rejectedIds.Length != n || rejectedLabels.Length != n)
            throw new ArgumentException($"expected {n} chosen and rejected ids and labels for {pairs} pairs x {seq} tokens");
        var m = new ModelInputs(2 * pairs, seq);
        chosenIds.CopyTo(m.Ids);
        rejectedIds.CopyTo(m.Ids.AsSpan(n));
        for (int s = 0; s < 2 * pairs; s++)
        {
            var labels = s < pairs ? chosenLabels.Slice(s * seq, seq) : rejectedLabels.Slice((s - pairs) * seq, seq);
            for (int t = 0; t < seq; t++)
            {
                m.Targets[s * seq + t] = t + 1 < seq ? labels[t + 1] : Backend.IgnoreIndex;
                m.Segment[s * seq + t] = s % pairs;
            }
        }
        return m;
    }

    /// <summary>Distinct pairs (segment ids ≥ 0 on positions with a target) in a batch.</summary>
    public static int CountPairs(ModelInputs inputs)
    {
        var ids = new HashSet<int>();
        for (int i = 0; i < inputs.Rows; i++)
            if (inputs.Targets[i] != Backend.IgnoreIndex && inputs.Segment[i] >= 0) ids.Add(inputs.Segment[i]);
        return ids.Count;
    }

    /// <summary>
    /// Per-pair log-probabilities: −Σ of the per-position cross-entropies over each pair's chosen positions (rows in
    /// the first half of the batch) and rejected positions (second half). A pair without tokens on either side is an
    /// error in the batch.
    /// </summary>
    public static PairLogProbs PairLogProbs(ReadOnlySpan<float> rowLosses, ModelInputs inputs)
    {
        var index = new Dictionary<int, int>();
        var chosen = new List<double>();
        var rejected = new List<double>();
        var seen = new List<int>();
        int half = inputs.Rows / 2;
        for (int i = 0; i < inputs.Rows; i++)
        {
            int seg = inputs.Segment[i];
            if (inputs.Targets[i] == Backend.IgnoreIndex || seg < 0) continue;
            if (!index.TryGetValue(seg, out int k))
            {
                k = index[seg] = chosen.Count;
                chosen.Add(0); rejected.Add(0); seen.Add(0);
            }
            if (i < half) { chosen[k] -= rowLosses[i]; seen[k] |= 1; }
            else { rejected[k] -= rowLosses[i]; seen[k] |= 2; }
        }
        for (int k = 0; k < seen.Count; k++)
            if (seen[k] != 3)
                throw new InvalidOperationException($"pair {index.First(kv => kv.Value == k).Key} has no {(seen[k] == 1 ? "rejected" : "chosen")} tokens in this batch");
        return new PairLogProbs(chosen.ToArray(), rejected.ToArray(), index.OrderBy(kv => kv.Value).Select(kv => kv.Key).ToArray());
    }

    /// <summary>
    /// The DPO loss of a batch and the weight of every position's cross-entropy in its gradient: with z the scaled
    /// margin, dL/dπ_c = −β σ(−z) / n and dL/dπ_r = +β σ(−z) / n (n = <paramref name="normalizer"/>, the pairs of the
    /// whole accumulation window); since π = −Σ cross-entropy, a chosen response position gets weight β σ(−z) / n and
    /// a rejected one −β σ(−z) / n (others 0). Overwrites <c>inputs.RowScale</c>.
    /// </summary>
    public static DpoStats LossAndRowScale(PairLogProbs policy, PairLogProbs reference, double beta, ModelInputs inputs, int normalizer)
    {
        if (policy.Count != reference.Count || !policy.Ids.AsSpan().SequenceEqual(reference.Ids))
            throw new ArgumentException("policy and reference log-probabilities describe different pairs");
        double loss = 0, margin = 0;
        int correct = 0;
        var weight = new Dictionary<int, double>();
        for (int k = 0; k < policy.Count; k++)
        {
            double z = beta * ((policy.Chosen[k] - reference.Chosen[k]) - (policy.Rejected[k] - reference.Rejected[k]));
            loss += LogOnePlusExp(-z);
            margin += z;
            if (z > 0) correct++;
            weight[policy.Ids[k]] = beta * Sigmoid(-z) / normalizer;
        }
        int half = inputs.Rows / 2;
        for (int i = 0; i < inputs.Rows; i++)
        {
            int seg = inputs.Segment[i];
            inputs.RowScale[i] = inputs.Targets[i] == Backend.IgnoreIndex || seg < 0 ? 0f
                : (float)(i < half ? weight[seg] : -weight[seg]);
        }
        return new DpoStats(loss / normalizer, margin, correct, policy.Count);
    }

    private static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));

    private static double LogOnePlusExp(double x) => x > 0 ? x + Math.Log(1 + Math.Exp(-x)) : Math.Log(1 + Math.Exp(x));
}
