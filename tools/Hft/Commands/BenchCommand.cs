using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary>
/// <c>hft bench</c>: GEMM, copy, AdamW, attention and training-step figures of a device (see <see cref="Benchmarks"/>);
/// with <c>--compare</c>, beside those of tools/pytorch_baseline.py. Exit code 1 when a measurement failed.
/// </summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter stdout)
    {
        var json = new Option<string?>("--json") { Description = "Write the figures to this JSON file" };
        var model = new Option<string?>("--model") { Description = "Training-step model: base (134M, 8 x 1024) or small (default: base on a GPU, small on a CPU)" };
        var quick = new Option<bool>("--quick") { Description = "Fewer sizes and repeats" };
        var compare = new Option<string?>("--compare") { Description = "The JSON of tools/pytorch_baseline.py: also print our figures beside PyTorch's (ours/torch ratios)" };
        var from = new Option<string?>("--from") { Description = "Take the figures from this earlier --json file instead of measuring (with --compare: compare only)" };
        var only = new Option<string?>("--only") { Description = "Measure only these parts, comma-separated: " + string.Join(", ", BenchOptions.Parts) };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("bench", "Measure GEMM TFLOP/s (ours in fp32 and bf16, and cuBLAS), copy and AdamW bandwidth, attention, and FFT vs HFT training steps in fp32 and bf16")
        {
            json, model, quick, compare, from, only, device, threads,
        };
        cmd.SetAction(r =>
        {
            // Read the PyTorch figures first: a wrong path should not cost a whole benchmark run.
            JsonObject? torch = r.GetValue(compare) is { } torchPath ? ReadObject(torchPath) : null;
            string[]? parts = r.GetValue(only)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parts?.FirstOrDefault(p => !BenchOptions.Parts.Contains(p)) is { } unknown)
                throw new ArgumentException($"--only: unknown part '{unknown}'; expected some of {string.Join(", ", BenchOptions.Parts)}");
            JsonObject report;
            if (r.GetValue(from) is { } fromPath)
            {
                report = ReadObject(fromPath);
            }
            else
            {
                using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads));
                string? path = r.GetValue(json);
                // The JSON is rewritten after each part, so that a run stopped by a timeout leaves what it measured.
                Action<JsonObject>? checkpoint = path is null ? null : partial =>
                {
                    // Written aside and moved over, so that a kill mid-write cannot leave a truncated file.
                    File.WriteAllText(path + ".tmp", partial.ToJsonString(Indented));
                    File.Move(path + ".tmp", path, overwrite: true);
                };
                report = ConsoleDisplay.Status(stdout, false, "benchmarking",
                    log => Benchmarks.Run(backend, new BenchOptions(r.GetValue(model), r.GetValue(quick), parts), log, checkpoint));
                stdout.WriteLine();
            }
            stdout.Write(BenchReport.Markdown(report));
            if (torch is not null)
            {
                stdout.WriteLine();
                stdout.Write(BenchReport.Compare(report, torch));
            }
            var errors = Benchmarks.Errors(report);
            if (errors.Count == 0) return Program.ExitOk;
            stdout.WriteLine();
            foreach (string e in errors) stdout.WriteLine($"failed: {e}");
            return Program.ExitCheckFailed;
        });
        return cmd;
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static JsonObject ReadObject(string path)
    {
        if (!File.Exists(path)) throw new InvalidInputException(path, "file not found");
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidInputException(path, "not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"not valid JSON: {e.Message}", e);
        }
    }
}
