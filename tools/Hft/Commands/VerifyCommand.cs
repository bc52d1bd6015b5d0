using System.CommandLine;
using System.Globalization;
using HftRuntime.Model.Diagnostics;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft verify</c>: checks the model against Hugging Face reference cases.</summary>
internal static class VerifyCommand
{
    public static Command Create(TextWriter stdout)
    {
        var golden = new Option<string[]>("--golden")
        {
            Description = "A reference case directory (config.json, model.safetensors, golden.json, golden.safetensors); repeat for several",
            Required = true,
            AllowMultipleArgumentsPerToken = true,
        };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var precision = CommonOptions.Precision();
        var cmd = new Command("verify", "Check loss, logits, every gradient, AdamW steps and DPO against a Hugging Face reference case")
        {
            golden, device, threads, precision,
        };
        cmd.SetAction(r => Run(r.GetValue(golden)!, r.GetValue(device)!, r.GetValue(threads), CommonOptions.ParsePrecision(r.GetValue(precision)!), stdout));
        return cmd;
    }

    private static int Run(string[] cases, string device, int threads, Precision precision, TextWriter stdout)
    {
        using var backend = Devices.Create(device, threads);
        bool all = true;
        foreach (var dir in cases)
        {
            var report = ConsoleDisplay.Status(stdout, false, $"verifying {Path.GetFileName(dir)}", _ => GoldenVerifier.Run(dir, backend, precision));
            Print(report, stdout);
            all &= report.Passed;
        }
        return all ? Program.ExitOk : Program.ExitCheckFailed;
    }

    /// <summary>Prints one row per quantity and a summary line.</summary>
    public static void Print(VerifyReport report, TextWriter o)
    {
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine($"case   {report.Case}");
        o.WriteLine($"device {report.Device}");
        o.WriteLine($"precision {report.Precision.Name()}");
        int w = Math.Max(8, report.Rows.Max(r => r.Quantity.Length));
        o.WriteLine($"{"quantity".PadRight(w)}  {"rel_err",10}  {"max_abs",10}  {"tol",8}  result");
        foreach (var r in report.Rows)
            o.WriteLine(string.Format(inv, "{0}  {1,10}  {2,10}  {3,8}  {4}", r.Quantity.PadRight(w),
                r.RelativeError.ToString("0.00e+00", inv), r.MaxAbsError.ToString("0.00e+00", inv),
                r.Tolerance == 0 ? "bitwise" : r.Tolerance.ToString("0e+00", inv), r.Pass ? "ok" : "FAIL"));
        int failed = report.Rows.Count(r => !r.Pass);
        o.WriteLine(failed == 0 ? $"PASS: {report.Rows.Count} quantities within tolerance" : $"FAIL: {failed} of {report.Rows.Count} quantities out of tolerance");
        o.WriteLine();
    }
}
