namespace HftRuntime.Cli;

/// <summary>Entry point of the hft command line.</summary>
public static class Program
{
    /// <summary>Runs the command line.</summary>
    public static int Main(string[] args) => 0;
}
