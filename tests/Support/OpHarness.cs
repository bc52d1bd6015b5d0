using HftRuntime.Kernels;

namespace HftRuntime.Tests.Support;

/// <summary>
/// Puts host arrays on a back-end for an operation test: inputs are uploaded, outputs are poisoned with NaN (so an
/// element an operation forgets to write fails the comparison), results come back as arrays.
/// </summary>
public sealed class OpHarness : IDisposable
{
    private readonly Backend _backend;
    private readonly DeviceArena _arena;
    private readonly List<Action> _afterCommit = new();

    /// <summary>Creates an empty harness on <paramref name="backend"/>.</summary>
    public OpHarness(Backend backend)
    {
        _backend = backend;
        _arena = backend.CreateArena();
    }

    /// <summary>An F32 tensor holding <paramref name="data"/>.</summary>
    public Tensor Input(float[] data, string name = "in")
    {
        var t = _arena.Reserve(name, data.Length);
        _afterCommit.Add(() => _backend.Upload<float>(t, data));
        return t;
    }

    /// <summary>An I32 tensor holding <paramref name="data"/>.</summary>
    public Tensor Input(int[] data, string name = "in")
    {
        var t = _arena.Reserve(name, data.Length, DType.I32);
        _afterCommit.Add(() => _backend.Upload<int>(t, data));
        return t;
    }

    /// <summary>A BF16 tensor holding the raw bits <paramref name="data"/>.</summary>
    public Tensor InputBf16(ushort[] data, string name = "in")
    {
        var t = _arena.Reserve(name, data.Length, DType.BF16);
        _afterCommit.Add(() => _backend.Upload<ushort>(t, data));
        return t;
    }

    /// <summary>A BF16 tensor of <paramref name="count"/> NaNs (bits 0x7FC0).</summary>
    public Tensor OutputBf16(int count, string name = "out")
    {
        var t = _arena.Reserve(name, count, DType.BF16);
        _afterCommit.Add(() => _backend.Upload<ushort>(t, Enumerable.Repeat((ushort)0x7FC0, count).ToArray()));
        return t;
    }

    /// <summary>Reads a BF16 tensor's raw bits back.</summary>
    public ushort[] ReadBf16(Tensor t)
    {
        _backend.Synchronize();
        return _backend.ToArray<ushort>(t);
    }

    /// <summary>An F32 tensor of <paramref name="count"/> NaNs.</summary>
    public Tensor Output(int count, string name = "out")
    {
        var t = _arena.Reserve(name, count);
        _afterCommit.Add(() => _backend.Fill(t, float.NaN));
        return t;
    }

    /// <summary>Allocates and fills everything declared so far.</summary>
    public void Commit()
    {
        _arena.Commit();
        foreach (var a in _afterCommit) a();
    }

    /// <summary>Reads a tensor back.</summary>
    public float[] Read(Tensor t)
    {
        _backend.Synchronize();
        return _backend.ToArray<float>(t);
    }

    /// <inheritdoc/>
    public void Dispose() => _arena.Dispose();
}
