using System.Text;

namespace HftRuntime.Tests.Support;

/// <summary>Small deterministic corpora and models for training tests.</summary>
public static class TestData
{
    private static readonly string[] Words =
    [
        "the", "a", "ship", "sea", "whale", "captain", "sailed", "north", "into", "storm", "and", "crew", "saw", "white",
        "water", "under", "sky", "long", "night", "of", "harbour", "wind", "rope", "deck", "old", "young", "mate", "said",
    ];

    /// <summary>Writes about <paramref name="bytes"/> bytes of pseudo-English sentences (seeded) to a new file.</summary>
    public static string WriteText(string directory, int bytes, int seed = 1, string name = "data.txt")
    {
        var rng = new Random(seed);
        var sb = new StringBuilder();
        while (sb.Length < bytes)
        {
            int n = 4 + rng.Next(8);
            for (int i = 0; i < n; i++)
            {
                string w = Words[rng.Next(Words.Length)];
                sb.Append(i == 0 ? char.ToUpperInvariant(w[0]) + w[1..] : w).Append(i + 1 < n ? ' ' : '.');
            }
            sb.Append(rng.Next(4) == 0 ? '\n' : ' ');
        }
        string path = Path.Combine(directory, name);
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    /// <summary>A fresh tiny model (bytes tokenizer) in a new temporary directory.</summary>
    public static string TinyModel(ulong seed = 1)
    {
        string dir = Path.Combine(Fixtures.TempDirectory(), "base");
        var (code, _, err) = HftCli.Run("init", "--preset", "tiny", "--tokenizer", "bytes", "--seed", seed.ToString(), "--out", dir);
        if (code != 0) throw new InvalidOperationException("hft init failed: " + err);
        return dir;
    }

    /// <summary>
    /// Writes <paramref name="count"/> SFT examples ("Upper: word" → "WORD"), a task a tiny model learns in a few dozen
    /// steps, as JSONL (every third in the messages form).
    /// </summary>
    public static string WriteSft(string directory, int count, int seed = 1, string name = "sft.jsonl")
    {
        var rng = new Random(seed);
        var lines = new List<string>();
        for (int i = 0; i < count; i++)
        {
            string w = Words[rng.Next(Words.Length)];
            lines.Add(i % 3 == 2
                ? $$"""{"messages": [{"role": "user", "content": "Upper: {{w}}"}, {"role": "assistant", "content": "{{w.ToUpperInvariant()}}"}]}"""
                : $$"""{"prompt": "Upper: {{w}}", "response": "{{w.ToUpperInvariant()}}"}""");
        }
        string path = Path.Combine(directory, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    /// <summary>Writes DPO pairs: chosen = the upper-cased word, rejected = another word reversed.</summary>
    public static string WriteDpo(string directory, int count, int seed = 1, string name = "dpo.jsonl")
    {
        var rng = new Random(seed);
        var lines = new List<string>();
        for (int i = 0; i < count; i++)
        {
            string w = Words[rng.Next(Words.Length)], other = Words[rng.Next(Words.Length)];
            lines.Add($$"""{"prompt": "Upper: {{w}}", "chosen": "{{w.ToUpperInvariant()}}", "rejected": "{{new string(other.Reverse().ToArray())}}"}""");
        }
        string path = Path.Combine(directory, name);
        File.WriteAllLines(path, lines);
        return path;
    }
}
