using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using HftRuntime.Model;
using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft train</c>: full or half fine-tuning of a Hugging Face Llama directory.</summary>
internal static class TrainCommand
{
    private static readonly TrainingOptions D = new();

    public static Command Create(TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        var model = new Option<string>("--model") { Description = "Model directory (config.json, model.safetensors, tokenizer)", Required = true };
        var data = new Option<string>("--data") { Description = "Training data (for --objective lm: plain UTF-8 text)", Required = true };
        var objective = new Option<string>("--objective") { Description = "lm", DefaultValueFactory = _ => "lm" };
        var method = new Option<string>("--method") { Description = "fft (nothing frozen) or hft (half fine-tuning)", DefaultValueFactory = _ => "hft" };
        var policy = new Option<string?>("--policy") { Description = "Freeze policy for --method hft: hft (default), layer, model, explicit" };
        var ratio = new Option<double>("--trainable-ratio") { Description = "Share of block tensors left trainable, in (0, 1]", DefaultValueFactory = _ => 0.5 };
        var freezeEmb = new Option<bool>("--freeze-embeddings") { Description = "Freeze the token embeddings and LM head too" };
        var freezeList = new Option<string?>("--freeze-list") { Description = "File of tensor names or globs for --policy explicit" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the freeze draw and the data order", DefaultValueFactory = _ => 1UL };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => D.Steps, Description = "Optimizer steps" };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => D.Batch, Description = "Sequences per micro-batch" };
        var seq = new Option<int>("--seq") { DefaultValueFactory = _ => D.Seq, Description = "Tokens per sequence" };
        var accum = new Option<int>("--accum") { DefaultValueFactory = _ => D.GradAccum, Description = "Micro-batches per optimizer step" };
        var lr = new Option<float>("--lr") { DefaultValueFactory = _ => D.Lr, Description = "Peak learning rate" };
        var minLr = new Option<float>("--min-lr") { DefaultValueFactory = _ => D.MinLr, Description = "Learning rate at the end of the cosine decay" };
        var warmup = new Option<int?>("--warmup") { Description = "Warm-up steps (default: 5 % of --steps)" };
        var wd = new Option<float>("--weight-decay") { DefaultValueFactory = _ => D.WeightDecay, Description = "AdamW weight decay (2-D weights)" };
        var beta1 = new Option<float>("--beta1") { DefaultValueFactory = _ => D.Beta1, Description = "AdamW beta1" };
        var beta2 = new Option<float>("--beta2") { DefaultValueFactory = _ => D.Beta2, Description = "AdamW beta2" };
        var clip = new Option<float>("--clip") { DefaultValueFactory = _ => D.ClipNorm, Description = "Global gradient-norm clip (0: off)" };
        var evalEvery = new Option<int>("--eval-every") { DefaultValueFactory = _ => D.EvalEvery, Description = "Steps between held-out evaluations (0: at the end)" };
        var evalBatches = new Option<int>("--eval-batches") { DefaultValueFactory = _ => D.EvalBatches, Description = "Batches per evaluation" };
        var heldOut = new Option<double>("--held-out") { DefaultValueFactory = _ => 0.05, Description = "Share of the data held out for evaluation" };
        var saveEvery = new Option<int>("--save-every") { DefaultValueFactory = _ => D.SaveEvery, Description = "Steps between checkpoints (0: at the end)" };
        var logEvery = new Option<int>("--log-every") { DefaultValueFactory = _ => D.LogEvery, Description = "Steps between progress lines" };
        var maxNan = new Option<int>("--max-nan-steps") { DefaultValueFactory = _ => D.MaxConsecutiveNanSteps, Description = "Consecutive non-finite steps that stop the run" };
        var output = new Option<string>("--out") { Description = "Output directory", Required = true };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --out from its last checkpoint" };
        var quiet = new Option<bool>("--quiet") { Description = "Print only errors and the final summary" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("train", "Fine-tune a model with full fine-tuning (fft) or Half Fine-Tuning (hft)")
        {
            model, data, objective, method, policy, ratio, freezeEmb, freezeList, seed, steps, batch, seq, accum, lr, minLr, warmup, wd,
            beta1, beta2, clip, evalEvery, evalBatches, heldOut, saveEvery, logEvery, maxNan, output, resume, quiet, device, threads,
        };
        cmd.SetAction(r =>
        {
            var options = new TrainingOptions
            {
                Steps = r.GetValue(steps), Batch = r.GetValue(batch), Seq = r.GetValue(seq), GradAccum = r.GetValue(accum),
                Lr = r.GetValue(lr), MinLr = r.GetValue(minLr), WarmupSteps = r.GetValue(warmup), WeightDecay = r.GetValue(wd),
                Beta1 = r.GetValue(beta1), Beta2 = r.GetValue(beta2), ClipNorm = r.GetValue(clip), Seed = r.GetValue(seed),
                EvalEvery = r.GetValue(evalEvery), EvalBatches = r.GetValue(evalBatches), SaveEvery = r.GetValue(saveEvery),
                LogEvery = r.GetValue(logEvery), MaxConsecutiveNanSteps = r.GetValue(maxNan),
            };
            var job = new TrainJob(r.GetValue(model)!, r.GetValue(data)!, r.GetValue(objective)!, r.GetValue(method)!, r.GetValue(policy),
                r.GetValue(ratio), r.GetValue(freezeEmb), r.GetValue(freezeList), r.GetValue(heldOut), r.GetValue(output)!, r.GetValue(resume),
                r.GetValue(device)!, r.GetValue(threads), options);
            return Execute(job, r.GetValue(quiet), stdout, stderr, cancel).Code;
        });
        return cmd;
    }

    /// <summary>One training run as the options describe it.</summary>
    internal sealed record TrainJob(string Model, string Data, string Objective, string Method, string? Policy, double Ratio, bool FreezeEmbeddings,
        string? FreezeList, double HeldOut, string Out, bool Resume, string Device, int Threads, TrainingOptions Options);

    /// <summary>Runs <paramref name="job"/>; returns the exit code and the run report written to run.json.</summary>
    internal static (int Code, JsonObject Report) Execute(TrainJob job, bool quiet, TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        var inv = CultureInfo.InvariantCulture;
        // Everything that can be wrong with the input is checked before any work or any write.
        job.Options.Validate();
        if (job.Objective != "lm") throw new ArgumentException($"unknown objective '{job.Objective}'; this version trains 'lm'");
        var policy = ResolvePolicy(job);
        OutputGuard.RequireDistinct(job.Out, job.Model);
        var config = LlamaConfig.Load(Path.Combine(job.Model, "config.json"));
        var tokenizer = Tokenizers.Load(job.Model);
        if (tokenizer.VocabSize > config.VocabSize)
            throw new InvalidInputException(job.Model, $"the tokenizer has {tokenizer.VocabSize} ids but config.json's vocab_size is {config.VocabSize}");
        var frozen = policy.SelectFrozen(LlamaModel.TensorNames(config));
        var corpus = TokenCorpus.FromTextFile(job.Data, tokenizer, job.HeldOut);
        var train = new LmBatcher(corpus.Train, job.Options.Batch, job.Options.Seq, job.Options.Seed, job.Data);
        LmBatcher? eval = corpus.HeldOut.Length > job.Options.Batch * job.Options.Seq
            ? new LmBatcher(corpus.HeldOut, job.Options.Batch, job.Options.Seq, job.Options.Seed, job.Data + " (held-out part)", shuffle: false)
            : null;
        if (eval is null && !quiet) stderr.WriteLine($"warning: the held-out part of {job.Data} is shorter than one batch; no evaluation");

        using var backend = Devices.Create(job.Device, job.Threads);
        using var llama = LlamaModel.Create(backend, config, new LlamaModelOptions(job.Options.Batch, job.Options.Seq, frozen));
        using (var weights = SafeTensorsCheckpoint.Open(job.Model)) llama.LoadWeights(weights);

        var frozenNames = new JsonArray(frozen.OrderBy(n => n, StringComparer.Ordinal).Select(n => (JsonNode)n).ToArray());
        var fingerprint = new JsonObject
        {
            ["model_config"] = JsonNode.Parse(config.ToJson()),
            ["frozen"] = frozenNames.DeepClone(),
            ["policy"] = policy.Describe(),
            ["data_sha256"] = corpus.Sha256,
        };
        double costBound = LlamaCostModel.CostBound(config, job.Options.Seq, frozen);
        if (!quiet)
        {
            var s = llama.Parameters;
            stdout.WriteLine($"device {backend.DeviceName}");
            stdout.WriteLine(string.Format(inv, "{0}: {1:N0} of {2:N0} parameters trainable ({3} tensors frozen), cost bound {4:F3}, arena {5:F1} MiB",
                job.Method, s.TrainableCount, s.TrainableCount + s.FrozenCount, frozen.Count, costBound, llama.Arena.ReservedBytes / 1048576.0));
        }
        var trainer = new Trainer(llama, train, eval, job.Options, job.Out, fingerprint);
        var progress = quiet ? null : new SyncProgress<TrainingProgress>(p => stdout.WriteLine(Format(p)));
        var result = trainer.Run(job.Resume, progress, cancel);

        File.WriteAllText(Path.Combine(job.Out, "config.json"), config.ToJson());
        tokenizer.Save(job.Out);
        var info = new JsonObject
        {
            ["method"] = job.Method,
            ["objective"] = job.Objective,
            ["policy"] = policy.Describe(),
            ["seed"] = job.Options.Seed,
            ["frozen"] = frozenNames,
            ["cost_bound"] = costBound,
            ["device"] = backend.DeviceName,
            ["config"] = ResolvedConfig(job, corpus, tokenizer),
            ["model_config"] = JsonNode.Parse(config.ToJson()),
        };
        var report = RunReport.Build(info, result, llama.Parameters, llama.ActivationBytes);
        RunReport.Write(Path.Combine(job.Out, "run.json"), report);
        stdout.WriteLine(string.Format(inv, "{0} {1} steps: final loss {2}, {3:F1} ms/step (median), {4:N0} tokens/s, {5} skipped; wrote {6}",
            result.Cancelled ? "cancelled after" : "done:", result.StepsDone, result.Losses.LastOrDefault()?.ToString("F4", inv) ?? "n/a",
            result.StepMsMedian, result.TokensPerSecond, result.SkippedSteps, job.Out));
        return (result.Cancelled ? Program.ExitCancelled : Program.ExitOk, report);
    }

    private static FreezePolicy ResolvePolicy(TrainJob job) => job.Method switch
    {
        "fft" when job.Policy is not null and not "none" => throw new ArgumentException($"--method fft freezes nothing; --policy {job.Policy} needs --method hft"),
        "fft" => FreezePolicy.None,
        "hft" => FreezePolicy.Create(job.Policy ?? "hft", job.Options.Seed, job.Ratio, job.FreezeEmbeddings, job.FreezeList),
        _ => throw new ArgumentException($"unknown method '{job.Method}'; expected fft or hft"),
    };

    private static JsonObject ResolvedConfig(TrainJob job, TokenCorpus corpus, Runtime.Data.ITokenizer tokenizer)
    {
        var o = job.Options;
        var asm = typeof(TrainCommand).Assembly;
        string version = asm.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
        int plus = version.IndexOf('+');
        return new JsonObject
        {
            ["model"] = Path.GetFullPath(job.Model), ["data"] = Path.GetFullPath(job.Data), ["data_sha256"] = corpus.Sha256,
            ["data_tokens_train"] = corpus.Train.Length, ["data_tokens_held_out"] = corpus.HeldOut.Length, ["held_out"] = job.HeldOut,
            ["tokenizer"] = tokenizer.Kind, ["objective"] = job.Objective, ["method"] = job.Method, ["policy"] = job.Policy ?? (job.Method == "hft" ? "hft" : "none"),
            ["trainable_ratio"] = job.Ratio, ["freeze_embeddings"] = job.FreezeEmbeddings, ["freeze_list"] = job.FreezeList,
            ["seed"] = o.Seed, ["steps"] = o.Steps, ["batch"] = o.Batch, ["seq"] = o.Seq, ["accum"] = o.GradAccum, ["lr"] = o.Lr,
            ["min_lr"] = o.MinLr, ["warmup"] = o.EffectiveWarmup, ["weight_decay"] = o.WeightDecay, ["beta1"] = o.Beta1, ["beta2"] = o.Beta2,
            ["eps"] = o.Eps, ["clip"] = o.ClipNorm, ["eval_every"] = o.EvalEvery, ["eval_batches"] = o.EvalBatches, ["save_every"] = o.SaveEvery,
            ["keep_checkpoints"] = o.KeepCheckpoints, ["log_every"] = o.LogEvery, ["max_nan_steps"] = o.MaxConsecutiveNanSteps,
            ["device"] = job.Device, ["threads"] = job.Threads, ["out"] = Path.GetFullPath(job.Out), ["resume"] = job.Resume,
            ["tool_version"] = plus < 0 ? version : version[..plus],
            ["git_commit"] = plus < 0 ? "unknown" : version[(plus + 1)..],
        };
    }

    private static string Format(TrainingProgress p)
    {
        var inv = CultureInfo.InvariantCulture;
        string loss = p.Loss is float l ? l.ToString("F4", inv) : "skipped";
        string eval = p.EvalLoss is double e ? string.Format(inv, "  eval {0:F4}", e) : "";
        return string.Format(inv, "step {0,5}/{1}  loss {2}  lr {3:0.00e+00}  gnorm {4:F3}  {5,9:N0} tok/s  {6,8:F1} ms{7}",
            p.Step, p.Steps, loss, p.Lr, p.GradNorm, p.TokensPerSecond, p.StepMs, eval);
    }
}

/// <summary>An IProgress that calls its handler on the reporting thread (Progress&lt;T&gt; would post to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> handler) : IProgress<T>
{
    public void Report(T value) => handler(value);
}
