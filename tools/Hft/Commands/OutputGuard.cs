using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary>Refuses to write over what the user already has.</summary>
internal static class OutputGuard
{
    /// <summary>The directory must not exist or must be empty.</summary>
    public static void RequireFresh(string dir)
    {
        if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            throw new InvalidInputException(dir, "already exists and is not empty; choose another --out (nothing was written)");
    }

    /// <summary>The output must not be (or contain) the input model directory.</summary>
    public static void RequireDistinct(string output, string input)
    {
        string o = Path.GetFullPath(output).TrimEnd(Path.DirectorySeparatorChar), i = Path.GetFullPath(input).TrimEnd(Path.DirectorySeparatorChar);
        if (o == i) throw new InvalidInputException(output, "is the input model directory; write the trained model elsewhere (--out)");
    }
}
