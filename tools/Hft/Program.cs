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
    /// <summary>Training stopped because too many steps in a row had a non-finite loss or gradient.</summary>
    public const int ExitDiverged = 4;
    /// <summary>Interrupted (Ctrl-C): the current step finished and a checkpoint was saved; --resume continues.</summary>
    public const int ExitCancelled = 130;

    /// <summary>Runs the command line and returns the exit code.</summary>
    public static int Main(string[] args)
    {
        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            if (cts.IsCancellationRequested) return; // a second Ctrl-C ends the process at once
            e.Cancel = true;
            Console.Error.WriteLine("interrupted: finishing the current step and saving a checkpoint (Ctrl-C again to abort)");
            cts.Cancel();
        };
        return Run(args, Console.Out, Console.Error, cts.Token);
    }

    /// <summary>
    /// Runs the command line with the given output streams (tests use this); <paramref name="cancel"/> asks a
    /// long command to stop at the next safe point.
    /// </summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancel = default)
    {
        var root = new RootCommand("hft: Half Fine-Tuning for Llama models on our own CPU and GPU kernels");
        root.Subcommands.Add(Commands.DemoCommand.Create(stdout, stderr, cancel));
        root.Subcommands.Add(Commands.VerifyCommand.Create(stdout));
        root.Subcommands.Add(Commands.SelfTestCommand.Create(stdout));
        root.Subcommands.Add(Commands.InitCommand.Create(stdout));
        root.Subcommands.Add(Commands.TrainCommand.Create(stdout, stderr, cancel));
        root.Subcommands.Add(Commands.PolicyCommand.Create(stdout));
        root.Subcommands.Add(Commands.EvalCommand.Create(stdout));
        root.Subcommands.Add(Commands.BenchCommand.Create(stdout));
        root.Subcommands.Add(Commands.GenerateCommand.Create(stdout));
        root.Subcommands.Add(Commands.HalfResetCommand.Create(stdout));
        root.Subcommands.Add(Commands.DiffCommand.Create(stdout, stderr, cancel));
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
        try
        {
            // Parse errors (an unknown option, a value outside its choices, a missing required option) are bad input
            // like any other: exit 2, not System.CommandLine's 1 (which says a check failed).
            var parsed = root.Parse(args);
            if (parsed.Errors.Count > 0)
            {
                foreach (var error in parsed.Errors) stderr.WriteLine($"error: {error.Message}");
                var command = parsed.CommandResult.Command;
                stderr.WriteLine($"({(command is RootCommand ? "hft" : "hft " + command.Name)} --help lists the options)");
                return ExitBadInput;
            }
            return parsed.Invoke(config);
        }
        catch (Runtime.Training.TrainingDivergedException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitDiverged;
        }
        catch (Kernels.Ilgpu.DeviceOutOfMemoryException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitBadInput;
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
