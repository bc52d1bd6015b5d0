namespace HftRuntime.Runtime;

/// <summary>Checks that keep a command from writing over its own input.</summary>
public static class OutputPaths
{
    /// <summary>
    /// Throws <see cref="InvalidInputException"/> when <paramref name="output"/> names the same directory as
    /// <paramref name="input"/>; the message is "OUTPUT: is the <paramref name="what"/>; <paramref name="advice"/>".
    /// </summary>
    public static void RequireDistinct(string output, string input, string what, string advice)
    {
        string o = Path.TrimEndingDirectorySeparator(Path.GetFullPath(output));
        string i = Path.TrimEndingDirectorySeparator(Path.GetFullPath(input));
        if (o == i) throw new InvalidInputException(output, $"is the {what}; {advice}");
    }
}
