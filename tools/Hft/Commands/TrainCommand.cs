using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using HftRuntime.Model;
using HftRuntime.Model.Training;
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
        var data = new Option<string?>("--data") { Description = "Training data: plain UTF-8 text or {\"text\"} JSONL (lm), {\"prompt\",\"response\"} or {\"messages\"} JSONL (sft), {\"prompt\",\"chosen\",\"rejected\"} JSONL (dpo)" };
        var objective = new Option<string>("--objective") { Description = "lm, sft or dpo", DefaultValueFactory = _ => "lm" };
        var stages = new Option<string?>("--stages") { Description = "Continual learning: a stages.json file ({\"stages\": [{\"data\", \"objective\", \"steps\", \"lr\"}, ...]}); replaces --data, --objective, --steps and --lr" };
        var beta = new Option<double>("--beta") { Description = "DPO's beta", DefaultValueFactory = _ => 0.1 };
        var reference = new Option<string?>("--reference") { Description = "DPO reference model directory (default: --model)" };
        var precision = CommonOptions.Precision(auto: true, defaultValue: "fp32");
        precision.Description = "Arithmetic: fp32 (the default; the reference that hft verify checks), bf16 (bf16 matrix products with fp32 " +
            "accumulation, fp32 masters for trainable tensors only; the tensor cores on CUDA) or auto (bf16 on a CUDA device, fp32 elsewhere; " +
            "with --resume, the precision the run was saved in)";
        var checkpointAct = new Option<bool>("--checkpoint-activations") { Description = "Recompute each layer's activations in the backward pass (less memory, about a third more compute)" };
        var skipBad = new Option<bool>("--skip-bad-lines") { Description = "Skip malformed JSONL lines (counted in run.json) instead of failing" };
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
            model, data, objective, stages, beta, reference, skipBad, checkpointAct, precision, method, policy, ratio, freezeEmb, freezeList, seed, steps, batch, seq, accum, lr, minLr, warmup, wd,
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
            string? stagesFile = r.GetValue(stages), dataFile = r.GetValue(data);
            if (stagesFile is null && dataFile is null) throw new ArgumentException("give --data (or --stages for continual learning)");
            if (stagesFile is not null && dataFile is not null) throw new ArgumentException("--stages gives each stage its data; drop --data");
            var job = new TrainJob(r.GetValue(model)!, dataFile ?? stagesFile!, r.GetValue(objective)!, r.GetValue(method)!, r.GetValue(policy),
                r.GetValue(ratio), r.GetValue(freezeEmb), r.GetValue(freezeList), r.GetValue(heldOut), r.GetValue(output)!, r.GetValue(resume),
                r.GetValue(device)!, r.GetValue(threads), options, r.GetValue(beta), r.GetValue(reference), r.GetValue(skipBad), r.GetValue(checkpointAct),
                r.GetValue(precision)!, PrecisionGiven: r.GetResult(precision) is { Implicit: false });
            return stagesFile is null ? Execute(job, r.GetValue(quiet), stdout, stderr, cancel).Code
                : StagesCommand.Execute(job, r.GetValue(quiet), stdout, stderr, cancel);
        });
        return cmd;
    }

    /// <summary>One training run as the options describe it.</summary>
    internal sealed record TrainJob(string Model, string Data, string Objective, string Method, string? Policy, double Ratio, bool FreezeEmbeddings,
        string? FreezeList, double HeldOut, string Out, bool Resume, string Device, int Threads, TrainingOptions Options,
        double Beta = 0.1, string? Reference = null, bool SkipBadLines = false, bool CheckpointActivations = false, string Precision = "fp32",
        bool PrecisionGiven = true);

    /// <summary>Runs <paramref name="job"/>; returns the exit code and the run report written to run.json.</summary>
    internal static (int Code, JsonObject Report) Execute(TrainJob job, bool quiet, TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        var policy = ResolvePolicy(job);
        job.Options.Validate();
        using var backend = Devices.Create(job.Device, job.Threads);
        var precision = ResolvePrecision(job, backend.Name, stderr);
        var request = new FineTuneRequest
        {
            ModelDirectory = job.Model, DataPath = job.Data, OutputDirectory = job.Out, Objective = job.Objective,
            Policy = policy, Options = job.Options, HeldOutFraction = job.HeldOut, SkipBadLines = job.SkipBadLines,
            Beta = job.Beta, ReferenceDirectory = job.Reference, Resume = job.Resume, CheckpointActivations = job.CheckpointActivations, Precision = precision,
            ExtraConfig = new JsonObject
            {
                ["device"] = job.Device, ["threads"] = job.Threads, ["trainable_ratio"] = job.Ratio,
                ["freeze_embeddings"] = job.FreezeEmbeddings, ["freeze_list"] = job.FreezeList,
            },
        };
        return Run(backend, request, quiet, stdout, stderr, cancel);
    }

    /// <summary>
    /// The job's precision on a back-end: fp32 or bf16 as given; auto as the run being resumed was saved (when it has
    /// a checkpoint of its own; the stages of continual learning have theirs in their folders), else bf16 on CUDA and
    /// fp32 elsewhere. Warns on <paramref name="stderr"/> when a CUDA run is left at the default fp32.
    /// </summary>
    internal static Precision ResolvePrecision(TrainJob job, string backendName, TextWriter stderr)
    {
        var precision = PrecisionNames.IsAuto(job.Precision) && job.Resume && FineTuning.SavedPrecision(job.Out) is { } saved
            ? saved
            : PrecisionNames.Resolve(job.Precision, backendName);
        if (!job.PrecisionGiven && backendName == "cuda" && precision == Precision.Fp32)
            stderr.WriteLine("warning: training in fp32 on the CUDA cores (the default, the reference precision); --precision bf16 or auto " +
                "trains on the tensor cores, 18x faster for the 134M benchmark model's step on an H100 (docs/gpu-runs.md, run 5)");
        return precision;
    }

    /// <summary>Runs a request on a back-end, printing progress unless <paramref name="quiet"/>.</summary>
    internal static (int Code, JsonObject Report) Run(Kernels.Backend backend, FineTuneRequest request, bool quiet, TextWriter stdout, TextWriter stderr,
        CancellationToken cancel)
    {
        var inv = CultureInfo.InvariantCulture;
        var r = ConsoleDisplay.Run(stdout, quiet, $"{request.Method} {request.Objective}", progress =>
            FineTuning.Run(backend, request, progress, cancel, quiet ? null : line => (line.StartsWith("warning", StringComparison.Ordinal) ? stderr : stdout).WriteLine(line)));
        var t = r.Training;
        stdout.WriteLine(string.Format(inv, "{0} {1} steps: final loss {2}, {3:F1} ms/step (median), {4:N0} tokens/s, {5} skipped; wrote {6}",
            t.Cancelled ? "cancelled after" : "done:", t.StepsDone, t.Losses.LastOrDefault()?.ToString("F4", inv) ?? "n/a",
            t.StepMsMedian, t.TokensPerSecond, t.SkippedSteps, request.OutputDirectory));
        return (t.Cancelled ? Program.ExitCancelled : Program.ExitOk, r.Report);
    }

    private static FreezePolicy ResolvePolicy(TrainJob job) => job.Method switch
    {
        "fft" when job.Policy is not null and not "none" => throw new ArgumentException($"--method fft freezes nothing; --policy {job.Policy} needs --method hft"),
        "fft" => FreezePolicy.None,
        "hft" => FreezePolicy.Create(job.Policy ?? "hft", job.Options.Seed, job.Ratio, job.FreezeEmbeddings, job.FreezeList),
        _ => throw new ArgumentException($"unknown method '{job.Method}'; expected fft or hft"),
    };

}

/// <summary>An IProgress that calls its handler on the reporting thread (Progress&lt;T&gt; would post to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> handler) : IProgress<T>
{
    public void Report(T value) => handler(value);
}
