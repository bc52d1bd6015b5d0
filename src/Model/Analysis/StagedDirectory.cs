using System.Security.Cryptography;
using HftRuntime.Runtime;

namespace HftRuntime.Model;

/// <summary>
/// Writes an output directory all at once: files go into a hidden staging directory beside the destination, which
/// <see cref="Commit"/> renames into place. Disposing without a commit deletes the staging directory and any parent
/// directories this object created, so a failure leaves nothing behind.
/// </summary>
public sealed class StagedDirectory : IDisposable
{
    private readonly string? _createdTop;
    private readonly string _parent;
    private bool _committed;

    private StagedDirectory(string destination, string parent, string staging, string? createdTop)
    {
        Destination = destination;
        _parent = parent;
        Path = staging;
        _createdTop = createdTop;
    }

    /// <summary>The directory the output will have once committed (full path).</summary>
    public string Destination { get; }

    /// <summary>The staging directory to write the files into.</summary>
    public string Path { get; }

    /// <summary>
    /// Starts staging <paramref name="destination"/>, which must not exist or be empty
    /// (<see cref="InvalidInputException"/> otherwise). Creates the parent directories that are missing.
    /// </summary>
    public static StagedDirectory Create(string destination)
    {
        ArgumentException.ThrowIfNullOrEmpty(destination);
        string full = System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(destination));
        string parent = System.IO.Path.GetDirectoryName(full)
            ?? throw new ArgumentException($"'{destination}' has no parent directory to stage the output in", nameof(destination));
        if (File.Exists(full)) throw new InvalidInputException(destination, "is a file; choose a directory for --out (nothing was written)");
        if (Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any())
            throw new InvalidInputException(destination, "already exists and is not empty; choose another --out (nothing was written)");

        string? createdTop = null;
        for (string? d = parent; d is not null && !Directory.Exists(d); d = System.IO.Path.GetDirectoryName(d)) createdTop = d;
        Directory.CreateDirectory(parent);
        string staging = System.IO.Path.Combine(parent,
            $".{System.IO.Path.GetFileName(full)}.tmp-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}");
        try
        {
            Directory.CreateDirectory(staging);
        }
        catch
        {
            RemoveCreatedParents(parent, createdTop);
            throw;
        }
        return new StagedDirectory(full, parent, staging, createdTop);
    }

    /// <summary>Moves the staged files to <see cref="Destination"/> (replacing it only if it is still empty).</summary>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_committed, this);
        if (Directory.Exists(Destination))
        {
            if (Directory.EnumerateFileSystemEntries(Destination).Any())
                throw new InvalidInputException(Destination, "was filled by someone else while the output was written; nothing was written");
            Directory.Delete(Destination);
        }
        Directory.Move(Path, Destination);
        _committed = true;
    }

    /// <summary>Deletes the staged files unless they were committed.</summary>
    public void Dispose()
    {
        if (_committed) return;
        _committed = true;
        try
        {
            if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The original failure matters more than a staging directory we could not remove.
        }
        RemoveCreatedParents(_parent, _createdTop);
    }

    /// <summary>Removes the (empty) directories from <paramref name="parent"/> up to <paramref name="top"/>, which this object created.</summary>
    private static void RemoveCreatedParents(string parent, string? top)
    {
        if (top is null) return;
        for (string? d = parent; d is not null; d = System.IO.Path.GetDirectoryName(d))
        {
            try
            {
                Directory.Delete(d);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return;
            }
            if (d == top) return;
        }
    }
}
