using BenchmarkDotNet.Running;

namespace HftRuntime.Bench;

/// <summary>Runs the benchmarks named on the command line (BenchmarkDotNet switcher).</summary>
public static class Program
{
    /// <summary>Entry point.</summary>
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
