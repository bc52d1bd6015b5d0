using System.CommandLine;
using HftRuntime.Runtime;

namespace HftRuntime.Cli;

/// <summary>Entry point of the <c>hft</c> command line.</summary>
public static class Program
{
    /// <summary>Success.</summary>
    public const int ExitOk = 0;
    /// <summary>A check did not pass (verify, selftest).</summary>
    public const int ExitCheckFailed = 1;
    /// <summary>Bad input: arguments, files, configuration.</summary>
    public const int ExitBadInput = 2;
    /// <summary>An unexpected internal error.</summary>
    public const int ExitInternalError = 3;

    /// <summary>Runs the command line and returns the exit code.</summary>
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs the command line with the given output streams (tests use this).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("hft: Half Fine-Tuning for Llama models on our own CPU and GPU kernels");
        root.Subcommands.Add(Commands.VerifyCommand.Create(stdout));
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
        try
        {
            return root.Parse(args).Invoke(config);
        }
        catch (InvalidInputException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitBadInput;
        }
        catch (ArgumentException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitBadInput;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"internal error: {e}");
            return ExitInternalError;
        }
    }
}
