using HftRuntime.Cli;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

/// <summary>
/// Arguments the parser refuses are bad input like a bad file: exit 2 (the README's exit codes) with an error line
/// and the command to ask for help, nothing written. System.CommandLine's own exit code for them is 1, which hft
/// keeps for a check that failed.
/// </summary>
[TestFixture]
public sealed class CommandLineErrorsTests
{
    [TestCase("train", "--no-such-option", "1")]
    [TestCase("train", "--steps", "many")]
    [TestCase("train", "--precision", "fp16")]
    [TestCase("demo", "--seeds", "three")]
    [TestCase("verify")]
    [TestCase("no-such-command")]
    public void ParseErrorsAreBadInput(params string[] args)
    {
        string dir = Fixtures.TempDirectory(), output = Path.Combine(dir, "out");
        string[] full = args[0] == "train" ? [.. args, "--model", dir, "--data", dir, "--out", output] : args;
        var (code, stdout, err) = HftCli.Run(full);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), stdout + err);
        Assert.That(err, Does.StartWith("error: "), err);
        Assert.That(err, Does.Contain($"(hft {(args[0] == "no-such-command" ? "" : args[0] + " ")}--help lists the options)"));
        Assert.That(Directory.Exists(output), Is.False, "nothing written");
    }
}
