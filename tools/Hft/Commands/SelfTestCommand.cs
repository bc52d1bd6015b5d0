using System.CommandLine;
using System.Globalization;
using HftRuntime.Kernels;
using HftRuntime.Kernels.Ilgpu;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Diagnostics;

namespace HftRuntime.Cli.Commands;

/// <summary><c>hft selftest</c>: every operation of a device against the CPU back-end, from the command line.</summary>
internal static class SelfTestCommand
{
    public static Command Create(TextWriter stdout)
    {
        var device = new Option<string>("--device")
        {
            Description = "Device to check against the CPU back-end: auto (cuda when there is a GPU, else ilgpu-cpu), cuda, ilgpu-cpu or cpu",
            DefaultValueFactory = _ => "auto",
        };
        device.AcceptOnlyFromAmong("auto", "cuda", "ilgpu-cpu", "cpu");
        var shapes = new Option<string>("--shapes")
        {
            Description = "small: odd shapes of every operation; all: also the 134M-model training shapes with timings; auto: all on cuda, small elsewhere",
            DefaultValueFactory = _ => "auto",
        };
        shapes.AcceptOnlyFromAmong("auto", "small", "all");
        var only = new Option<string?>("--only") { Description = "Run only the cases whose name contains this text (for example \"matmul\")" };
        var skip = new Option<string[]>("--skip")
        {
            Description = "Leave out the cases whose name contains this text (repeatable; for example the PTX GEMMs a separate run checked)",
            DefaultValueFactory = _ => [],
        };
        var threads = CommonOptions.Threads();
        var cmd = new Command("selftest", "Check every kernel of a device against the CPU reference on random inputs (outputs NaN-poisoned); exit code 1 on any failure")
        {
            device, shapes, only, skip, threads,
        };
        cmd.SetAction(r => Run(r.GetValue(device)!, r.GetValue(shapes)!, r.GetValue(only), r.GetValue(skip)!, r.GetValue(threads), stdout));
        return cmd;
    }

    private static int Run(string device, string shapes, string? only, string[] skip, int threads, TextWriter o)
    {
        using var backend = CreateBackend(device, threads);
        bool large = shapes == "all" || (shapes == "auto" && backend.Name == "cuda");
        bool timings = backend.Name != "ilgpu-cpu";
        var cases = SelfTest.Cases(large).Where(c => only is null || c.Name.Contains(only, StringComparison.OrdinalIgnoreCase))
            .Where(c => !skip.Any(s => c.Name.Contains(s, StringComparison.OrdinalIgnoreCase))).ToArray();
        if (cases.Length == 0) throw new ArgumentException($"no self-test case matches --only '{only}'{(skip.Length > 0 ? " without --skip " + string.Join(", ", skip) : "")}");

        o.WriteLine($"device    {backend.DeviceName} ({backend.Name})");
        o.WriteLine($"reference cpu back-end; {cases.Length} cases, {(large ? "small and training shapes" : "small shapes")}{(timings ? ", device times per call" : "")}");
        o.WriteLine($"{"operation",-32}  {"shape",-26}  {"rel_err",9}  {"tol",7}  {"ms",9}  {"GFLOP/s",9}  result");
        using var reference = new Kernels.Cpu.CpuBackend(threads);
        int total = 0, failed = 0;
        foreach (var c in cases)
        {
            foreach (var row in c.Run(backend, reference, timings))
            {
                total++;
                if (!row.Pass) failed++;
                o.WriteLine(Format(row));
            }
            o.Flush();
        }
        // A PTX GEMM form that failed its first-use check falls back to the simple kernel, so its cases pass: fail here.
        if (backend is IlgpuBackend ib)
            foreach (var variant in IlgpuBackend.PtxVariants)
            {
                string kernel = IlgpuBackend.NameOf(variant), status = ib.PtxStatus(variant)!;
                if (!cases.Any(c => SelfTest.IsCaseOf(c.Operation, kernel))) continue;
                o.WriteLine($"{kernel,-9} {status}");
                if (status.Contains("failed", StringComparison.Ordinal)) failed++;
            }
        o.WriteLine(failed == 0 ? $"PASS: {total} checks within tolerance" : $"FAIL: {failed} of {total} checks out of tolerance");
        return failed == 0 ? Program.ExitOk : Program.ExitCheckFailed;
    }

    private static Backend CreateBackend(string device, int threads) => device switch
    {
        "auto" => (Backend?)IlgpuBackend.TryCreateCuda() ?? IlgpuBackend.CreateCpu(),
        _ => Devices.Create(device, threads),
    };

    /// <summary>One table row.</summary>
    public static string Format(SelfTestRow r)
    {
        var inv = CultureInfo.InvariantCulture;
        string err = double.IsPositiveInfinity(r.RelativeError) ? "NaN/inf" : r.RelativeError.ToString("0.00e+00", inv);
        string tol = r.Tolerance == 0 ? "exact" : r.Tolerance.ToString("0e+00", inv);
        string ms = r.Milliseconds is { } t ? t.ToString(t < 10 ? "0.000" : "0.0", inv) : "-";
        string gf = r.Gflops is { } g ? g.ToString("0.0", inv) : "-";
        return string.Format(inv, "{0,-32}  {1,-26}  {2,9}  {3,7}  {4,9}  {5,9}  {6}", r.Operation, r.Shape, err, tol, ms, gf, r.Pass ? "ok" : "FAIL");
    }
}
