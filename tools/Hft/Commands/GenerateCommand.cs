using System.CommandLine;
using HftRuntime.Model;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft generate</c>: continues a prompt with a model directory and prints the continuation.</summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Model directory (config.json, model.safetensors, tokenizer)", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue (the tokenizer's BOS token is put first when it has one)", Required = true };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 64 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 picks the most likely token (greedy)", DefaultValueFactory = _ => 0.8f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling: draw from the most likely tokens that make up this probability, in (0, 1]", DefaultValueFactory = _ => 0.95f };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the sampling", DefaultValueFactory = _ => 1UL };
        var noCache = new Option<bool>("--no-cache") { Description = "Recompute the whole sequence for every token instead of using the key/value cache (slow; for checking)" };
        var noEos = new Option<bool>("--ignore-eos") { Description = "Keep going after the end-of-sequence token" };
        var chat = new Option<bool>("--chat") { Description = "Wrap the prompt in the chat template as one user turn (for models fine-tuned with --objective sft)" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("generate", "Continue a prompt with a model and print the continuation")
        {
            model, prompt, maxTokens, temperature, topP, seed, noCache, noEos, chat, device, threads,
        };
        cmd.SetAction(r =>
        {
            var options = new GenerationOptions(r.GetValue(maxTokens), r.GetValue(temperature), r.GetValue(topP), r.GetValue(seed),
                StopAtEos: !r.GetValue(noEos), UseKvCache: !r.GetValue(noCache));
            stdout.WriteLine(Execute(r.GetValue(model)!, r.GetValue(prompt)!, options, r.GetValue(device)!, r.GetValue(threads), r.GetValue(chat)));
            return Program.ExitOk;
        });
        return cmd;
    }

    /// <summary>Loads the model directory and returns the decoded continuation of <paramref name="prompt"/>.</summary>
    internal static string Execute(string modelDir, string prompt, GenerationOptions options, string device, int threads, bool chat = false)
    {
        // Everything that can be wrong with the input is checked before the model is loaded.
        if (string.IsNullOrEmpty(prompt)) throw new ArgumentException("--prompt is empty: give the text to continue");
        if (options.MaxNewTokens <= 0) throw new ArgumentException($"--max-tokens must be positive, got {options.MaxNewTokens}");
        if (!(options.Temperature >= 0) || float.IsPositiveInfinity(options.Temperature))
            throw new ArgumentException($"--temperature must be a finite number >= 0 (0: greedy), got {options.Temperature}");
        if (!(options.TopP > 0 && options.TopP <= 1)) throw new ArgumentException($"--top-p must lie in (0, 1], got {options.TopP}");
        if (!Directory.Exists(modelDir)) throw new InvalidInputException(modelDir, "model directory not found");

        var config = LlamaConfig.Load(Path.Combine(modelDir, "config.json"));
        var tokenizer = Tokenizers.Load(modelDir);
        if (tokenizer.VocabSize > config.VocabSize)
            throw new InvalidInputException(modelDir, $"the tokenizer has {tokenizer.VocabSize} ids but config.json's vocab_size is {config.VocabSize}");
        var ids = chat
            ? Runtime.Data.ChatTemplate.EncodeForReply([new Runtime.Data.ChatMessage(Runtime.Data.ChatRole.User, prompt)], tokenizer)
            : LlamaGenerator.EncodePrompt(prompt, tokenizer);
        int context = config.MaxPositionEmbeddings;
        if (ids.Length >= context)
            throw new ArgumentException($"the prompt has {ids.Length} tokens; the model's context (max_position_embeddings in config.json) is {context}, which leaves no room for a new token");
        int maxLength = (int)Math.Min((long)ids.Length + options.MaxNewTokens, context);

        using var backend = Devices.Create(device, threads);
        // The cached path needs nothing of the model's own activations; the recomputing one runs its forward pass.
        var layout = options.UseKvCache ? new LlamaModelOptions(1, 1, Training: false) : new LlamaModelOptions(1, maxLength, Training: false);
        using var llama = LlamaModel.Create(backend, config, layout);
        using (var weights = SafeTensorsCheckpoint.Open(modelDir)) llama.LoadWeights(weights);
        using var generator = new LlamaGenerator(llama, 1, maxLength);
        var tokens = generator.Generate([ids], options with { StopIds = StopTokens.Read(modelDir, tokenizer) })[0];
        return tokenizer.Decode(tokens);
    }
}
