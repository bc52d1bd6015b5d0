using System.Diagnostics;
using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Model.Training;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

/// <summary>hft train end to end on a tiny model: frozen bytes, memory accounting, resume, crash safety, bad input.</summary>
[TestFixture]
public sealed class TrainCommandTests
{
    private string _model = null!, _data = null!, _work = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _model = TestData.TinyModel();
        _work = Fixtures.TempDirectory();
        _data = TestData.WriteText(_work, 60_000);
    }

    private string[] Args(string outDir, string method, params string[] extra) =>
        ["train", "--model", _model, "--data", _data, "--method", method, "--steps", "12", "--batch", "4", "--seq", "32",
         "--lr", "3e-3", "--seed", "7", "--threads", "2", "--eval-every", "6", "--eval-batches", "2", "--quiet", "--out", outDir, .. extra];

    private static JsonObject RunJson(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "run.json")))!.AsObject();

    private static float?[] Losses(string dir) => RunJson(dir)["losses"]!.AsArray().Select(n => n is null ? (float?)null : n.GetValue<float>()).ToArray();

    [Test]
    public void HftKeepsFrozenTensorsBitIdenticalAndAccountsMemory()
    {
        string o = Path.Combine(_work, "hft");
        var (code, _, err) = HftCli.Run(Args(o, "hft"));
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        var run = RunJson(o);
        var frozen = run["frozen"]!.AsArray().Select(n => n!.GetValue<string>()).ToHashSet();
        Assert.That(frozen, Has.Count.EqualTo(9), "tiny: 2 layers x (2 attention + 1 norm) + 3 MLP");
        using var before = SafeTensorsCheckpoint.Open(_model);
        using var after = SafeTensorsFile.Open(Path.Combine(o, "model.safetensors"));
        foreach (var name in before.Names)
        {
            var a = before.ReadFloat32(name);
            var b = after.ReadFloat32(name);
            if (frozen.Contains(name)) Assert.That(b, Is.EqualTo(a), $"frozen {name} must be bit-identical");
            else Assert.That(b, Is.Not.EqualTo(a), $"trainable {name} must have moved");
        }
        long total = run["params_total"]!.GetValue<long>(), trainable = run["params_trainable"]!.GetValue<long>();
        Assert.That(run["bytes_optimizer"]!.GetValue<long>(), Is.EqualTo(8 * trainable));
        Assert.That(run["bytes_grads"]!.GetValue<long>(), Is.EqualTo(4 * trainable));
        Assert.That(run["bytes_weights"]!.GetValue<long>(), Is.EqualTo(4 * total));
        Assert.That(trainable, Is.LessThan(total));
        Assert.That(run["bytes_activations"]!.GetValue<long>(), Is.GreaterThan(0));
        Assert.That(run["cost_bound"]!.GetValue<double>(), Is.InRange(0.5, 0.99));
        Assert.That(Losses(o), Has.Length.EqualTo(12).And.All.Not.Null);
        Assert.That(run["eval"]!.AsArray(), Has.Count.EqualTo(2));
        foreach (var key in new[] { "method", "policy", "seed", "step_ms_median", "tokens_per_s", "config" }) Assert.That(run.ContainsKey(key), key);
        Assert.That(run["config"]!["data_sha256"]!.GetValue<string>(), Has.Length.EqualTo(64));
        Assert.That(run["config"]!["git_commit"], Is.Not.Null);
        Assert.That(File.ReadAllLines(Path.Combine(o, "metrics.jsonl")).Count(l => l.Contains("\"loss\"")), Is.EqualTo(12));
        foreach (var f in new[] { "config.json", "tokenizer_config.json" }) Assert.That(File.Exists(Path.Combine(o, f)), f);
    }

    [Test]
    public void FullFineTuningFreezesNothing()
    {
        string o = Path.Combine(_work, "fft");
        var (code, _, err) = HftCli.Run(Args(o, "fft"));
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        var run = RunJson(o);
        Assert.That(run["frozen"]!.AsArray(), Is.Empty);
        Assert.That(run["cost_bound"]!.GetValue<double>(), Is.EqualTo(1.0));
        Assert.That(run["params_trainable"]!.GetValue<long>(), Is.EqualTo(run["params_total"]!.GetValue<long>()));
        Assert.That(run["bytes_optimizer"]!.GetValue<long>(), Is.EqualTo(8 * run["params_total"]!.GetValue<long>()));
    }

    [Test]
    public void ResumeAfterAKillDuringACheckpointSaveGivesTheUninterruptedLossesBitForBit()
    {
        string whole = Path.Combine(_work, "whole"), killed = Path.Combine(_work, "killed");
        var (code, _, err) = HftCli.Run(Args(whole, "hft", "--save-every", "4"));
        Assert.That(code, Is.EqualTo(0), err);

        // A separate process dies in the middle of its second checkpoint save (step 8).
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(Path.Combine(TestContext.CurrentContext.TestDirectory, "hft.dll"));
        foreach (var a in Args(killed, "hft", "--save-every", "4")) psi.ArgumentList.Add(a);
        psi.Environment["HFT_TEST_EXIT_DURING_SAVE"] = "2";
        using (var p = Process.Start(psi)!)
        {
            string stderr = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.That(p.ExitCode, Is.EqualTo(86), stderr);
        }
        string ckpt = Path.Combine(killed, "checkpoints");
        Assert.That(File.ReadAllText(Path.Combine(ckpt, "latest")).Trim(), Is.EqualTo("step-00000004"), "the pointer still names the last complete checkpoint");
        Assert.That(Directory.Exists(Path.Combine(ckpt, "step-00000008.tmp")), "the interrupted save is left as a temporary directory");
        using (var w = SafeTensorsFile.Open(Path.Combine(ckpt, "step-00000004", "model.safetensors")))
            Assert.That(w.Names, Is.Not.Empty);

        (code, _, err) = HftCli.Run(Args(killed, "hft", "--save-every", "4", "--resume"));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(Losses(killed), Is.EqualTo(Losses(whole)), "same losses, bit for bit");
        Assert.That(File.ReadAllBytes(Path.Combine(killed, "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(whole, "model.safetensors"))));
        Assert.That(Directory.Exists(Path.Combine(ckpt, "step-00000008.tmp")), Is.False, "leftovers are cleaned up");
        Assert.That(RunJson(killed)["resumed_from_step"]!.GetValue<int>(), Is.EqualTo(4));
    }

    [Test]
    public void CancellationFinishesTheStepSavesAndResumes()
    {
        string whole = Path.Combine(_work, "whole-c"), cut = Path.Combine(_work, "cut");
        Assert.That(HftCli.Run(Args(whole, "hft")).Code, Is.EqualTo(0));
        using var cts = new CancellationTokenSource();
        cts.Cancel(); // stops before the first step: the checkpoint holds step 0
        var o = new StringWriter();
        int code = Program.Run(Args(cut, "hft"), o, new StringWriter(), cts.Token);
        Assert.That(code, Is.EqualTo(Program.ExitCancelled));
        Assert.That(RunJson(cut)["cancelled"]!.GetValue<bool>(), Is.True);
        Assert.That(HftCli.Run(Args(cut, "hft", "--resume")).Code, Is.EqualTo(0));
        Assert.That(Losses(cut), Is.EqualTo(Losses(whole)));
    }

    [Test]
    public void Bf16RunSavesFrozenMatricesInBf16AndResumesBitForBit()
    {
        string whole = Path.Combine(_work, "bf16-whole"), cut = Path.Combine(_work, "bf16-cut"), fp32 = Path.Combine(_work, "bf16-vs-fp32");
        var (code, _, err) = HftCli.Run(Args(whole, "hft", "--precision", "bf16"));
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        var run = RunJson(whole);
        Assert.That(run["config"]!["precision"]!.GetValue<string>(), Is.EqualTo("bf16"));
        Assert.That(run["attention_precision"]!.GetValue<string>(), Is.EqualTo("fp32"), "the CPU back-end computes attention in fp32");
        Assert.That(HftCli.Run(Args(fp32, "hft")).Code, Is.EqualTo(0));
        Assert.That(Losses(whole), Is.Not.EqualTo(Losses(fp32)), "bf16 arithmetic really ran");
        Assert.That(Losses(whole).Zip(Losses(fp32)).All(p => Math.Abs(p.First!.Value - p.Second!.Value) < 0.05 * p.Second!.Value), "and stays close to fp32");

        // Frozen matrices are saved as BF16 (the values trained against: the originals rounded), the rest as F32.
        var frozen = run["frozen"]!.AsArray().Select(n => n!.GetValue<string>()).ToHashSet();
        using (var before = SafeTensorsCheckpoint.Open(_model))
        using (var after = SafeTensorsFile.Open(Path.Combine(whole, "model.safetensors")))
            foreach (var name in before.Names)
            {
                bool matrix = frozen.Contains(name) && after.Get(name).Shape.Length == 2;
                Assert.That(after.Get(name).DType, Is.EqualTo(matrix ? SafeTensorsDType.BF16 : SafeTensorsDType.F32), name);
                if (matrix) Assert.That(after.ReadFloat32(name), Is.EqualTo(Array.ConvertAll(before.ReadFloat32(name), HftRuntime.Kernels.Bf16.Round)), name);
                else if (frozen.Contains(name)) Assert.That(after.ReadFloat32(name), Is.EqualTo(before.ReadFloat32(name)), name);
            }

        using var cts = new CancellationTokenSource();
        cts.Cancel(); // stops before the first step: the checkpoint holds step 0
        Assert.That(Program.Run(Args(cut, "hft", "--precision", "bf16"), new StringWriter(), new StringWriter(), cts.Token), Is.EqualTo(Program.ExitCancelled));
        (code, _, err) = HftCli.Run(Args(cut, "hft", "--resume"));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), "resuming a bf16 run in fp32 is refused");
        Assert.That(err, Does.Contain("precision"));
        Assert.That(HftCli.Run(Args(cut, "hft", "--precision", "bf16", "--resume")).Code, Is.EqualTo(0));
        Assert.That(Losses(cut), Is.EqualTo(Losses(whole)));
    }

    [Test]
    public void AutoPrecisionIsFp32OnTheCpuAndResumesInThePrecisionTheRunWasSavedIn()
    {
        string fresh = Path.Combine(_work, "auto-fresh"), cut = Path.Combine(_work, "auto-cut");
        var (code, _, err) = HftCli.Run(Args(fresh, "hft", "--precision", "auto"));
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        Assert.That(RunJson(fresh)["config"]!["precision"]!.GetValue<string>(), Is.EqualTo("fp32"), "auto is fp32 off CUDA");
        Assert.That(err, Does.Not.Contain("warning: training in fp32"), "the fp32 warning is for CUDA devices");
        Assert.That(FineTuning.SavedPrecision(fresh), Is.EqualTo(Precision.Fp32));

        using var cts = new CancellationTokenSource();
        cts.Cancel(); // a bf16 run stopped before its first step: the checkpoint holds step 0
        Assert.That(Program.Run(Args(cut, "hft", "--precision", "bf16"), new StringWriter(), new StringWriter(), cts.Token), Is.EqualTo(Program.ExitCancelled));
        Assert.That(FineTuning.SavedPrecision(cut), Is.EqualTo(Precision.Bf16));
        (code, _, err) = HftCli.Run(Args(cut, "hft", "--precision", "auto", "--resume"));
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        Assert.That(RunJson(cut)["config"]!["precision"]!.GetValue<string>(), Is.EqualTo("bf16"), "auto resumes in the saved precision, not the device's");
        Assert.That(FineTuning.SavedPrecision(Path.Combine(_work, "no-such-run")), Is.Null);
    }

    [TestCase("--policy", "random", "random")]
    [TestCase("--precision", "fp16", "fp32, bf16 or auto")]
    [TestCase("--trainable-ratio", "1.5", "ratio")]
    [TestCase("--trainable-ratio", "0", "ratio")]
    [TestCase("--objective", "rl", "objective")]
    public void BadOptionsFailBeforeAnyWork(string option, string value, string mention)
    {
        string o = Path.Combine(_work, "bad-" + Guid.NewGuid().ToString("N"));
        var (code, _, err) = HftCli.Run(Args(o, "hft", option, value));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), err);
        Assert.That(err, Does.Contain(mention));
        Assert.That(Directory.Exists(o), Is.False, "nothing written");
    }

    [Test]
    public void ExplicitListNamingAMissingTensorIsRejected()
    {
        string list = Path.Combine(_work, "freeze.txt");
        File.WriteAllLines(list, ["model.layers.0.mlp.up_proj.weight", "model.layers.9.mlp.up_proj.weight"]);
        string o = Path.Combine(_work, "explicit-bad");
        var (code, _, err) = HftCli.Run(Args(o, "hft", "--policy", "explicit", "--freeze-list", list));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("freeze.txt:2").And.Contain("model.layers.9.mlp.up_proj.weight"));
        Assert.That(Directory.Exists(o), Is.False);
    }

    [Test]
    public void ResumingAnotherPolicysRunIsRejected()
    {
        string o = Path.Combine(_work, "resume-other");
        Assert.That(HftCli.Run(Args(o, "hft")).Code, Is.EqualTo(0));
        var before = Directory.GetFiles(o, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllBytes);
        var (code, _, err) = HftCli.Run(Args(o, "hft", "--policy", "layer", "--resume"));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("another run").And.Contain("frozen"));
        (code, _, err) = HftCli.Run(Args(o, "fft", "--resume"));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), err);
        foreach (var (f, bytes) in before) Assert.That(File.ReadAllBytes(f), Is.EqualTo(bytes), $"{f} unchanged");
        (code, _, err) = HftCli.Run(Args(o, "hft"));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), "an existing run is not overwritten without --resume");
        Assert.That(err, Does.Contain("--resume"));
    }

    [Test]
    public void DataTooShortForOneBatch()
    {
        string tiny = TestData.WriteText(_work, 40, name: "short.txt");
        string o = Path.Combine(_work, "short");
        var (code, _, err) = HftCli.Run(Args(o, "hft").Select(a => a == _data ? tiny : a).ToArray());
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("short.txt").And.Contain("too short for one batch"));
        Assert.That(Directory.Exists(o), Is.False);
    }

    [Test]
    public void OutputMustNotBeTheInputModel()
    {
        var (code, _, err) = HftCli.Run(Args(_model, "hft"));
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("input model"));
    }

    [Test]
    public void RepeatedNonFiniteStepsStopTheRun()
    {
        string model = TestData.TinyModel(seed: 2);
        string path = Path.Combine(model, "model.safetensors");
        var entries = new List<SafeTensorsWriter.Entry>();
        using (var f = SafeTensorsFile.Open(path))
            foreach (var n in f.Names)
            {
                var v = f.ReadFloat32(n);
                if (n == "model.norm.weight") v[3] = float.NaN;
                entries.Add(SafeTensorsWriter.Entry.FromFloat32(n, v, f.Get(n).Shape));
            }
        SafeTensorsWriter.Write(path, entries);
        string o = Path.Combine(_work, "nan");
        var (code, _, err) = HftCli.Run(Args(o, "hft", "--max-nan-steps", "3").Select(a => a == _model ? model : a).ToArray());
        Assert.That(code, Is.EqualTo(Program.ExitDiverged), err);
        Assert.That(err, Does.Contain("3 consecutive steps"));
    }
}

