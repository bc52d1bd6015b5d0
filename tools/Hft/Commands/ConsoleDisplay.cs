using System.Globalization;
using HftRuntime.Runtime.Training;
using Spectre.Console;

namespace HftRuntime.Cli.Commands;

/// <summary>
/// How a long command shows progress: a Spectre.Console progress bar (training) or spinner on an interactive terminal, lines
/// when the output is redirected or captured, nothing with --quiet.
/// </summary>
internal static class ConsoleDisplay
{
    /// <summary>True when <paramref name="stdout"/> is the process's own console and a person is watching it.</summary>
    public static bool Interactive(TextWriter stdout) =>
        ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs <paramref name="work"/> with a progress sink suited to the output.</summary>
    public static T Run<T>(TextWriter stdout, bool quiet, string title, Func<IProgress<TrainingProgress>?, T> work)
    {
        if (quiet) return work(null);
        if (!Interactive(stdout)) return work(new SyncProgress<TrainingProgress>(p => { if (p.IsLogStep) stdout.WriteLine(Format(p)); }));
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                ProgressTask? task = null;
                result = work(new SyncProgress<TrainingProgress>(p =>
                {
                    // A step count that goes back down means the next training run of a command with several.
                    if (task is null || p.Step < task.Value || p.Steps != (int)task.MaxValue)
                    {
                        if (task != null) task.Value = task.MaxValue;
                        task = ctx.AddTask(Markup.Escape(title), maxValue: p.Steps);
                    }
                    task.Value = p.Step;
                    task.Description = Markup.Escape($"{title}  {Short(p)}");
                    if (p.IsLogStep && p.EvalLoss is double e)
                        AnsiConsole.MarkupLine(Markup.Escape(string.Format(CultureInfo.InvariantCulture, "  step {0}: held-out loss {1:F4}", p.Step, e)));
                }));
            });
        return result;
    }

    /// <summary>
    /// Runs <paramref name="work"/> under a Spectre.Console spinner on an interactive terminal (its text follows what
    /// the work reports through the callback); elsewhere the reports are printed as lines unless <paramref name="quiet"/>.
    /// </summary>
    public static T Status<T>(TextWriter stdout, bool quiet, string message, Func<Action<string>, T> work)
    {
        if (quiet) return work(_ => { });
        if (!Interactive(stdout)) return work(stdout.WriteLine);
        T result = default!;
        AnsiConsole.Status().Start(Markup.Escape(message), ctx => result = work(line => ctx.Status(Markup.Escape($"{message}: {line}"))));
        return result;
    }

    private static string Short(TrainingProgress p)
    {
        var inv = CultureInfo.InvariantCulture;
        return string.Format(inv, "loss {0}  lr {1:0.0e+00}  {2:N0} tok/s", p.Loss is float l ? l.ToString("F3", inv) : "skipped", p.Lr, p.TokensPerSecond);
    }

    /// <summary>One log line.</summary>
    public static string Format(TrainingProgress p)
    {
        var inv = CultureInfo.InvariantCulture;
        string loss = p.Loss is float l ? l.ToString("F4", inv) : "skipped";
        string eval = p.EvalLoss is double e ? string.Format(inv, "  eval {0:F4}", e) : "";
        return string.Format(inv, "step {0,5}/{1}  loss {2}  lr {3:0.00e+00}  gnorm {4:F3}  {5,9:N0} tok/s  {6,8:F1} ms{7}",
            p.Step, p.Steps, loss, p.Lr, p.GradNorm, p.TokensPerSecond, p.StepMs, eval);
    }
}
