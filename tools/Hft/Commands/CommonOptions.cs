using System.CommandLine;
using HftRuntime.Runtime;

namespace HftRuntime.Cli.Commands;

/// <summary>Options several commands share.</summary>
internal static class CommonOptions
{
    /// <summary><c>--device</c>: where to run.</summary>
    public static Option<string> Device() => new("--device")
    {
        Description = "Where to run: " + string.Join(", ", Devices.Names),
        DefaultValueFactory = _ => "auto",
    };

    /// <summary><c>--threads</c>: CPU threads.</summary>
    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU threads (0: all cores, or HFT_THREADS)",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>
    /// --precision: fp32 or bf16, and with <paramref name="auto"/> also auto (bf16 on CUDA, fp32 elsewhere; see
    /// <see cref="PrecisionNames.Resolve"/>). The default is <paramref name="defaultValue"/>, else auto where it is
    /// accepted and fp32 otherwise.
    /// </summary>
    public static Option<string> Precision(bool auto = false, string? defaultValue = null) => new("--precision")
    {
        Description = "Arithmetic: fp32 (the reference) or bf16 (bf16 matrix products with fp32 accumulation, fp32 masters for trainable tensors only)" +
            (auto ? "; auto: bf16 on a CUDA device, fp32 elsewhere" : ""),
        DefaultValueFactory = _ => defaultValue ?? (auto ? "auto" : "fp32"),
        Validators =
        {
            r =>
            {
                var text = r.GetValueOrDefault<string>();
                if (auto && PrecisionNames.IsAuto(text)) return;
                try { PrecisionNames.Parse(text); }
                catch (ArgumentException e) { r.AddError(auto ? $"unknown precision '{text}': expected fp32, bf16 or auto" : e.Message); }
            },
        },
    };

    /// <summary>The parsed value of a <see cref="Precision(bool, string)"/> option without "auto".</summary>
    public static Runtime.Precision ParsePrecision(string text) => PrecisionNames.Parse(text);
}
