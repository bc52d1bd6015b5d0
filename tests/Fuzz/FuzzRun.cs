using System.Diagnostics;
using System.Globalization;
using HftRuntime.Runtime;
using NUnit.Framework;

namespace HftRuntime.Tests.Fuzz;

/// <summary>
/// Settings of the fuzz tests, from the environment: <c>HFT_FUZZ_ITERATIONS</c> (inputs per test instead of the CI
/// default, e.g. 100000 for a long local run), <c>HFT_FUZZ_SEED</c> (the base seed; CI uses the fixed
/// <see cref="DefaultSeed"/>, so every run sees the same inputs), <c>HFT_FUZZ_ITERATION</c> (run only that input: the
/// reproduction of a failure) and <c>HFT_FUZZ_DEADLINE_S</c> (seconds one input may take before it counts as a hang).
/// </summary>
public static class FuzzSettings
{
    /// <summary>The base seed CI runs with.</summary>
    public const int DefaultSeed = 20_251_126;

    /// <summary>The base seed of this run.</summary>
    public static int BaseSeed => Int("HFT_FUZZ_SEED") ?? DefaultSeed;

    /// <summary>The number of inputs of a test: <c>HFT_FUZZ_ITERATIONS</c> when set, else <paramref name="ciDefault"/>.</summary>
    public static int Iterations(int ciDefault) => Int("HFT_FUZZ_ITERATIONS") ?? ciDefault;

    /// <summary>The only iteration to run, when <c>HFT_FUZZ_ITERATION</c> is set.</summary>
    public static int? Only => Int("HFT_FUZZ_ITERATION");

    /// <summary>How long one input may take (default 20 s: a hang, not a slow machine).</summary>
    public static TimeSpan Deadline => TimeSpan.FromSeconds(Int("HFT_FUZZ_DEADLINE_S") ?? 20);

    private static int? Int(string name) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : null;
}

/// <summary>
/// Runs the inputs of one fuzz test and collects what went wrong. Each input runs on a worker task with a deadline
/// (after a hang no further input runs); its allocations are measured on that thread with
/// <see cref="GC.GetAllocatedBytesForCurrentThread"/> and must stay within the bound the test gives; the only exception
/// allowed to escape is <see cref="InvalidInputException"/>, whose message must name the input's file. (The tests
/// pass valid arguments, so an <see cref="ArgumentException"/> escaping is a bug too: it can only come from the
/// data.) Failures are gathered (up to 20), their inputs saved under the test's work directory, and reported together.
/// </summary>
public sealed class FuzzRun
{
    private const int MaxFailures = 20;

    private readonly string _name;
    private readonly List<string> _failures = new();
    private readonly Stopwatch _total = Stopwatch.StartNew();
    private int _inputs, _accepted, _rejected;
    private bool _hung;
    private long _maxAllocated;
    private double _maxRatio, _maxMs;
    private int _slowest = -1, _hungriest = -1;
    private string _slowestInput = "", _hungriestInput = "";

    /// <summary>A run named <paramref name="name"/> (the name seeds the inputs, so keep it stable).</summary>
    public FuzzRun(string name) => _name = name;

    /// <summary>How long one input may take (default <see cref="FuzzSettings.Deadline"/>).</summary>
    public TimeSpan Deadline { get; init; } = FuzzSettings.Deadline;

    /// <summary>The failures so far, each with its mutations and the file its input was saved to.</summary>
    public IReadOnlyList<string> Failures => _failures;

    /// <summary>The inputs checked so far.</summary>
    public int Inputs => _inputs;

    /// <summary>The iterations to run: 0 .. n − 1 (or only <c>HFT_FUZZ_ITERATION</c>).</summary>
    public IEnumerable<int> Iterations(int ciDefault)
    {
        if (FuzzSettings.Only is int only)
        {
            yield return only;
            yield break;
        }
        int n = FuzzSettings.Iterations(ciDefault);
        for (int i = 0; i < n && _failures.Count < MaxFailures && !_hung; i++) yield return i;
    }

    /// <summary>The mutator of one iteration.</summary>
    public Mutator NewMutator(int iteration, params string[] extraStrings) =>
        new(Mutator.SeedFor(FuzzSettings.BaseSeed, _name, iteration), extraStrings);

