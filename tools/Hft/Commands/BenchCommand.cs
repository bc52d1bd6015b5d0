using System.CommandLine;
using System.Text.Json;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft bench</c>: GEMM, copy, AdamW, attention and training-step figures of a device (see <see cref="Benchmarks"/>).</summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter stdout)
    {
        var json = new Option<string?>("--json") { Description = "Write the figures to this JSON file" };
        var model = new Option<string?>("--model") { Description = "Training-step model: base (134M, 8 x 1024) or small (default: base on a GPU, small on a CPU)" };
        var quick = new Option<bool>("--quick") { Description = "Fewer sizes and repeats" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("bench", "Measure GEMM TFLOP/s (ours and cuBLAS), copy and AdamW bandwidth, attention, and FFT vs HFT training steps")
        {
            json, model, quick, device, threads,
        };
        cmd.SetAction(r =>
        {
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads));
            var report = ConsoleDisplay.Status(stdout, false, "benchmarking", log => Benchmarks.Run(backend, new BenchOptions(r.GetValue(model), r.GetValue(quick)), log));
            stdout.WriteLine();
            stdout.Write(Benchmarks.Markdown(report));
            if (r.GetValue(json) is { } path) File.WriteAllText(path, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return Program.ExitOk;
        });
        return cmd;
    }
}
