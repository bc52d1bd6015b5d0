using System.CommandLine;
using HftRuntime.Kernels.Cpu;
using HftRuntime.Model;
using HftRuntime.Model.Tokenizers;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft init</c>: a randomly initialised model directory, ready for pretraining.</summary>
internal static class InitCommand
{
    public static Command Create(TextWriter stdout)
    {
        var preset = new Option<string>("--preset") { Description = "Architecture: " + string.Join(", ", ModelPresets.Names), DefaultValueFactory = _ => "tiny" };
        var tokenizer = new Option<string>("--tokenizer") { Description = "'bytes' or a SentencePiece tokenizer.model path", DefaultValueFactory = _ => "bytes" };
        var output = new Option<string>("--out") { Description = "Directory to create", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the initial weights", DefaultValueFactory = _ => 1UL };
        var cmd = new Command("init", "Write a randomly initialised Llama (config.json, model.safetensors, tokenizer)") { preset, tokenizer, output, seed };
        cmd.SetAction(r =>
        {
            string dir = r.GetValue(output)!;
            OutputGuard.RequireFresh(dir);
            var tok = Tokenizers.Create(r.GetValue(tokenizer)!);
            var config = ModelPresets.Create(r.GetValue(preset)!, tok.VocabSize, tok.BosId, tok.EosId);
            using var backend = new CpuBackend();
            using var model = LlamaModel.Create(backend, config, new LlamaModelOptions(1, 1, Training: false));
            model.InitializeWeights(r.GetValue(seed));
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJson());
            model.SaveWeights(Path.Combine(dir, "model.safetensors"));
            tok.Save(dir);
            long parameters = model.Parameters.TrainableCount + model.Parameters.FrozenCount;
            stdout.WriteLine($"wrote {dir}: {r.GetValue(preset)} Llama, {parameters:N0} parameters, vocabulary {config.VocabSize} ({tok.Kind})");
            return Program.ExitOk;
        });
        return cmd;
    }
}
