namespace HftRuntime.Runtime.Data;

/// <summary>Turns text into token ids and back. Implementations live in HftRuntime.Model.Tokenizers.</summary>
public interface ITokenizer
{
    /// <summary>What kind of tokenizer this is ("bytes", "sentencepiece", ...), for run.json.</summary>
    string Kind { get; }

    /// <summary>Number of ids the tokenizer can produce (the model's vocabulary must be at least this large).</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, if the tokenizer has one.</summary>
    int? BosId { get; }

    /// <summary>End-of-sequence id, if the tokenizer has one.</summary>
    int? EosId { get; }

    /// <summary>Appends the ids of <paramref name="text"/> to <paramref name="output"/> (no BOS/EOS added).</summary>
    void Encode(string text, List<int> output);

    /// <summary>The text of <paramref name="ids"/> (special tokens are dropped).</summary>
    string Decode(ReadOnlySpan<int> ids);

    /// <summary>Writes the files that describe this tokenizer into a model directory.</summary>
    void Save(string directory);
}
