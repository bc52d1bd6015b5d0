using NUnit.Framework;

namespace HftRuntime.Tests.Support;

/// <summary>Paths of the reference cases and scratch copies of them.</summary>
public static class Fixtures
{
    /// <summary>The reference cases copied from ../shared/goldens.</summary>
    public static readonly string[] Cases = ["llama-mha", "llama-gqa-tied-hft"];

    /// <summary>Directory of a reference case in the test output.</summary>
    public static string Case(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "fixtures", name);

    /// <summary>A fresh, writable copy of a reference case in a temporary directory.</summary>
    public static string CopyCase(string name)
    {
        string dir = TempDirectory();
        foreach (var f in Directory.GetFiles(Case(name)))
        {
            string dst = Path.Combine(dir, Path.GetFileName(f));
            File.Copy(f, dst);
            File.SetAttributes(dst, FileAttributes.Normal);
        }
        return dir;
    }

    /// <summary>A new empty directory under the system temp folder.</summary>
    public static string TempDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "hft-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
