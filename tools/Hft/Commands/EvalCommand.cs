using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Model;
using HftRuntime.Model.Training;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft eval</c>: loss and perplexity of a model on a data file; exact match of greedy answers for SFT data.</summary>
internal static class EvalCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Model directory", Required = true };
        var data = new Option<string>("--data") { Description = "Plain text, {\"text\"} JSONL (lm) or SFT JSONL ({\"prompt\",\"response\"} / {\"messages\"})", Required = true };
        var objective = new Option<string?>("--objective") { Description = "lm or sft (default: sft for JSONL with prompts or messages, else lm)" };
        var batch = new Option<int>("--batch") { Description = "Sequences per batch", DefaultValueFactory = _ => 8 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence", DefaultValueFactory = _ => 256 };
        var maxBatches = new Option<int>("--max-batches") { Description = "Stop after this many batches (0: the whole file)", DefaultValueFactory = _ => 0 };
        var exact = new Option<int>("--exact-match") { Description = "SFT: prompts answered greedily for exact match (0: none)", DefaultValueFactory = _ => 100 };
        var json = new Option<string?>("--json") { Description = "Also write the figures (and the answers) to this JSON file" };
        var skipBad = new Option<bool>("--skip-bad-lines") { Description = "Skip malformed JSONL lines instead of failing" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("eval", "Loss and perplexity of a model on data; exact match of greedy answers on SFT data")
        {
            model, data, objective, batch, seq, maxBatches, exact, json, skipBad, device, threads,
        };
        cmd.SetAction(r => Run(r.GetValue(model)!, r.GetValue(data)!, r.GetValue(objective), r.GetValue(batch), r.GetValue(seq), r.GetValue(maxBatches),
            r.GetValue(exact), r.GetValue(json), r.GetValue(skipBad), r.GetValue(device)!, r.GetValue(threads), stdout));
        return cmd;
    }

    private static int Run(string modelDir, string dataPath, string? objective, int batch, int seq, int maxBatches, int exact, string? jsonPath,
        bool skipBad, string device, int threads, TextWriter stdout)
    {
        if (batch <= 0 || seq <= 0) throw new ArgumentException("--batch and --seq must be positive");
        using var backend = Devices.Create(device, threads);
        using var llama = LlamaModel.Load(backend, modelDir, new LlamaModelOptions(batch, seq, Training: false), out var tokenizer);
        var r = ConsoleDisplay.Status(stdout, false, $"evaluating on {Path.GetFileName(dataPath)}", _ => ModelEvaluation.Run(llama, tokenizer, dataPath, objective, maxBatches, exact, skipBad));
        var inv = CultureInfo.InvariantCulture;
        stdout.WriteLine(string.Format(inv, "loss {0:F4}  perplexity {1:F3}  over {2:N0} tokens ({3} batches of {4} x {5}) on {6}",
            r.Loss, r.Perplexity, r.Tokens, r.Batches, llama.MaxBatch, seq, backend.DeviceName));
        var report = new JsonObject
        {
            ["model"] = Path.GetFullPath(modelDir), ["data"] = r.Data.ToJson(), ["device"] = backend.DeviceName,
            ["loss"] = r.Loss, ["perplexity"] = r.Perplexity, ["tokens"] = r.Tokens, ["batches"] = r.Batches,
        };
        if (r.ExactMatch is double em)
        {
            report["exact_match"] = em;
            report["exact_match_prompts"] = r.Answers.Count;
            report["answers"] = new JsonArray(r.Answers.Select(s => (JsonNode)new JsonObject
            {
                ["prompt"] = s.Prompt, ["reference"] = s.Reference, ["answer"] = s.Answer, ["match"] = s.Match,
            }).ToArray());
            stdout.WriteLine(string.Format(inv, "exact match {0:P1} of {1} greedy answers", em, r.Answers.Count));
        }
        if (jsonPath != null) File.WriteAllText(jsonPath, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return Program.ExitOk;
    }
}
