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
}
