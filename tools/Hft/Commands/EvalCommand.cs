using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Model;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Model.Training;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.SafeTensors;

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
        if (maxBatches < 0 || exact < 0) throw new ArgumentException("--max-batches and --exact-match must be >= 0");
        var config = LlamaConfig.Load(Path.Combine(modelDir, "config.json"));
        var tokenizer = Tokenizers.Load(modelDir);
        objective ??= Datasets.IsJsonl(dataPath) ? DetectJsonl(dataPath, tokenizer, seq, skipBad) : "lm";
        if (objective is not ("lm" or "sft")) throw new ArgumentException($"eval takes lm or sft data, not '{objective}'");
        using var data = Datasets.Open(dataPath, objective, tokenizer, batch, seq, seed: 1, heldOutFraction: 0, skipBad);
        using var backend = Devices.Create(device, threads);
        using var llama = LlamaModel.Create(backend, config, new LlamaModelOptions(data.Train.Batch, seq, Training: false));
        using (var w = SafeTensorsCheckpoint.Open(modelDir)) llama.LoadWeights(w);

        // One pass over the whole file: every counted position once.
        var source = data.Train;
        double sum = 0;
        long tokens = 0;
        int batches = 0;
        while (source.Position.Epoch == 0 && (maxBatches == 0 || batches < maxBatches))
        {
            var inputs = source.Next();
            int n = inputs.CountTargets();
            for (int i = 0; i < inputs.Rows; i++) inputs.RowScale[i] = inputs.Targets[i] == Backend.IgnoreIndex ? 0f : 1f;
            llama.SetInputs(inputs);
            llama.Forward();
            sum += llama.Loss();
            tokens += n;
            batches++;
        }
        double loss = sum / Math.Max(1, tokens);
        var inv = CultureInfo.InvariantCulture;
        var report = new JsonObject
        {
            ["model"] = Path.GetFullPath(modelDir), ["data"] = data.Info.ToJson(), ["objective"] = objective, ["device"] = backend.DeviceName,
            ["loss"] = loss, ["perplexity"] = Math.Exp(loss), ["tokens"] = tokens, ["batches"] = batches,
        };
        stdout.WriteLine(string.Format(inv, "loss {0:F4}  perplexity {1:F3}  over {2:N0} tokens ({3} batches of {4} x {5}) on {6}",
            loss, Math.Exp(loss), tokens, batches, data.Train.Batch, seq, backend.DeviceName));
        if (objective == "sft" && exact > 0)
        {
            var samples = ExactMatch.Answer(llama, tokenizer, data.Jsonl!.Prompts(DatasetSplit.Train, exact));
            double em = ExactMatch.Score(samples);
            report["exact_match"] = em;
            report["exact_match_prompts"] = samples.Count;
            report["answers"] = new JsonArray(samples.Select(s => (JsonNode)new JsonObject
            {
                ["prompt"] = s.Prompt, ["reference"] = s.Reference, ["answer"] = s.Answer, ["match"] = s.Match,
            }).ToArray());
            stdout.WriteLine(string.Format(inv, "exact match {0:P1} of {1} greedy answers", em, samples.Count));
        }
        if (jsonPath != null) File.WriteAllText(jsonPath, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return Program.ExitOk;
    }

    private static string DetectJsonl(string path, ITokenizer tokenizer, int seq, bool skipBad)
    {
        using var d = JsonlDataset.Open(path, tokenizer, seq, format: null, heldOutFraction: 0, skipBad);
        return d.Format switch { DatasetFormat.Sft => "sft", DatasetFormat.Dpo => "dpo", _ => "lm" };
    }
}
