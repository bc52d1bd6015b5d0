// Fine-tunes a model directory with Half Fine-Tuning on SFT data, then answers a prompt with the result.
// Usage: HftSample MODEL_DIR DATA.jsonl OUT_DIR "PROMPT"
using HftRuntime.Model;
using HftRuntime.Model.Training;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.Training;

if (args.Length != 4) { Console.Error.WriteLine("usage: HftSample MODEL_DIR DATA.jsonl OUT_DIR PROMPT"); return 2; }
using var device = Devices.Create("auto");                                   // CUDA if present, else the CPU
var run = FineTuning.Run(device, new FineTuneRequest
{
    ModelDirectory = args[0], DataPath = args[1], OutputDirectory = args[2], Objective = "sft",
    Policy = FreezePolicy.Hft(seed: 1),                                       // the paper's category-level half
    Options = new TrainingOptions { Steps = 30, Batch = 8, Seq = 64, Lr = 5e-3f, LogEvery = 10 },
}, new Reporter());
Console.WriteLine($"{run.Frozen.Count} tensors frozen; final loss {run.Training.Losses[^1]:F3}");

using var model = LlamaModel.Load(device, args[2], new LlamaModelOptions(1, 128, Training: false), out ITokenizer tokenizer);
using var generator = new LlamaGenerator(model, maxBatch: 1, maxLength: 128);
var prompt = ChatTemplate.EncodeForReply([new ChatMessage(ChatRole.User, args[3])], tokenizer);
var answer = generator.Generate([prompt], GenerationOptions.Greedy(16))[0];
Console.WriteLine($"{args[3]} -> {tokenizer.Decode(answer)}");
return 0;

/// <summary>Prints every log step of the training (IProgress is called on the training thread).</summary>
sealed class Reporter : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress p) { if (p.IsLogStep) Console.WriteLine($"step {p.Step}: loss {p.Loss:F3}"); }
}
