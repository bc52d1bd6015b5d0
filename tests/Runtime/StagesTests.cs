using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Model;
using HftRuntime.Runtime;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

/// <summary>Continual learning: a new reproducible mask per stage, the score matrix, OP and BWT.</summary>
[TestFixture]
public sealed class StagesTests
{
    private static string[] Args(string model, string stages, string o, params string[] extra) =>
        ["train", "--model", model, "--stages", stages, "--method", "hft", "--seed", "11", "--batch", "4", "--seq", "32",
         "--eval-batches", "2", "--held-out", "0.2", "--threads", "2", "--quiet", "--out", o, .. extra];

    [Test]
    public void EachStageGetsItsOwnReproducibleMaskAndTheScoreMatrixIsFilled()
    {
        string model = TestData.TinyModel();
        string work = Fixtures.TempDirectory();
        TestData.WriteText(work, 12_000, seed: 1, name: "a.txt");
        TestData.WriteText(work, 12_000, seed: 2, name: "b.txt");
        string stages = Path.Combine(work, "stages.json");
        File.WriteAllText(stages, """{"stages": [{"data": "a.txt", "objective": "lm", "steps": 4, "lr": 0.003, "name": "first"}, {"data": "b.txt", "objective": "lm", "steps": 3, "lr": 0.002}]}""");
        string o = Path.Combine(work, "cl");
        var (code, _, err) = HftCli.Run(Args(model, stages, o));
        Assert.That(code, Is.EqualTo(0), err);
        var run = JsonNode.Parse(File.ReadAllText(Path.Combine(o, "run.json")))!;
        var st = run["stages"]!.AsArray();
        Assert.That(st, Has.Count.EqualTo(2));
        var f0 = st[0]!["frozen"]!.AsArray().Select(n => n!.GetValue<string>()).ToHashSet();
        var f1 = st[1]!["frozen"]!.AsArray().Select(n => n!.GetValue<string>()).ToHashSet();
        Assert.That(f0, Is.Not.EquivalentTo(f1), "a new draw per stage");
        var names = LlamaModel.TensorNames(LlamaConfig.Load(Path.Combine(model, "config.json")));
        Assert.That(f0, Is.EquivalentTo(FreezePolicy.Hft(Rng.Derive(11, 0)).SelectFrozen(names)), "stage 0 draws from (seed, 0)");
        Assert.That(f1, Is.EquivalentTo(FreezePolicy.Hft(Rng.Derive(11, 1)).SelectFrozen(names)), "stage 1 draws from (seed, 1)");
        Assert.That(st[0]!["losses"]!.AsArray(), Has.Count.EqualTo(4));
        Assert.That(st[1]!["losses"]!.AsArray(), Has.Count.EqualTo(3));
        var scores = run["scores"]!.AsArray().Select(r => r!.AsArray().Select(v => v!.GetValue<double>()).ToArray()).ToArray();
        Assert.That(scores, Has.Length.EqualTo(2));
        Assert.That(scores.SelectMany(x => x), Is.All.LessThan(0), "lm scores are negative losses");
        Assert.That(run["op"]!.GetValue<double>(), Is.EqualTo((scores[1][0] + scores[1][1]) / 2).Within(1e-12));
        Assert.That(run["bwt"]!.GetValue<double>(), Is.EqualTo(scores[1][0] - scores[0][0]).Within(1e-12));
        Assert.That(File.Exists(Path.Combine(o, "model.safetensors")));
        Assert.That(Directory.Exists(Path.Combine(o, "stage-00-first")) && Directory.Exists(Path.Combine(o, "stage-01-stage-1")));
    }

    [Test]
    public void EveryStageTrainsInTheGivenPrecision()
    {
        string model = TestData.TinyModel(), work = Fixtures.TempDirectory(), o = Path.Combine(work, "cl-bf16");
        TestData.WriteText(work, 12_000, seed: 1, name: "a.txt");
        TestData.WriteText(work, 12_000, seed: 2, name: "b.txt");
        string stages = Path.Combine(work, "stages.json");
        File.WriteAllText(stages, """{"stages": [{"data": "a.txt", "objective": "lm", "steps": 2, "lr": 0.003}, {"data": "b.txt", "objective": "lm", "steps": 2, "lr": 0.002}]}""");
        var (code, _, err) = HftCli.Run(Args(model, stages, o, "--precision", "bf16"));
        Assert.That(code, Is.EqualTo(0), err);
        foreach (var dir in Directory.GetDirectories(o, "stage-*"))
            Assert.That(JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "run.json")))!["config"]!["precision"]!.GetValue<string>(), Is.EqualTo("bf16"), dir);
        Assert.That(Directory.GetDirectories(o, "stage-*"), Has.Length.EqualTo(2));
    }

    [TestCase("""{"stages": [{"data": "a.txt", "objective": "lm", "steps": 4}]}""", "stages[0].lr")]
    [TestCase("""{"stages": [{"data": "nope.txt", "objective": "lm", "steps": 4, "lr": 0.1}]}""", "nope.txt")]
    [TestCase("""{"stages": [{"data": "a.txt", "objective": "rl", "steps": 4, "lr": 0.1}]}""", "stages[0].objective")]
    [TestCase("""{"stages": []}""", "empty")]
    [TestCase("""{"stages": [ """, "malformed JSON")]
    public void BadStagesFileFailsBeforeAnyWork(string json, string mention)
    {
        string work = Fixtures.TempDirectory();
        TestData.WriteText(work, 2000, name: "a.txt");
        string stages = Path.Combine(work, "stages.json");
        File.WriteAllText(stages, json);
        string o = Path.Combine(work, "out");
        var (code, _, err) = HftCli.Run(Args(Fixtures.Case("llama-mha"), stages, o));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), err);
        Assert.That(err, Does.Contain("stages.json").And.Contain(mention));
        Assert.That(Directory.Exists(o), Is.False);
    }
}
