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
}
