using System.Globalization;
using HftRuntime.Model.Training;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Training;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft train --stages FILE</c>: continual learning over a sequence of stages.</summary>
internal static class StagesCommand
{
    /// <summary>Runs the stages of <c>job.Data</c> (the stages.json path).</summary>
    public static int Execute(TrainCommand.TrainJob job, bool quiet, TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        job.Options.Validate();
        ContinualLearning.ReadStages(job.Data); // every stage checked before any work
        if (job.Method == "fft" && job.Policy is not null and not "none")
            throw new ArgumentException($"--method fft freezes nothing; --policy {job.Policy} needs --method hft");
        if (job.Method is not ("fft" or "hft")) throw new ArgumentException($"unknown method '{job.Method}'; expected fft or hft");
        string policyName = job.Method == "fft" ? "none" : job.Policy ?? "hft";
        FreezePolicy ForStage(int i) => FreezePolicy.Create(policyName, Rng.Derive(job.Options.Seed, i), job.Ratio, job.FreezeEmbeddings, job.FreezeList);
        ForStage(0); // validates ratio, list, name
        if (!job.Resume) OutputGuard.RequireFresh(job.Out);
        using var backend = Devices.Create(job.Device, job.Threads);
        var request = new StagesRequest
        {
            ModelDirectory = job.Model, StagesFile = job.Data, OutputDirectory = job.Out, PolicyForStage = ForStage, Options = job.Options,
            HeldOutFraction = job.HeldOut, SkipBadLines = job.SkipBadLines, Beta = job.Beta, Resume = job.Resume,
            Precision = TrainCommand.ResolvePrecision(job, backend.Name, stderr),
        };
        var report = ConsoleDisplay.Run(stdout, quiet, "stages", progress => ContinualLearning.Run(backend, request, progress, cancel, quiet ? null : stdout.WriteLine));
        var inv = CultureInfo.InvariantCulture;
        if (report["cancelled"]!.GetValue<bool>()) return Program.ExitCancelled;
        stdout.WriteLine(string.Format(inv, "done: {0} stages; op {1:F4}, bwt {2}; wrote {3}", report["stages"]!.AsArray().Count,
            report["op"]!.GetValue<double>(), report["bwt"] is { } b ? b.GetValue<double>().ToString("F4", inv) : "n/a (one stage)", job.Out));
        return Program.ExitOk;
    }
}
