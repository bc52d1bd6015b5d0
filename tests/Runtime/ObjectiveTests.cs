using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

/// <summary>SFT and DPO end to end on a tiny model; eval; bad JSONL lines.</summary>
[TestFixture]
public sealed class ObjectiveTests
{
    private string _model = null!, _work = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _model = TestData.TinyModel();
        _work = Fixtures.TempDirectory();
    }

    private static JsonNode RunJson(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "run.json")))!;

    [Test]
    public void SftLossFallsAndOnlyResponsesCount()
    {
        string data = TestData.WriteSft(_work, 400);
        string o = Path.Combine(_work, "sft");
        var (code, _, err) = HftCli.Run("train", "--model", _model, "--data", data, "--objective", "sft", "--method", "hft", "--steps", "40",
            "--batch", "8", "--seq", "64", "--lr", "5e-3", "--eval-every", "20", "--eval-batches", "2", "--held-out", "0.1", "--threads", "2", "--quiet", "--out", o);
        Assert.That(code, Is.EqualTo(0), err);
        var run = RunJson(o);
        var losses = run["losses"]!.AsArray().Select(n => n!.GetValue<float>()).ToArray();
        Assert.That(losses.Skip(35).Average(), Is.LessThan(0.5 * losses.Take(5).Average()), "the SFT loss falls");
        Assert.That(run["objective"]!.GetValue<string>(), Is.EqualTo("sft"));
        Assert.That(run["data"]!["format"]!.GetValue<string>(), Is.EqualTo("sft"));
        var evals = run["eval"]!.AsArray();
        Assert.That(evals, Has.Count.EqualTo(2));
        Assert.That(evals[1]!["loss"]!.GetValue<double>(), Is.LessThan(evals[0]!["loss"]!.GetValue<double>()));

        // hft eval on the same data: loss, perplexity and greedy exact match.
        string report = Path.Combine(_work, "eval.json");
        var (ecode, eout, eerr) = HftCli.Run("eval", "--model", o, "--data", data, "--seq", "64", "--exact-match", "12", "--json", report, "--threads", "2");
        Assert.That(ecode, Is.EqualTo(0), eerr);
        Assert.That(eout, Does.Contain("perplexity").And.Contain("exact match"));
        var e = JsonNode.Parse(File.ReadAllText(report))!;
        Assert.That(e["perplexity"]!.GetValue<double>(), Is.EqualTo(Math.Exp(e["loss"]!.GetValue<double>())).Within(1e-9));
        Assert.That(e["exact_match_prompts"]!.GetValue<int>(), Is.EqualTo(12));
        Assert.That(e["answers"]!.AsArray()[0]!["prompt"]!.GetValue<string>(), Does.Contain("Upper:"));
    }

    [Test]
    public void DpoRaisesTheRewardMargin()
    {
        string data = TestData.WriteDpo(_work, 300);
        string o = Path.Combine(_work, "dpo");
        var (code, _, err) = HftCli.Run("train", "--model", _model, "--data", data, "--objective", "dpo", "--beta", "0.5", "--method", "hft",
            "--steps", "20", "--batch", "4", "--seq", "48", "--lr", "3e-3", "--eval-every", "10", "--eval-batches", "3", "--held-out", "0.1",
            "--threads", "2", "--quiet", "--out", o);
        Assert.That(code, Is.EqualTo(0), err);
        var run = RunJson(o);
        var losses = run["losses"]!.AsArray().Select(n => n!.GetValue<float>()).ToArray();
        Assert.That(losses[0], Is.EqualTo(Math.Log(2)).Within(1e-4), "policy = reference at step 0: loss ln 2");
        Assert.That(losses.Skip(15).Average(), Is.LessThan(losses[0]));
        var evals = run["eval"]!.AsArray();
        Assert.That(evals[1]!["reward_margin"]!.GetValue<double>(), Is.GreaterThan(evals[0]!["reward_margin"]!.GetValue<double>()));
        Assert.That(evals[1]!["reward_margin"]!.GetValue<double>(), Is.GreaterThan(0));
        Assert.That(evals[1]!["preference_accuracy"]!.GetValue<double>(), Is.GreaterThan(0.5));
    }

    [Test]
    public void MalformedLineNamesFileAndLineOrIsSkippedAndCounted()
    {
        string data = TestData.WriteSft(_work, 200, name: "bad.jsonl");
        var lines = File.ReadAllLines(data).ToList();
        lines[6] = """{"prompt": "Upper: sea", "response": }""";
        File.WriteAllLines(data, lines);
        string[] Args(string o, params string[] extra) => ["train", "--model", _model, "--data", data, "--objective", "sft", "--steps", "2", "--batch", "4",
            "--seq", "32", "--threads", "2", "--quiet", "--out", Path.Combine(_work, o), .. extra];
        var (code, _, err) = HftCli.Run(Args("bad"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("bad.jsonl:7").And.Contain("\"response\": }"));
        Assert.That(Directory.Exists(Path.Combine(_work, "bad")), Is.False);
        (code, _, err) = HftCli.Run(Args("skipped", "--skip-bad-lines"));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(RunJson(Path.Combine(_work, "skipped"))["data"]!["bad_lines_skipped"]!.GetValue<long>(), Is.EqualTo(1));
    }

    [Test]
    public void ContinualLearningScoresSftStagesByExactMatch()
    {
        string a = TestData.WriteSft(_work, 120, seed: 3, name: "cl-a.jsonl");
        File.WriteAllText(Path.Combine(_work, "cl.txt"), File.ReadAllText(TestData.WriteText(_work, 9000, seed: 4, name: "cl-b.txt")));
        string stages = Path.Combine(_work, "cl-stages.json");
        File.WriteAllText(stages, """{"stages": [{"data": "cl-a.jsonl", "objective": "sft", "steps": 3, "lr": 0.003}, {"data": "cl-b.txt", "objective": "lm", "steps": 3, "lr": 0.003}]}""");
        string o = Path.Combine(_work, "cl");
        var (code, _, err) = HftCli.Run("train", "--model", _model, "--stages", stages, "--method", "hft", "--batch", "4", "--seq", "32",
            "--held-out", "0.25", "--eval-batches", "2", "--threads", "2", "--quiet", "--out", o);
        Assert.That(code, Is.EqualTo(0), err);
        var run = RunJson(o);
        Assert.That(run["score_metric"]!.AsArray().Select(n => n!.GetValue<string>()), Is.EqualTo(new[] { "exact_match", "neg_loss" }));
        var s = run["scores"]!.AsArray();
        Assert.That(s[0]![0]!.GetValue<double>(), Is.InRange(0.0, 1.0));
        Assert.That(run["held_out_losses"]!.AsArray()[1]!.AsArray().Select(n => n!.GetValue<double>()), Is.All.GreaterThan(0));
        Assert.That(run["bwt"], Is.Not.Null);
    }
}
