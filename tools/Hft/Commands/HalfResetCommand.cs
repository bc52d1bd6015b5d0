using System.CommandLine;
using System.Globalization;
using HftRuntime.Model;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary>
/// <c>hft half-reset</c>: the HFT paper's pilot experiment. The tensors a freeze policy draws are reset to the base
/// model's values and every other tensor keeps the tuned value; the result is a complete model directory.
/// </summary>
internal static class HalfResetCommand
{
    public static Command Create(TextWriter stdout)
    {
        var baseDir = new Option<string>("--base") { Description = "The base model directory (θ₀)", Required = true };
        var tuned = new Option<string>("--tuned") { Description = "The tuned model directory (θ), e.g. a chat model trained from --base", Required = true };
        var output = new Option<string>("--out") { Description = "Directory to create (must not exist or be empty)", Required = true };
        var policy = new Option<string>("--policy") { Description = "Which tensors to reset: hft (a category-level half), layer, model or explicit", DefaultValueFactory = _ => "hft" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the draw (a training run's --seed reproduces its frozen set)", DefaultValueFactory = _ => 1UL };
        var ratio = new Option<double>("--trainable-ratio") { Description = "Share of block tensors that keep the tuned value, in (0, 1]", DefaultValueFactory = _ => 0.5 };
        var freezeEmb = new Option<bool>("--freeze-embeddings") { Description = "Reset the token embeddings and LM head too (as training's --freeze-embeddings froze them)" };
        var freezeList = new Option<string?>("--freeze-list") { Description = "File of tensor names or globs for --policy explicit" };
        var cmd = new Command("half-reset", "Reset the tensors a freeze policy draws to the base model's values, keep the tuned values elsewhere")
        {
            baseDir, tuned, output, policy, seed, ratio, freezeEmb, freezeList,
        };
        cmd.SetAction(r =>
        {
            string o = r.GetValue(output)!, b = r.GetValue(baseDir)!, t = r.GetValue(tuned)!;
            RequireNotInput(o, b, "base");
            RequireNotInput(o, t, "tuned");
            OutputGuard.RequireFresh(o);
            var p = FreezePolicy.Create(r.GetValue(policy)!, r.GetValue(seed), r.GetValue(ratio), r.GetValue(freezeEmb), r.GetValue(freezeList));
            var result = HalfReset.Run(b, t, o, p);
            stdout.WriteLine(string.Format(CultureInfo.InvariantCulture,
                "wrote {0}: {1} of {2} tensors reset to {3} ({4:N0} of {5:N0} parameters, {6:P1}), the rest from {7}; policy {8}; copied {9}",
                o, result.ResetTensors.Count, result.TotalTensors, b, result.ResetParameters, result.TotalParameters,
                (double)result.ResetParameters / result.TotalParameters, t, result.Policy.ToJsonString(),
                result.CopiedFiles.Count > 0 ? string.Join(", ", result.CopiedFiles) : "nothing else"));
            return Program.ExitOk;
        });
        return cmd;
    }

    /// <summary>Refuses an output directory that is one of the inputs.</summary>
    internal static void RequireNotInput(string output, string input, string role)
    {
        string o = Path.TrimEndingDirectorySeparator(Path.GetFullPath(output));
        string i = Path.TrimEndingDirectorySeparator(Path.GetFullPath(input));
        if (o == i) throw new InvalidInputException(output, $"is the {role} model directory; choose another --out (nothing was written)");
    }
}
