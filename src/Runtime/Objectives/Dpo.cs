using HftRuntime.Kernels;

namespace HftRuntime.Runtime.Objectives;

/// <summary>
/// Direct preference optimisation (Rafailov et al.): loss = −log σ(β · ((π_c − ρ_c) − (π_r − ρ_r))), mean over
/// pairs, where π and ρ are the policy's and the reference's log-probabilities of the chosen (c) and rejected (r)
/// responses, each the sum over response tokens of log p(token | prefix).
/// The chosen and rejected sequences of a batch of pairs run as one batch of 2·pairs sequences: chosen first.
/// </summary>
public static class Dpo
{
    /// <summary>
    /// Builds inputs for <paramref name="pairs"/> pairs from Hugging Face style labels (the token where it is part of
    /// the response, −100 elsewhere): rows [0, pairs) hold the chosen sequences, [pairs, 2·pairs) the rejected ones.
    /// Row weights are left at zero; <see cref="LossAndRowScale"/> fills them.
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
                m.Targets[s * seq + t] = t + 1 < seq ? labels[t + 1] : Backend.IgnoreIndex;
        }
        return m;
    }

    /// <summary>Per-sequence log-probabilities: −Σ of the per-position cross-entropies of each sequence.</summary>
    public static double[] SequenceLogProbs(ReadOnlySpan<float> rowLosses, int sequences, int seq)
    {
        var r = new double[sequences];
        for (int s = 0; s < sequences; s++)
        {
            double sum = 0;
            for (int t = 0; t < seq; t++) sum += rowLosses[s * seq + t];
            r[s] = -sum;
        }
        return r;
    }

    /// <summary>
    /// The DPO loss of a batch of pairs and the weight of every position's cross-entropy in its gradient:
    /// dL/dπ_c = −β σ(−z) / pairs and dL/dπ_r = +β σ(−z) / pairs with z the scaled margin, and since
    /// π = −Σ cross-entropy, a position of a chosen response gets weight β σ(−z) / pairs and one of a rejected response
    /// −β σ(−z) / pairs (positions outside responses: 0).
    /// </summary>
    /// <param name="policy">Policy log-probabilities, 2·pairs (chosen first).</param>
    /// <param name="reference">Reference log-probabilities, same layout.</param>
    /// <param name="beta">DPO's β.</param>
    /// <param name="inputs">The batch (its targets say which positions are response tokens); RowScale is overwritten.</param>
    /// <param name="rewardMargin">Mean of β · ((π_c − ρ_c) − (π_r − ρ_r)) over pairs.</param>
    public static double LossAndRowScale(ReadOnlySpan<double> policy, ReadOnlySpan<double> reference, double beta,
        ModelInputs inputs, out double rewardMargin)
    {
        int pairs = inputs.Batch / 2, seq = inputs.Seq;
        if (policy.Length != 2 * pairs || reference.Length != 2 * pairs)
            throw new ArgumentException($"expected {2 * pairs} log-probabilities for {pairs} pairs");
        double loss = 0, margin = 0;
        for (int p = 0; p < pairs; p++)
        {
            double z = beta * ((policy[p] - reference[p]) - (policy[pairs + p] - reference[pairs + p]));
            loss += LogOnePlusExp(-z);                     // −log σ(z)
            margin += z;
            double w = beta * Sigmoid(-z) / pairs;
            for (int t = 0; t < seq; t++)
            {
                int c = p * seq + t, r = (pairs + p) * seq + t;
                inputs.RowScale[c] = inputs.Targets[c] == Backend.IgnoreIndex ? 0f : (float)w;
                inputs.RowScale[r] = inputs.Targets[r] == Backend.IgnoreIndex ? 0f : (float)-w;
            }
        }
        rewardMargin = margin / pairs;
        return loss / pairs;
    }

    private static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));

    private static double LogOnePlusExp(double x) => x > 0 ? x + Math.Log(1 + Math.Exp(-x)) : Math.Log(1 + Math.Exp(x));
}