[TestFixture]
public sealed class TrainCommandMoreTests
{
    [Test]
    public void AccumulationMatchesOneLargeBatch()
    {
        string model = TestData.TinyModel();
        string work = Fixtures.TempDirectory();
        string data = TestData.WriteText(work, 40_000);
        string[] Args(string o, string batch, string accum) =>
            ["train", "--model", model, "--data", data, "--method", "hft", "--steps", "6", "--batch", batch, "--accum", accum, "--seq", "32",
             "--lr", "3e-3", "--seed", "5", "--threads", "2", "--quiet", "--out", Path.Combine(work, o)];
        Assert.That(HftCli.Run(Args("one", "8", "1")).Code, Is.EqualTo(0));
        Assert.That(HftCli.Run(Args("two", "4", "2")).Code, Is.EqualTo(0));
        float[] L(string o) => JsonNode.Parse(File.ReadAllText(Path.Combine(work, o, "run.json")))!["losses"]!.AsArray().Select(n => n!.GetValue<float>()).ToArray();
        var one = L("one"); var two = L("two");
        for (int i = 0; i < one.Length; i++) Assert.That(two[i], Is.EqualTo(one[i]).Within(1e-4).Percent, $"step {i + 1}");
    }

    [Test]
    public void InitWithASentencePieceTokenizer()
    {
        string o = Path.Combine(Fixtures.TempDirectory(), "sp");
        var (code, output, err) = HftCli.Run("init", "--preset", "tiny", "--tokenizer", Path.Combine(Fixtures.Case("tokenizer"), "tokenizer.model"), "--out", o);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("vocabulary 512 (sentencepiece)"));
        Assert.That(File.Exists(Path.Combine(o, "tokenizer.model")));
        var config = HftRuntime.Model.LlamaConfig.Load(Path.Combine(o, "config.json"));
        Assert.That(config.VocabSize, Is.EqualTo(512));
    }

    [Test]
    public void InitTrainAndGenerateWithAHuggingFaceTokenizerJson()
    {
        string work = Fixtures.TempDirectory(), hf = Path.Combine(work, "hf"), o = Path.Combine(work, "model");
        Directory.CreateDirectory(hf);
        File.WriteAllText(Path.Combine(hf, "tokenizer.json"), HftRuntime.Tests.Model.HfBpeTokenizerTests.Small(HftRuntime.Tests.Model.HfBpeTokenizerTests.ByteLevelPre(prefix: false)).ToJsonString());
        File.WriteAllText(Path.Combine(hf, "tokenizer_config.json"), """{"bos_token": "<|end|>", "eos_token": "<|end|>"}""");
        var (code, output, err) = HftCli.Run("init", "--preset", "tiny", "--tokenizer", Path.Combine(hf, "tokenizer.json"), "--out", o);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("vocabulary 264 (hf-bpe)"));
        Assert.That(File.Exists(Path.Combine(o, "tokenizer.json")));
        string data = Path.Combine(work, "pairs.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $$"""{"prompt": "the cat {{i}}", "response": "at the cat"}"""));
        (code, _, err) = HftCli.Run("train", "--model", o, "--data", data, "--objective", "sft", "--method", "hft", "--steps", "2", "--batch", "2", "--seq", "64",
            "--held-out", "0", "--quiet", "--out", Path.Combine(work, "tuned"));
        Assert.That(code, Is.EqualTo(0), err);
        (code, output, err) = HftCli.Run("generate", "--model", Path.Combine(work, "tuned"), "--prompt", "the cat", "--max-tokens", "4", "--temperature", "0");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(HftRuntime.Model.Tokenizers.Tokenizers.Load(Path.Combine(work, "tuned")), Is.InstanceOf<HftRuntime.Model.Tokenizers.HfBpeTokenizer>());
    }
}
