using HftRuntime.Kernels;

namespace HftRuntime.Runtime;

/// <summary>
/// One batch as the model consumes it, on the host: token ids, the target of every position (already shifted:
/// position t predicts targets[t], or <see cref="Backend.IgnoreIndex"/>), the weight of each position's loss in the
/// objective, the RoPE position of each token and, for packed sequences, where each token's document starts.
/// All arrays are [batch · seq], row-major.
/// </summary>
public sealed class ModelInputs
{
    /// <summary>Creates inputs for <paramref name="batch"/> sequences of <paramref name="seq"/> tokens.</summary>
    public ModelInputs(int batch, int seq)
    {
        if (batch <= 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, "batch must be positive");
        if (seq <= 0) throw new ArgumentOutOfRangeException(nameof(seq), seq, "sequence length must be positive");
        Batch = batch; Seq = seq;
        int n = batch * seq;
        Ids = new int[n]; Targets = new int[n]; RowScale = new float[n]; Positions = new int[n]; DocStart = new int[n]; Segment = new int[n];
        for (int i = 0; i < n; i++) Positions[i] = i % seq;
    }

    /// <summary>Sequences.</summary>
    public int Batch { get; }

    /// <summary>Tokens per sequence.</summary>
    public int Seq { get; }

    /// <summary>Rows (batch · seq).</summary>
    public int Rows => Batch * Seq;

    /// <summary>Input token ids.</summary>
    public int[] Ids { get; }

    /// <summary>Shifted targets: the token position t must predict, or -100.</summary>
    public int[] Targets { get; }

    /// <summary>Weight of each position's cross-entropy in the objective (1 / number of counted positions for a mean).</summary>
    public float[] RowScale { get; }

    /// <summary>RoPE position of each token (its index within its document).</summary>
    public int[] Positions { get; }

    /// <summary>Index within the sequence where each token's document starts (0 everywhere when unpacked).</summary>
    public int[] DocStart { get; }

    /// <summary>
    /// Which example each position belongs to: an id unique within the batch, or −1 for padding. A DPO batch gives a
    /// pair's chosen and rejected positions the same id, so per-example sums of the row losses pair up.
    /// </summary>
    public int[] Segment { get; }

    /// <summary>
    /// Writes flat position <paramref name="p"/> of a packed batch: its token, target (or −100), RoPE position,
    /// document start and segment; the loss weight is 1 where a target is set, else 0.
    /// </summary>
    public void Set(int p, int id, int target, int position, int docStart, int segment)
    {
        Ids[p] = id;
        Targets[p] = target;
        RowScale[p] = target == Backend.IgnoreIndex ? 0f : 1f;
        Positions[p] = position;
        DocStart[p] = docStart;
        Segment[p] = segment;
    }

    /// <summary>
    /// Pads sequence <paramref name="row"/> from position <paramref name="fill"/> on: token <paramref name="padId"/>,
    /// no target, RoPE position 0, segment −1, and a document start at the position itself (a pad attends only to itself).
    /// </summary>
    public void Pad(int row, int fill, int padId)
    {
        for (int t = fill; t < Seq; t++) Set(row * Seq + t, padId, Backend.IgnoreIndex, 0, t, -1);
    }

    /// <summary>True when some sequence packs several documents.</summary>
    public bool IsPacked => Array.Exists(DocStart, d => d != 0);

    /// <summary>
    /// Builds the causal-LM inputs Hugging Face's convention implies: logits at t predict labels[t + 1]; positions
    /// whose shifted label is -100 carry no loss; the loss is the mean over the rest (each weighted 1/count).
    /// </summary>
    public static ModelInputs FromLabels(ReadOnlySpan<int> ids, ReadOnlySpan<int> labels, int batch, int seq)
    {
        var m = new ModelInputs(batch, seq);
        if (ids.Length != m.Rows || labels.Length != m.Rows)
            throw new ArgumentException($"expected {m.Rows} ids and labels for batch {batch} x seq {seq}, got {ids.Length} and {labels.Length}");
        ids.CopyTo(m.Ids);
        int count = 0;
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < seq; t++)
            {
                int target = t + 1 < seq ? labels[b * seq + t + 1] : Backend.IgnoreIndex;
                m.Targets[b * seq + t] = target;
                if (target != Backend.IgnoreIndex) count++;
            }
        float w = 1f / Math.Max(1, count);
        for (int i = 0; i < m.Rows; i++) m.RowScale[i] = m.Targets[i] == Backend.IgnoreIndex ? 0f : w;
        return m;
    }

    /// <summary>Counts positions that carry a loss.</summary>
    public int CountTargets() => Targets.Count(t => t != Backend.IgnoreIndex);
}