    /// <summary>
    /// Runs <paramref name="body"/> (the reader on the input, then whatever exercises what it returned) and checks it:
    /// it finishes within the deadline, allocates at most <paramref name="allocationBound"/> bytes, and either succeeds
    /// or throws an <see cref="InvalidInputException"/> whose message contains <paramref name="source"/>.
    /// <paramref name="input"/> and <paramref name="extension"/> are used to save a failing input.
    /// </summary>
    public void Check(int iteration, Mutator mutator, byte[] input, string extension, long allocationBound, string source, Action body)
    {
        _inputs++;
        long allocated = 0;
        Exception? error = null;
        var clock = Stopwatch.StartNew();
        var task = Task.Factory.StartNew(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                body();
            }
            catch (Exception e)
            {
                error = e;
            }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        }, CancellationToken.None, TaskCreationOptions.DenyChildAttach, TaskScheduler.Default);

        if (!task.Wait(Deadline))
        {
            // The worker cannot be stopped; the run ends here (Iterations yields no more) and Finish reports it.
            _hung = true;
            Fail(iteration, mutator, input, extension, $"did not finish within {Deadline.TotalSeconds} s (a hang)");
            return;
        }
        double ms = clock.Elapsed.TotalMilliseconds;
        if (ms > _maxMs) { _maxMs = ms; _slowest = iteration; _slowestInput = $"{input.Length:N0} bytes: {mutator.Describe()}"; }
        if (allocated > _maxAllocated) _maxAllocated = allocated;
        double ratio = (double)allocated / allocationBound;
        if (ratio > _maxRatio)
        {
            _maxRatio = ratio;
            _hungriest = iteration;
            _hungriestInput = $"{input.Length:N0} bytes, {allocated:N0} allocated: {mutator.Describe()}";
        }

        if (allocated > allocationBound)
        {
            Fail(iteration, mutator, input, extension,
                $"allocated {allocated:N0} bytes, over the bound of {allocationBound:N0} for {input.Length:N0} bytes of input" +
                (error is null ? "" : $" (and threw {error.GetType().Name}: {error.Message})"));
            return;
        }
        switch (error)
        {
            case null:
                _accepted++;
                break;
            case InvalidInputException e when e.Message.Contains(source, StringComparison.Ordinal):
                _rejected++;
                break;
            case InvalidInputException e:
                Fail(iteration, mutator, input, extension, $"InvalidInputException whose message does not name '{source}': {e.Message}");
                break;
            default:
                Fail(iteration, mutator, input, extension, $"{error.GetType().FullName} escaped: {error.Message}\n{Trim(error.StackTrace)}");
                break;
        }
    }

    /// <summary>Records a failure found by a test's own checks (a property of an accepted input that does not hold).</summary>
    public void Fail(int iteration, Mutator mutator, byte[] input, string extension, string what)
    {
        string dir = Path.Combine(TestContext.CurrentContext.WorkDirectory, "fuzz-failures");
        Directory.CreateDirectory(dir);
        string file = Path.Combine(dir, $"{_name}-{iteration}{extension}");
        File.WriteAllBytes(file, input);
        _failures.Add($"[{_name} #{iteration}] {what}\n  mutations: {mutator.Describe()}\n  input: {file} " +
            $"(reproduce: HFT_FUZZ_ITERATION={iteration} HFT_FUZZ_SEED={FuzzSettings.BaseSeed})");
    }

    /// <summary>Prints the statistics and fails the test if any input failed.</summary>
    public void Finish()
    {
        TestContext.Out.WriteLine(
            $"{_name}: {_inputs} inputs in {_total.Elapsed.TotalSeconds:F1} s: {_accepted} accepted, {_rejected} rejected " +
            $"(InvalidInputException), {_failures.Count} failures; slowest #{_slowest} {_maxMs:F1} ms; most allocated " +
            $"{_maxAllocated:N0} bytes; highest share of its bound {_maxRatio:P0} (#{_hungriest})\n" +
            $"  slowest: {Clip(_slowestInput)}\n  highest share of its bound: {Clip(_hungriestInput)}");
        if (_failures.Count > 0) Assert.Fail(Report());
        if (FuzzSettings.Only is null)
        {
            // A mutator that only produced rejected inputs (or only accepted ones) would test little.
            Assert.That(_accepted, Is.GreaterThan(0), $"{_name}: no mutated input was accepted");
            Assert.That(_rejected, Is.GreaterThan(0), $"{_name}: no mutated input was rejected");
        }
    }

    private string Report() => $"{_failures.Count} of {_inputs} fuzz inputs failed:\n" + string.Join("\n", _failures);

    private static string Clip(string s) => s.Length <= 400 ? s : s[..400] + "...";

    private static string Trim(string? stack)
    {
        if (stack is null) return "";
        var lines = stack.Split('\n');
        return string.Join("\n", lines.Take(8));
    }
}
