using System.Text;

namespace HftRuntime.Runtime.Data;

/// <summary>Who speaks a turn of a conversation.</summary>
public enum ChatRole
{
    /// <summary>Instructions that frame the conversation.</summary>
    System,

    /// <summary>The user's turn (part of the prompt: no loss).</summary>
    User,

    /// <summary>The model's turn (the response: trained on).</summary>
    Assistant,
}

/// <summary>One turn of a conversation.</summary>
/// <param name="Role">Who speaks.</param>
/// <param name="Content">What is said.</param>
public readonly record struct ChatMessage(ChatRole Role, string Content);

/// <summary>
/// The one chat template of the runtime, used for SFT, DPO and the prompts of exact-match evaluation.
/// A conversation renders as
/// <code>
/// [BOS]&lt;|system|&gt;\n{system}\n&lt;|user|&gt;\n{user}\n&lt;|assistant|&gt;\n{assistant}[EOS]&lt;|user|&gt;\n{user}\n&lt;|assistant|&gt;\n{assistant}[EOS]
/// </code>
/// where <c>\n</c> is a newline, <c>[BOS]</c> and <c>[EOS]</c> are the tokenizer's special ids (left out when it has
/// none) and the markers <c>&lt;|system|&gt;</c>, <c>&lt;|user|&gt;</c>, <c>&lt;|assistant|&gt;</c> are plain text that
/// the tokenizer encodes like any other. Every turn is rendered in its order: a system or user turn as its header,
/// its content and a newline; an assistant turn as its header, its content and EOS. Turns after the last assistant
/// turn are left out (nothing would learn from them). A prompt/response pair is one user turn and one assistant
/// turn: <c>[BOS]&lt;|user|&gt;\n{prompt}\n&lt;|assistant|&gt;\n{response}[EOS]</c>.
/// The loss covers exactly the tokens of each assistant content and the EOS that ends it.
/// Text between two assistant contents is tokenised as one piece and each assistant content as one piece, so the
/// boundary between prompt and response is exact whatever the tokenizer merges.
/// </summary>
public static class ChatTemplate
{
    /// <summary>Header of a system turn.</summary>
    public const string SystemHeader = "<|system|>\n";

    /// <summary>Header of a user turn.</summary>
    public const string UserHeader = "<|user|>\n";

    /// <summary>Header of an assistant turn (the last text of every prompt).</summary>
    public const string AssistantHeader = "<|assistant|>\n";

    /// <summary>What follows the content of a system or user turn.</summary>
    public const string TurnEnd = "\n";

    /// <summary>The lowercase name of a role as it appears in data files ("system", "user", "assistant").</summary>
    public static string RoleName(ChatRole role) => role switch
    {
        ChatRole.System => "system",
        ChatRole.User => "user",
        ChatRole.Assistant => "assistant",
        _ => throw new ArgumentOutOfRangeException(nameof(role), role, "unknown chat role"),
    };

    /// <summary>
    /// The text of everything before the content of the last assistant turn, ending with
    /// <see cref="AssistantHeader"/>: the prompt a model answers. Earlier assistant contents appear without their EOS
    /// (it has no text; use <see cref="EncodePrompt"/> for the exact ids) and BOS is not part of the text.
    /// </summary>
    /// <exception cref="ArgumentException">The conversation has no assistant turn.</exception>
    public static string RenderPrompt(IReadOnlyList<ChatMessage> messages)
    {
        int last = LastAssistant(messages);
        var sb = new StringBuilder();
        for (int i = 0; i < last; i++) AppendTurn(sb, messages[i]);
        return sb.Append(AssistantHeader).ToString();
    }

    /// <summary>
    /// The ids of the prompt a model answers: BOS (when the tokenizer has one) and everything before the content of the
    /// last assistant turn, tokenised exactly as in training (earlier assistant turns end with EOS).
    /// </summary>
    /// <exception cref="ArgumentException">The conversation has no assistant turn.</exception>
    public static int[] EncodePrompt(IReadOnlyList<ChatMessage> messages, ITokenizer tokenizer)
    {
        int last = LastAssistant(messages);
        var ids = new List<int>();
        var loss = new List<bool>();
        Encode(messages, last, tokenizer, ids, loss);
        return ids.ToArray();
    }

