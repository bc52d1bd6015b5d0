namespace HftRuntime.Runtime.Data;

/// <summary>The kind of a training data file.</summary>
public enum DatasetFormat
{
    /// <summary>Plain UTF-8 text (<see cref="TokenCorpus"/>).</summary>
    Text,

    /// <summary>JSON Lines of documents: <c>{"text": "..."}</c>.</summary>
    Lm,

    /// <summary>
    /// JSON Lines of conversations: <c>{"prompt": "...", "response": "..."}</c> or
    /// <c>{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}</c>.
    /// </summary>
    Sft,

    /// <summary>JSON Lines of preference pairs: <c>{"prompt": "...", "chosen": "...", "rejected": "..."}</c>.</summary>
    Dpo,
}

/// <summary>Which part of a dataset a batcher reads.</summary>
public enum DatasetSplit
{
    /// <summary>The training examples (shuffled per epoch).</summary>
    Train,

    /// <summary>The held-out tail of the file (in file order, never shuffled).</summary>
    HeldOut,
}

/// <summary>Names of <see cref="DatasetFormat"/> values as run.json and the command line write them.</summary>
public static class DatasetFormats
{
    /// <summary>"text", "lm", "sft" or "dpo".</summary>
    public static string Name(DatasetFormat format) => format switch
    {
        DatasetFormat.Text => "text",
        DatasetFormat.Lm => "lm",
        DatasetFormat.Sft => "sft",
        DatasetFormat.Dpo => "dpo",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown dataset format"),
    };
}

/// <summary>A held-out SFT example as exact-match evaluation uses it.</summary>
/// <param name="Prompt">
/// The prompt rendered by <see cref="ChatTemplate.RenderPrompt"/> (everything before the last assistant content,
/// ending with the assistant header; no BOS).
/// </param>
/// <param name="Answer">The reference answer: the content of the last assistant turn.</param>
/// <param name="PromptIds">The prompt's ids exactly as training tokenises them (BOS first; not truncated).</param>
public readonly record struct HeldOutPrompt(string Prompt, string Answer, int[] PromptIds);
