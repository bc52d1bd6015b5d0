namespace HftRuntime.Tests.Support;

/// <summary>An IProgress that calls its handler on the reporting thread (Progress&lt;T&gt; would post to the thread pool).</summary>
public sealed class InlineProgress<T>(Action<T> handler) : IProgress<T>
{
    /// <inheritdoc/>
    public void Report(T value) => handler(value);
}
