using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace HftRuntime.Runtime.Data;

/// <summary>
/// A stream of token ids in a temporary file (4 bytes per token; unlinked at once on Unix, deleted on close on
/// Windows), written once and then read
/// at any offset. The first token of each document carries <see cref="DocStartFlag"/> (ids are never negative).
/// </summary>
internal sealed class TokenStreamFile : IDisposable
{
    /// <summary>Set on the first token of a document.</summary>
    public const int DocStartFlag = int.MinValue;

    private readonly SafeFileHandle _file;
    private readonly int[] _buffer = new int[1 << 16];
    private int _buffered;
    private long _written;

    public TokenStreamFile()
    {
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"hft-lm-tokens-{Guid.NewGuid():N}.bin");
        if (OperatingSystem.IsWindows())
        {
            _file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        }
        else
        {
            // Unlinked at once: the open handle keeps the data, and nothing is left behind even if the process dies.
            _file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
            File.Delete(path);
        }
    }

    /// <summary>Tokens in the stream.</summary>
    public long Length => _written + _buffered;

    /// <summary>Appends a token; <paramref name="docStart"/> marks the first token of a document.</summary>
    public void Add(int id, bool docStart)
    {
        if (id < 0) throw new ArgumentOutOfRangeException(nameof(id), id, "token ids must not be negative");
        if (_buffered == _buffer.Length) Flush();
        _buffer[_buffered++] = docStart ? id | DocStartFlag : id;
    }

    /// <summary>Fills <paramref name="destination"/> with the flagged tokens from <paramref name="start"/> on.</summary>
    public void Read(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > Length)
            throw new ArgumentOutOfRangeException(nameof(start), start, $"tokens [{start}, {start + destination.Length}) lie outside the stream of {Length}");
        Flush();
        var bytes = MemoryMarshal.AsBytes(destination);
        long offset = start * sizeof(int);
        while (bytes.Length > 0)
        {
            int got = RandomAccess.Read(_file, bytes, offset);
            if (got <= 0) throw new IOException($"the token stream ended early at byte {offset}");
            bytes = bytes[got..];
            offset += got;
        }
    }

    private void Flush()
    {
        if (_buffered == 0) return;
        RandomAccess.Write(_file, MemoryMarshal.AsBytes(_buffer.AsSpan(0, _buffered)), _written * sizeof(int));
        _written += _buffered;
        _buffered = 0;
    }

    public void Dispose() => _file.Dispose();
}
