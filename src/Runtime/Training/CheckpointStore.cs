using System.Text.Json.Nodes;

namespace HftRuntime.Runtime.Training;

/// <summary>
/// Checkpoints of a run under <c>OUT/checkpoints/</c>: each one a directory <c>step-NNNNNNNN</c> holding
/// model.safetensors, optimizer.safetensors and trainer_state.json. A checkpoint is written into a temporary
/// directory, flushed, renamed into place, and only then does the <c>latest</c> pointer (itself replaced atomically)
/// name it; older ones are deleted afterwards. A crash at any moment therefore leaves the previous checkpoint and
/// the pointer to it intact.
/// </summary>
public sealed class CheckpointStore
{
    /// <summary>Name of the pointer file.</summary>
    public const string LatestFile = "latest";

    /// <summary>Environment variable for fault-injection tests: the 1-based save during which the process exits.</summary>
    public const string ExitDuringSaveVariable = "HFT_TEST_EXIT_DURING_SAVE";

    private int _saves;

    /// <summary>Creates the store rooted at <paramref name="runDirectory"/>/checkpoints.</summary>
    public CheckpointStore(string runDirectory) => Root = Path.Combine(runDirectory, "checkpoints");

    /// <summary>The checkpoints directory.</summary>
    public string Root { get; }

    /// <summary>The directory of the newest complete checkpoint, or null.</summary>
    public string? Latest()
    {
        string pointer = Path.Combine(Root, LatestFile);
        if (!File.Exists(pointer)) return null;
        string name = File.ReadAllText(pointer).Trim();
        string dir = Path.Combine(Root, name);
        if (name.Length == 0 || name.Contains('/') || name.Contains('\\') || !Directory.Exists(dir))
            throw new InvalidInputException(pointer, $"names checkpoint '{name}', which does not exist");
        return dir;
    }

    /// <summary>
    /// Writes a checkpoint for <paramref name="step"/>: <paramref name="writeFiles"/> fills the given (temporary)
    /// directory; the state JSON is written last.
    /// </summary>
    public string Save(int step, Action<string> writeFiles, JsonObject state)
    {
        Directory.CreateDirectory(Root);
        string name = $"step-{step:D8}";
        string final = Path.Combine(Root, name);
        string tmp = final + ".tmp";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        _saves++;
        writeFiles(tmp);
        if (Environment.GetEnvironmentVariable(ExitDuringSaveVariable) == _saves.ToString(System.Globalization.CultureInfo.InvariantCulture))
            Environment.Exit(86); // fault injection for tests: die with a half-written checkpoint
        WriteDurably(Path.Combine(tmp, "trainer_state.json"), state.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
        Directory.Move(tmp, final);
        string pointerTmp = Path.Combine(Root, LatestFile + ".tmp");
        WriteDurably(pointerTmp, name);
        File.Move(pointerTmp, Path.Combine(Root, LatestFile), overwrite: true);
        Prune();
        return final;
    }

    /// <summary>Keeps the newest <paramref name="keep"/> checkpoints (and never the one <c>latest</c> names).</summary>
    public void Prune(int keep = int.MaxValue)
    {
        if (keep == int.MaxValue) keep = Keep;
        string? latest = Latest();
        var dirs = Directory.GetDirectories(Root, "step-*").Where(d => !d.EndsWith(".tmp", StringComparison.Ordinal)).OrderBy(d => d, StringComparer.Ordinal).ToList();
        foreach (var d in dirs.Take(Math.Max(0, dirs.Count - keep)))
            if (d != latest) Directory.Delete(d, recursive: true);
        foreach (var d in Directory.GetDirectories(Root, "*.tmp")) Directory.Delete(d, recursive: true);
    }

    /// <summary>How many checkpoints to keep.</summary>
    public int Keep { get; init; } = 2;

    /// <summary>Reads a checkpoint's state.</summary>
    public static JsonObject ReadState(string checkpointDirectory)
    {
        string path = Path.Combine(checkpointDirectory, "trainer_state.json");
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidInputException(path, "not a JSON object");
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or IOException)
        {
            throw new InvalidInputException(path, $"unreadable checkpoint state: {e.Message}", e);
        }
    }

    /// <summary>Writes text to a file and flushes it to the disk.</summary>
    public static void WriteDurably(string path, string text)
    {
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        fs.Write(bytes);
        fs.Flush(flushToDisk: true);
    }
}
