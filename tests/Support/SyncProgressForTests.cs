namespace HftRuntime.Cli.Commands;

/// <summary>Calls the handler synchronously (tests).</summary>
public sealed class SyncProgressForTests<T>(Action<T> handler) : IProgress<T>
{
    /// <inheritdoc/>
    public void Report(T value) => handler(value);
}
