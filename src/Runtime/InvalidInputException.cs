namespace HftRuntime.Runtime;

/// <summary>
/// Bad input from the user: a corrupt or inconsistent file, a malformed line, an unsupported setting. The
/// message names the file and the tensor, field or line. The CLI turns it into exit code 2.
/// </summary>
public class InvalidInputException : Exception
{
    /// <summary>Creates the exception; <paramref name="source"/> is the file (or other source) at fault.</summary>
    public InvalidInputException(string source, string message, Exception? inner = null)
        : base($"{source}: {message}", inner)
    {
        Source = source;
    }

    /// <summary>The file or other source the problem was found in.</summary>
    public new string Source { get; }
}
