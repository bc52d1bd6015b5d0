using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using HftRuntime.Runtime;

namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// The normalizer and pre-tokenizer of a Hugging Face <c>tokenizer.json</c>, for byte-level BPE: the text is cut
/// into pieces by each step in turn, and every piece is then spelt in the byte-level alphabet (<see cref="ByteLevel"/>).
/// Steps understood: <c>ByteLevel</c> (add_prefix_space, use_regex with GPT-2's pattern), <c>Split</c> (a Regex or
/// String pattern, behavior Isolated or Removed, not inverted), <c>Digits</c> (individual_digits or runs) and
/// <c>Sequence</c> of these; normalizers: none, NFC, NFD, NFKC, NFKD and <c>Sequence</c> of these. Anything else is an
/// <see cref="InvalidInputException"/> naming the file and the type, never a silent approximation.
/// </summary>
internal sealed class HfPreTokenizer
{
    /// <summary>GPT-2's pre-tokenization pattern (the ByteLevel pre-tokenizer's use_regex).</summary>
    internal const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly List<Func<string, IEnumerable<string>>> _steps = [];
    private readonly List<NormalizationForm> _forms = [];
    private readonly string _path;

    /// <summary>Whether a ByteLevel step is present (the vocabulary is then spelt in the byte-level alphabet).</summary>
    public bool IsByteLevel { get; private set; }

    /// <summary>Reads the "normalizer" and "pre_tokenizer" of a tokenizer.json at <paramref name="path"/>.</summary>
    public HfPreTokenizer(JsonElement root, string path)
    {
        _path = path;
        if (root.TryGetProperty("normalizer", out var n) && n.ValueKind != JsonValueKind.Null) AddNormalizer(n, path);
        if (root.TryGetProperty("pre_tokenizer", out var p) && p.ValueKind != JsonValueKind.Null) AddStep(p, path);
    }

    /// <summary>The pieces of <paramref name="text"/>, normalized, in order (not yet in the byte-level alphabet).</summary>
    public List<string> Split(string text)
    {
        foreach (var f in _forms) text = text.Normalize(f);
        var pieces = new List<string> { text };
        try
        {
            foreach (var step in _steps)
            {
                var next = new List<string>(pieces.Count * 2);
                foreach (var piece in pieces)
                    foreach (var s in step(piece))
                        if (s.Length > 0) next.Add(s);
                pieces = next;
            }
        }
        catch (RegexMatchTimeoutException e)
        {
            throw new InvalidInputException(_path, $"a pre-tokenizer pattern ran over its {e.MatchTimeout.TotalSeconds:0} s limit on a piece of text " +
                "(a pattern that backtracks without end?)", e);
        }
        return pieces;
    }

    private void AddNormalizer(JsonElement n, string path)
    {
        string type = TypeOf(n, "normalizer", path);
        switch (type)
        {
            case "NFC": _forms.Add(NormalizationForm.FormC); break;
            case "NFD": _forms.Add(NormalizationForm.FormD); break;
            case "NFKC": _forms.Add(NormalizationForm.FormKC); break;
            case "NFKD": _forms.Add(NormalizationForm.FormKD); break;
            case "Sequence":
                foreach (var s in Array(n, "normalizers", path)) AddNormalizer(s, path);
                break;
            default:
                throw new InvalidInputException(path, $"normalizer \"{type}\" is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)");
        }
    }

    private void AddStep(JsonElement p, string path)
    {
        string type = TypeOf(p, "pre_tokenizer", path);
        switch (type)
        {
            case "Sequence":
                foreach (var s in Array(p, "pretokenizers", path)) AddStep(s, path);
                break;
            case "ByteLevel":
            {
                IsByteLevel = true;
                bool prefix = Bool(p, "add_prefix_space", false);
                var regex = Bool(p, "use_regex", true) ? Compile(Gpt2Pattern) : null;
                _steps.Add(piece =>
                {
                    if (prefix && !piece.StartsWith(' ')) piece = " " + piece;
                    return regex is null ? [piece] : Isolate(regex, piece);
                });
                break;
            }
            case "Digits":
            {
                var regex = Compile(Bool(p, "individual_digits", false) ? @"\p{N}" : @"\p{N}+");
                _steps.Add(piece => Isolate(regex, piece));
                break;
            }
            case "Split":
            {
                var regex = SplitPattern(p, path);
                string behavior = p.TryGetProperty("behavior", out var b) && b.ValueKind == JsonValueKind.String ? b.GetString()! : "";
                if (Bool(p, "invert", false)) throw new InvalidInputException(path, "pre_tokenizer Split with \"invert\": true is not supported");
                _steps.Add(behavior switch
                {
                    "Isolated" => piece => Isolate(regex, piece),
                    "Removed" => piece => Remove(regex, piece),
                    _ => throw new InvalidInputException(path, $"pre_tokenizer Split with behavior \"{behavior}\" is not supported (supported: Isolated, Removed)"),
                });
                break;
            }
            default:
                throw new InvalidInputException(path, $"pre_tokenizer \"{type}\" is not supported (supported: ByteLevel, Split, Digits, Sequence)");
        }
    }

