namespace HftRuntime.Model.Tokenizers;

/// <summary>Checks shared by the tokenizers.</summary>
internal static class TokenIds
{
    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first id outside [0, vocabSize).</summary>
    public static void CheckRange(ReadOnlySpan<int> ids, int vocabSize)
    {
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[i],
                    $"token id {ids[i]} at position {i} is outside the vocabulary [0, {vocabSize})");
        }
    }
}
