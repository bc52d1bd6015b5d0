using System.CommandLine;
using HftRuntime.Model;

namespace HftRuntime.Cli.Commands;

/// <summary>
/// <c>hft diff</c>: the relative change ‖θ − θ₀‖ / ‖θ₀‖ of every tensor of a tuned model against its base, by layer
/// and category: diff.md, diff.json and a heat map, diff.png.
/// </summary>
internal static class DiffCommand
{
    /// <summary>The heat map's file name.</summary>
    public const string PngFileName = "diff.png";

    public static Command Create(TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        var baseDir = new Option<string>("--base") { Description = "The base model directory (θ₀)", Required = true };
        var tuned = new Option<string>("--tuned") { Description = "The tuned model directory (θ)", Required = true };
        var output = new Option<string>("--out") { Description = "Directory to create for diff.md, diff.json and diff.png (must not exist or be empty)", Required = true };
        var cmd = new Command("diff", "Relative change of every tensor of a tuned model against its base, by layer and category (markdown, JSON, heat map)")
        {
            baseDir, tuned, output,
        };
        cmd.SetAction(r =>
        {
            string o = r.GetValue(output)!, b = r.GetValue(baseDir)!, t = r.GetValue(tuned)!;
            HalfResetCommand.RequireNotInput(o, b, "base");
            HalfResetCommand.RequireNotInput(o, t, "tuned");
            OutputGuard.RequireFresh(o);
            ParameterDiff diff;
            try
            {
                diff = ParameterDiff.Compute(b, t, cancel);
            }
            catch (OperationCanceledException)
            {
                stderr.WriteLine("interrupted: nothing was written");
                return Program.ExitCancelled;
            }
            using (var staged = StagedDirectory.Create(o))
            {
                diff.WriteReports(staged.Path);
                DiffPlot.Save(diff, Path.Combine(staged.Path, PngFileName));
                staged.Commit();
            }
            stdout.WriteLine($"mean relative change: attention {ParameterDiff.Format(diff.MeanAttention)}, MLP {ParameterDiff.Format(diff.MeanMlp)}, " +
                $"norms {ParameterDiff.Format(diff.MeanNorm)}; embed_tokens {ParameterDiff.Format(diff.EmbedTokens.Relative)}" +
                (diff.LmHead is { } head ? $", lm_head {ParameterDiff.Format(head.Relative)}" : "") +
                $"; {diff.Unchanged} of {diff.Tensors.Count} tensors unchanged");
            stdout.WriteLine($"wrote {o}: {ParameterDiff.MarkdownFileName}, {ParameterDiff.JsonFileName}, {PngFileName}");
            return Program.ExitOk;
        });
        return cmd;
    }
}
