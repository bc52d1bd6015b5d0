using System.Runtime.ExceptionServices;

namespace HftRuntime.Kernels.Cpu;

/// <summary>
/// A fixed set of worker threads for the CPU back-end's parallel loops. <see cref="For"/> takes an unmanaged
/// function pointer and a pointer to an argument struct on the caller's stack, so a parallel loop allocates
/// nothing. Chunks are handed out dynamically; the calling thread works too. A loop started from inside a
/// worker runs serially (no nested parallelism).
/// </summary>
public sealed unsafe class WorkerPool : IDisposable
{
    [ThreadStatic] private static bool t_inWorker;

    private readonly Thread[] _threads;
    private readonly SemaphoreSlim _start = new(0);
    private readonly object _doneGate = new(); // a caller that must block waits on this (allocated here, not lazily)
    private readonly object _gate = new();
    private delegate*<void*, int, int, void> _body;
    private void* _args;
    private int _total, _grain, _next, _pending;
    private ExceptionDispatchInfo? _error;
    private volatile bool _disposed;

    /// <summary>Creates a pool that runs loops on <paramref name="threads"/> threads in all (the caller included).</summary>
    public WorkerPool(int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "at least one thread");
        Threads = threads;
        _threads = new Thread[threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"hft-cpu-{i + 1}" };
            _threads[i].Start();
        }
    }

    /// <summary>Threads that run a loop, the caller included.</summary>
    public int Threads { get; }

    /// <summary>The default thread count: HFT_THREADS if set, else the processor count.</summary>
    public static int DefaultThreads =>
        int.TryParse(Environment.GetEnvironmentVariable("HFT_THREADS"), out int n) && n > 0 ? n : Environment.ProcessorCount;

    /// <summary>
    /// Runs body(args, start, end) over [0, total) in chunks of <paramref name="grain"/> items, in parallel, and
    /// returns when all are done. Rethrows the first exception a chunk threw.
    /// </summary>
    public void For(int total, int grain, delegate*<void*, int, int, void> body, void* args)
    {
        if (total <= 0) return;
        grain = Math.Max(1, grain);
        if (_threads.Length == 0 || total <= grain || t_inWorker)
        {
            body(args, 0, total);
            return;
        }
        lock (_gate)
        {
            _body = body; _args = args; _total = total; _grain = grain; _next = 0; _error = null;
            int helpers = Math.Min(_threads.Length, (total + grain - 1) / grain - 1);
            Volatile.Write(ref _pending, helpers);
            if (helpers > 0) _start.Release(helpers);
            bool was = t_inWorker;
            t_inWorker = true;
            try { Work(); } finally { t_inWorker = was; }
            if (helpers > 0) WaitForHelpers();
            _body = null; _args = null;
            _error?.Throw();
        }
    }

    private void Work()
    {
        try
        {
            while (true)
            {
                int s = Interlocked.Add(ref _next, _grain) - _grain;
                if (s >= _total) break;
                _body(_args, s, Math.Min(s + _grain, _total));
            }
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null);
            Volatile.Write(ref _next, _total);
        }
    }

    // Spins briefly, then blocks on a monitor. (ManualResetEventSlim allocates its lock object the first time a
    // wait blocks, which would break the no-allocation guarantee of a warm training step.)
    private void WaitForHelpers()
    {
        var spin = new SpinWait();
        while (Volatile.Read(ref _pending) > 0)
        {
            if (spin.NextSpinWillYield)
            {
                lock (_doneGate)
                    while (Volatile.Read(ref _pending) > 0) Monitor.Wait(_doneGate);
                return;
            }
            spin.SpinOnce();
        }
    }

    private void WorkerLoop()
    {
        t_inWorker = true;
        while (true)
        {
            _start.Wait();
            if (_disposed) return;
            Work();
            if (Interlocked.Decrement(ref _pending) == 0)
                lock (_doneGate) Monitor.PulseAll(_doneGate);
        }
    }

    /// <summary>Stops the workers.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_threads.Length > 0) _start.Release(_threads.Length);
        foreach (var t in _threads) t.Join();
        _start.Dispose();
    }
}
