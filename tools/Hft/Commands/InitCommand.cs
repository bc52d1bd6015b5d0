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
        var tokenizer = new Option<string>("--tokenizer") { Description = "'bytes', 'tiktoken:cl100k_base', the path of a SentencePiece tokenizer.model or a Hugging Face byte-level BPE tokenizer.json, or a model directory holding one", DefaultValueFactory = _ => "bytes" };
        var output = new Option<string>("--out") { Description = "Directory to create", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the initial weights", DefaultValueFactory = _ => 1UL };
        var cmd = new Command("init", "Write a randomly initialised Llama (config.json, model.safetensors, tokenizer)") { preset, tokenizer, output, seed };
        cmd.SetAction(r => Execute(r.GetValue(output)!, r.GetValue(preset)!, r.GetValue(tokenizer)!, r.GetValue(seed), stdout));
        return cmd;
    }

    /// <summary>Writes a fresh model directory; refuses a non-empty one.</summary>
    internal static int Execute(string dir, string preset, string tokenizerSpec, ulong seed, TextWriter stdout)
    {
        OutputGuard.RequireFresh(dir);
        var tok = Tokenizers.Create(tokenizerSpec);
        var config = ModelPresets.Create(preset, tok.VocabSize, tok.BosId, tok.EosId);
        using var backend = new CpuBackend();
        using var model = LlamaModel.Create(backend, config, new LlamaModelOptions(1, 1, Training: false));
        model.InitializeWeights(seed);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJson());
        model.SaveWeights(Path.Combine(dir, "model.safetensors"));
        tok.Save(dir);
        long parameters = model.Parameters.TrainableCount + model.Parameters.FrozenCount;
        stdout.WriteLine($"wrote {dir}: {preset} Llama, {parameters:N0} parameters, vocabulary {config.VocabSize} ({tok.Kind})");
        return Program.ExitOk;
    }
}