    private static Regex SplitPattern(JsonElement p, string path)
    {
        if (!p.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
            throw new InvalidInputException(path, "pre_tokenizer Split has no \"pattern\" object");
        try
        {
            if (pattern.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String) return Compile(r.GetString()!);
            if (pattern.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String && s.GetString() is { Length: > 0 } literal)
                return Compile(Regex.Escape(literal));
        }
        catch (ArgumentException e)
        {
            throw new InvalidInputException(path, $"pre_tokenizer Split's pattern is not a regular expression .NET understands: {e.Message}", e);
        }
        throw new InvalidInputException(path, "pre_tokenizer Split's \"pattern\" has neither a \"Regex\" nor a non-empty \"String\"");
    }

    /// <summary>
    /// A pattern with a time limit per match (1 s): a pattern from the file that backtracks without end stops the
    /// encoding with <see cref="RegexMatchTimeoutException"/>, which <see cref="Split"/> reports naming the file.
    /// </summary>
    private static Regex Compile(string pattern) => new(pattern, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));

    /// <summary>The matches of <paramref name="regex"/> and the text between them, in order.</summary>
    private static IEnumerable<string> Isolate(Regex regex, string text) => Cut(regex, text, keepMatches: true);

    /// <summary>The text between the matches of <paramref name="regex"/>.</summary>
    private static IEnumerable<string> Remove(Regex regex, string text) => Cut(regex, text, keepMatches: false);

    private static IEnumerable<string> Cut(Regex regex, string text, bool keepMatches)
    {
        // Matched on a stand-in for text where each character outside the BMP is one character (see StandIn), the cuts
        // mapped back to text's offsets.
        var (subject, offsets) = StandIn(text);
        int at = 0;
        for (var m = regex.Match(subject); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            int start = offsets?[m.Index] ?? m.Index, end = offsets?[m.Index + m.Length] ?? m.Index + m.Length;
            if (start > at) yield return text[at..start];
            if (keepMatches) yield return text[start..end];
            at = end;
        }
        if (at < text.Length) yield return text[at..];
    }

    /// <summary>
    /// .NET's regexes see a character outside the BMP as two surrogates, which no \p{L} or \p{N} matches; Hugging
    /// Face's (Rust) see one code point of its category: "a𝑥b" is one letter run there, and "𝟙𝟚𝟛" three digits. So the
    /// patterns run on a stand-in: each surrogate pair replaced by one BMP character of the same general category
    /// (none of them a letter that patterns spell out), with <c>offsets[i]</c> the offset in <paramref name="text"/> of
    /// the stand-in's character i (and of its end). Text without surrogate pairs is its own stand-in (offsets null).
    /// </summary>
    internal static (string Subject, int[]? Offsets) StandIn(string text)
    {
        int first = 0;
        while (first + 1 < text.Length && !char.IsSurrogatePair(text[first], text[first + 1])) first++;
        if (first + 1 >= text.Length) return (text, null);
        var subject = new StringBuilder(text.Length);
        var offsets = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            offsets.Add(i);
            if (i + 1 < text.Length && char.IsSurrogatePair(text[i], text[i + 1]))
            {
                subject.Append(StandInFor(char.GetUnicodeCategory(text, i)));
                i++;
            }
            else subject.Append(text[i]);
        }
        offsets.Add(text.Length);
        return (subject.ToString(), offsets.ToArray());
    }

    /// <summary>A BMP character of <paramref name="category"/>.</summary>
    private static char StandInFor(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u018E', UnicodeCategory.LowercaseLetter => '\u01DD', UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0', UnicodeCategory.OtherLetter => '\u05D0',
        UnicodeCategory.NonSpacingMark => '\u0300', UnicodeCategory.SpacingCombiningMark => '\u0903', UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660', UnicodeCategory.LetterNumber => '\u2160', UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.ConnectorPunctuation => '\u203F', UnicodeCategory.DashPunctuation => '\u2010', UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046', UnicodeCategory.InitialQuotePunctuation => '\u00AB', UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00A1', UnicodeCategory.MathSymbol => '\u00AC', UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u02C2', UnicodeCategory.OtherSymbol => '\u00A6', UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000', UnicodeCategory.SpaceSeparator => '\u3000',
        _ => '\u0378', // unassigned
    };

    private static string TypeOf(JsonElement e, string what, string path) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String
            ? t.GetString()!
            : throw new InvalidInputException(path, $"{what} has no \"type\"");

    private static JsonElement.ArrayEnumerator Array(JsonElement e, string field, string path) =>
        e.TryGetProperty(field, out var a) && a.ValueKind == JsonValueKind.Array
            ? a.EnumerateArray()
            : throw new InvalidInputException(path, $"a Sequence has no \"{field}\" list");

    private static bool Bool(JsonElement e, string field, bool fallback) =>
        e.TryGetProperty(field, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
}
