using System.Diagnostics;
using System.IO.Compression;
using System.Reflection;
using System.Xml.Linq;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Library;

/// <summary>dotnet pack makes the library packages and the hft .NET tool, with README, licence, symbols and dependencies.</summary>
[TestFixture]
public sealed class PackagingTests
{
    private static string _out = null!;

    internal static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "HftRuntime.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("HftRuntime.sln not found above the test directory");
    }

    internal static string Configuration() =>
        typeof(PackagingTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";

    [OneTimeSetUp]
    public void Pack()
    {
        _out = Fixtures.TempDirectory();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepositoryRoot() };
        foreach (var a in new[] { "pack", "HftRuntime.sln", "-c", Configuration(), "--no-build", "-o", _out }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0), output);
    }

    private static XDocument Nuspec(ZipArchive zip)
    {
        using var s = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open();
        return XDocument.Load(s);
    }

    private static string[] Dependencies(XDocument nuspec) =>
        nuspec.Descendants().Where(e => e.Name.LocalName == "dependency").Select(e => e.Attribute("id")!.Value).ToArray();

    [TestCase("HftRuntime.Kernels", new[] { "ILGPU", "ILGPU.Algorithms", "System.Numerics.Tensors" })]
    [TestCase("HftRuntime.Runtime", new[] { "HftRuntime.Kernels" })]
    [TestCase("HftRuntime", new[] { "HftRuntime.Runtime", "Microsoft.ML.Tokenizers" })]
    public void LibraryPackage(string id, string[] dependencies)
    {
        string path = Path.Combine(_out, $"{id}.0.1.0.nupkg");
        Assert.That(File.Exists(path), path);
        Assert.That(File.Exists(Path.ChangeExtension(path, ".snupkg")), "symbols package");
        using var zip = ZipFile.OpenRead(path);
        var names = zip.Entries.Select(e => e.FullName).ToList();
        Assert.That(names, Does.Contain("README.md").And.Contain("LICENSE"));
        Assert.That(names.Any(n => n.StartsWith("lib/net10.0/", StringComparison.Ordinal) && n.EndsWith(".xml", StringComparison.Ordinal)), "XML documentation");
        var nuspec = Nuspec(zip);
        string Meta(string name) => nuspec.Descendants().First(e => e.Name.LocalName == name).Value;
        Assert.That(Meta("license"), Is.EqualTo("MIT"));
        Assert.That(Meta("readme"), Is.EqualTo("README.md"));
        Assert.That(Meta("description"), Is.Not.Empty);
        Assert.That(Dependencies(nuspec), Is.SupersetOf(dependencies));
    }

    [Test]
    public void ToolPackage()
    {
        string path = Path.Combine(_out, "HftRuntime.Tool.0.1.0.nupkg");
        using var zip = ZipFile.OpenRead(path);
        var names = zip.Entries.Select(e => e.FullName).ToList();
        Assert.That(names, Does.Contain("tools/net10.0/any/hft.dll").And.Contain("tools/net10.0/any/DotnetToolSettings.xml"));
        Assert.That(names, Does.Contain("tools/net10.0/any/data/moby-dick-ch1-12.txt"), "the demo data ships with the tool");
        Assert.That(names.Any(n => n.StartsWith("tools/net10.0/any/reference-cases/llama-mha/", StringComparison.Ordinal)));
        var nuspec = Nuspec(zip);
        Assert.That(nuspec.Descendants().Any(e => e.Name.LocalName == "packageType" && e.Attribute("name")?.Value == "DotnetTool"));
        Assert.That(names, Does.Contain("README.md").And.Contain("LICENSE"));
    }
}
