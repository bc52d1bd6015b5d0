using System.CommandLine;
using System.Globalization;
using HftRuntime.Model;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft policy</c>: prints the tensors a freeze policy freezes for a model (one Hugging Face name per line).</summary>
internal static class PolicyCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Model directory (its config.json is read)", Required = true };
        var policy = new Option<string>("--policy") { Description = "hft, layer, model, explicit or none", DefaultValueFactory = _ => "hft" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the draw", DefaultValueFactory = _ => 1UL };
        var ratio = new Option<double>("--trainable-ratio") { Description = "Share of block tensors left trainable, in (0, 1]", DefaultValueFactory = _ => 0.5 };
        var freezeEmb = new Option<bool>("--freeze-embeddings") { Description = "Freeze the token embeddings and LM head too" };
        var freezeList = new Option<string?>("--freeze-list") { Description = "File of names or globs for --policy explicit" };
        var cmd = new Command("policy", "Print the tensors a freeze policy freezes, and the share of parameters left trainable")
        {
            model, policy, seed, ratio, freezeEmb, freezeList,
        };
        cmd.SetAction(r =>
        {
            var config = LlamaConfig.Load(Path.Combine(r.GetValue(model)!, "config.json"));
            var p = FreezePolicy.Create(r.GetValue(policy)!, r.GetValue(seed), r.GetValue(ratio), r.GetValue(freezeEmb), r.GetValue(freezeList));
            var frozen = p.SelectFrozen(LlamaModel.TensorNames(config));
            var specs = LlamaModel.ParameterSpecs(config);
            foreach (var s in specs.Where(s => frozen.Contains(s.Name))) stdout.WriteLine(s.Name);
            long total = specs.Sum(s => s.Count), kept = specs.Where(s => !frozen.Contains(s.Name)).Sum(s => s.Count);
            stdout.WriteLine(string.Format(CultureInfo.InvariantCulture, "# {0}: {1} of {2} tensors frozen; {3:N0} of {4:N0} parameters trainable ({5:P1}); cost bound at seq 1024: {6:F3}",
                p.Describe().ToJsonString(), frozen.Count, specs.Count, kept, total, (double)kept / total, LlamaCostModel.CostBound(config, 1024, frozen)));
            return Program.ExitOk;
        });
        return cmd;
    }
}