    /// <summary>
    /// The ids a model continues to write the next assistant turn of <paramref name="conversation"/> (system and user
    /// turns, possibly earlier assistant turns): BOS, the rendered turns and the assistant header — exactly the
    /// prompt that training used for such a turn. <c>EncodeForReply([user "Define: whale"])</c> is the prompt of a
    /// prompt/response pair.
    /// </summary>
    public static int[] EncodeForReply(IReadOnlyList<ChatMessage> conversation, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(conversation);
        return EncodePrompt([.. conversation, new ChatMessage(ChatRole.Assistant, "")], tokenizer);
    }

    /// <summary>
    /// Tokenises a conversation as the template says and appends the ids to <paramref name="ids"/> and, for each id,
    /// whether it carries a loss (assistant content or the EOS that ends it) to <paramref name="loss"/>. BOS (when the
    /// tokenizer has one) comes first.
    /// </summary>
    /// <exception cref="ArgumentException">The conversation has no assistant turn.</exception>
    public static void Encode(IReadOnlyList<ChatMessage> messages, ITokenizer tokenizer, List<int> ids, List<bool> loss)
    {
        LastAssistant(messages);
        Encode(messages, messages.Count, tokenizer, ids, loss);
    }

    /// <summary>
    /// Encodes <paramref name="messages"/>[0, <paramref name="end"/>) (turns after the last assistant turn in that
    /// range are dropped; with end before an assistant turn the text ends with its header, the prompt of that turn).
    /// Returns the index of the first assistant message whose content produced no tokens, or -1.
    /// </summary>
    internal static int Encode(IReadOnlyList<ChatMessage> messages, int end, ITokenizer tokenizer, List<int> ids, List<bool> loss)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        int emptyTurn = -1;
        if (tokenizer.BosId is int bos) { ids.Add(bos); loss.Add(false); }
        int last = -1;
        for (int i = 0; i < end; i++) if (messages[i].Role == ChatRole.Assistant) last = i;
        bool promptOnly = end < messages.Count && messages[end].Role == ChatRole.Assistant;
        int stop = promptOnly ? end : last + 1;
        var pending = new StringBuilder();
        for (int i = 0; i < stop; i++)
        {
            var m = messages[i];
            if (m.Role != ChatRole.Assistant) { AppendTurn(pending, m); continue; }
            pending.Append(AssistantHeader);
            Flush(pending, tokenizer, ids, loss);
            int before = ids.Count;
            tokenizer.Encode(m.Content, ids);
            if (ids.Count == before && emptyTurn < 0) emptyTurn = i;
            if (tokenizer.EosId is int eos) ids.Add(eos);
            while (loss.Count < ids.Count) loss.Add(true);
        }
        if (promptOnly) pending.Append(AssistantHeader);
        Flush(pending, tokenizer, ids, loss);
        return emptyTurn;
    }

    private static void AppendTurn(StringBuilder sb, ChatMessage m)
    {
        switch (m.Role)
        {
            case ChatRole.System: sb.Append(SystemHeader).Append(m.Content).Append(TurnEnd); break;
            case ChatRole.User: sb.Append(UserHeader).Append(m.Content).Append(TurnEnd); break;
            default: sb.Append(AssistantHeader).Append(m.Content); break;
        }
    }

    private static void Flush(StringBuilder pending, ITokenizer tokenizer, List<int> ids, List<bool> loss)
    {
        if (pending.Length == 0) return;
        tokenizer.Encode(pending.ToString(), ids);
        while (loss.Count < ids.Count) loss.Add(false);
        pending.Clear();
    }

    private static int LastAssistant(IReadOnlyList<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        for (int i = messages.Count - 1; i >= 0; i--)
            if (messages[i].Role == ChatRole.Assistant) return i;
        throw new ArgumentException("the conversation has no assistant turn", nameof(messages));
    }
}
