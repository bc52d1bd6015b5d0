using System.Buffers.Binary;
using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Model;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;
using Tokenizers = HftRuntime.Model.Tokenizers.Tokenizers;

namespace HftRuntime.Tests.Model;

/// <summary>
/// hft half-reset (the HFT paper's pilot: the drawn half back to the base, the rest tuned) and hft diff (relative
/// change per tensor, by layer and category; markdown, JSON, PNG), against direct computations from the files.
/// </summary>
[TestFixture]
public sealed class HalfResetAndDiffTests
{
    private const ulong TrainSeed = 5;
    private string _work = null!, _base = null!, _other = null!, _trained = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _work = Fixtures.TempDirectory();
        _base = TestData.TinyModel(1);
        _other = TestData.TinyModel(2);
        string data = TestData.WriteText(_work, 20_000);
        _trained = Path.Combine(_work, "trained");
        var (code, _, err) = HftCli.Run("train", "--model", _base, "--data", data, "--method", "hft", "--steps", "4", "--batch", "2",
            "--seq", "32", "--lr", "3e-3", "--seed", TrainSeed.ToString(), "--threads", "2", "--eval-every", "0", "--quiet", "--out", _trained);
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
    }

    private string Out(string name) => Path.Combine(_work, name + "-" + Guid.NewGuid().ToString("N")[..8]);

    private static byte[] Bytes(ISafeTensorsSource source, string name)
    {
        var bytes = new byte[source.Get(name).ByteLength];
        source.ReadBytes(name, bytes);
        return bytes;
    }

    private static IReadOnlySet<string> Draw(string modelDir, FreezePolicy policy) =>
        policy.SelectFrozen(LlamaModel.TensorNames(LlamaConfig.Load(modelDir)));

    /// <summary>Every file and folder under <paramref name="dir"/> with its size and time, to prove nothing changed.</summary>
    private static string[] Snapshot(string dir) => !Directory.Exists(dir) ? [] :
        Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories)
            .Select(f => $"{Path.GetRelativePath(dir, f)}:{(File.Exists(f) ? new FileInfo(f).Length : -1)}:{File.GetLastWriteTimeUtc(f).Ticks}")
            .OrderBy(x => x, StringComparer.Ordinal).ToArray();

    // ---------------------------------------------------------------- half-reset

    [TestCase("hft", 7UL, 0.5)]
    [TestCase("hft", 11UL, 0.25)]
    [TestCase("layer", 3UL, 0.5)]
    [TestCase("model", 4UL, 0.5)]
    public void HalfResetTakesTheDrawnTensorsFromTheBaseBitwiseAndTheRestFromTheTuned(string policy, ulong seed, double ratio)
    {
        string o = Out("reset");
        var (code, stdout, err) = HftCli.Run("half-reset", "--base", _base, "--tuned", _other, "--out", o, "--policy", policy,
            "--seed", seed.ToString(), "--trainable-ratio", ratio.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        Assert.That(stdout, Does.Contain("wrote " + o));

        var expected = Draw(_other, FreezePolicy.Create(policy, seed, ratio));
        Assert.That(expected, Is.Not.Empty);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(o, HalfReset.ReportFileName)))!.AsObject();
        var reset = report["reset"]!.AsArray().Select(n => n!.GetValue<string>()).ToHashSet();
        Assert.That(reset, Is.EquivalentTo(expected), "the reset set is the freeze policy's draw for the same seed");
        Assert.That(report["policy"]!["name"]!.GetValue<string>(), Is.EqualTo(policy));
        Assert.That(report["seed"]!.GetValue<ulong>(), Is.EqualTo(seed));

        var specs = LlamaModel.ParameterSpecs(LlamaConfig.Load(o));
        using var b = SafeTensorsCheckpoint.Open(_base);
        using var t = SafeTensorsCheckpoint.Open(_other);
        using var r = SafeTensorsFile.Open(Path.Combine(o, "model.safetensors"));
        Assert.That(r.Names, Is.EqualTo(specs.Select(s => s.Name)), "every tensor, in model order");
        Assert.That(r.Metadata["format"], Is.EqualTo("pt"));
        int fromBase = 0;
        foreach (var s in specs)
        {
            Assert.That(r.Get(s.Name).DType, Is.EqualTo(SafeTensorsDType.F32));
            var want = expected.Contains(s.Name) ? Bytes(b, s.Name) : Bytes(t, s.Name);
            Assert.That(Bytes(r, s.Name), Is.EqualTo(want), $"{s.Name} must come bitwise from the {(expected.Contains(s.Name) ? "base" : "tuned")} model");
            // The two inputs differ everywhere but in the norms (all ones): the check above tells them apart.
            if (!s.Name.Contains("norm")) Assert.That(Bytes(b, s.Name), Is.Not.EqualTo(Bytes(t, s.Name)));
            if (expected.Contains(s.Name)) fromBase++;
        }
        Assert.That(fromBase, Is.EqualTo(expected.Count));
        Assert.That(report["reset_parameters"]!.GetValue<long>(), Is.EqualTo(specs.Where(s => expected.Contains(s.Name)).Sum(s => s.Count)));

        // A complete model directory: config and tokenizer of the tuned model, loadable by the runtime.
        Assert.That(File.ReadAllBytes(Path.Combine(o, "config.json")), Is.EqualTo(File.ReadAllBytes(Path.Combine(_other, "config.json"))));
        Assert.That(File.ReadAllBytes(Path.Combine(o, "tokenizer_config.json")), Is.EqualTo(File.ReadAllBytes(Path.Combine(_other, "tokenizer_config.json"))));
        Assert.That(Tokenizers.Load(o).Kind, Is.EqualTo(Tokenizers.Load(_other).Kind));
        Assert.That(Directory.GetFileSystemEntries(_work).Where(p => Path.GetFileName(p).StartsWith('.')), Is.Empty, "no staging directory left behind");
    }

    [Test]
    public void HalfResetWithTheTrainingSeedGivesBackTheHftTrainedModel()
    {
        // HFT training with seed S leaves exactly FreezePolicy.Hft(S)'s draw at the base values: resetting that draw
        // changes nothing, so the result is the trained model, byte for byte.
        string o = Out("reset-trained");
        var (code, _, err) = HftCli.Run("half-reset", "--base", _base, "--tuned", _trained, "--out", o, "--seed", TrainSeed.ToString());
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        var run = JsonNode.Parse(File.ReadAllText(Path.Combine(_trained, "run.json")))!;
        var frozen = run["frozen"]!.AsArray().Select(n => n!.GetValue<string>()).ToHashSet();
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(o, HalfReset.ReportFileName)))!;
        Assert.That(report["reset"]!.AsArray().Select(n => n!.GetValue<string>()), Is.EquivalentTo(frozen));
        using var trained = SafeTensorsCheckpoint.Open(_trained);
        using var r = SafeTensorsCheckpoint.Open(o);
        foreach (var name in trained.Names) Assert.That(Bytes(r, name), Is.EqualTo(Bytes(trained, name)), name);

        // Another seed resets a different half: those tensors go back to the base, so the model changes.
        string o2 = Out("reset-other-seed");
        Assert.That(HftCli.Run("half-reset", "--base", _base, "--tuned", _trained, "--out", o2, "--seed", (TrainSeed + 1).ToString()).Code, Is.EqualTo(Program.ExitOk));
        using var r2 = SafeTensorsCheckpoint.Open(o2);
        using var b = SafeTensorsCheckpoint.Open(_base);
        var draw2 = Draw(_trained, FreezePolicy.Hft(TrainSeed + 1));
        Assert.That(draw2.Except(frozen), Is.Not.Empty);
        foreach (var name in draw2) Assert.That(Bytes(r2, name), Is.EqualTo(Bytes(b, name)), name);
    }

    [Test]
    public void HalfResetLibraryCallWithAnExplicitListOnATiedShardedModel()
    {
        // The tied-embedding reference case as base; the tuned model is a perturbed copy stored in shards.
        string baseDir = Fixtures.CopyCase("llama-gqa-tied-hft");
        string tuned = Perturbed(baseDir, shardBytes: 64 << 10);
        Assert.That(File.Exists(Path.Combine(tuned, SafeTensorsCheckpoint.IndexFileName)));
        string list = Path.Combine(_work, "reset-list.txt");
        File.WriteAllLines(list, ["# attention of layer 1 and every MLP up projection", "model.layers.1.self_attn.*", "*.up_proj.weight"]);
        string o = Out("reset-explicit");
        var result = HalfReset.Run(baseDir, tuned, o, FreezePolicy.Explicit(list));

        var expected = new[] { "q", "k", "v", "o" }.Select(p => $"model.layers.1.self_attn.{p}_proj.weight")
            .Concat(Enumerable.Range(0, 3).Select(l => $"model.layers.{l}.mlp.up_proj.weight")).ToHashSet();
        Assert.That(result.ResetTensors, Is.EquivalentTo(expected));
        Assert.That(result.TotalTensors, Is.EqualTo(LlamaModel.ParameterSpecs(LlamaConfig.Load(baseDir)).Count));
        Assert.That(result.CopiedFiles, Is.EqualTo(new[] { "config.json" }));
        using var b = SafeTensorsCheckpoint.Open(baseDir);
        using var t = SafeTensorsCheckpoint.Open(tuned);
        using var r = SafeTensorsCheckpoint.Open(o);
        Assert.That(r.IsSharded, Is.False);
        Assert.That(r.Names, Does.Not.Contain("lm_head.weight"), "tied: no separate head");
        foreach (var name in b.Names)
            Assert.That(Bytes(r, name), Is.EqualTo(expected.Contains(name) ? Bytes(b, name) : Bytes(t, name)), name);
    }

    /// <summary>A copy of <paramref name="dir"/> with every tensor scaled by a per-tensor factor (1 + 0.01·i), sharded.</summary>
    private static string Perturbed(string dir, long shardBytes) => Perturbed(dir, shardBytes, new Dictionary<string, double>());

    /// <summary>As above; <paramref name="factors"/> receives each tensor's factor minus 1 (its relative change).</summary>
    private static string Perturbed(string dir, long shardBytes, Dictionary<string, double> factors)
    {
        string o = Path.Combine(Fixtures.TempDirectory(), "tuned");
        Directory.CreateDirectory(o);
        File.Copy(Path.Combine(dir, "config.json"), Path.Combine(o, "config.json"));
        using var source = SafeTensorsCheckpoint.Open(dir);
        var entries = new List<SafeTensorsWriter.Entry>();
        int i = 0;
        foreach (var name in source.Names)
        {
            var values = source.ReadFloat32(name);
            float factor = 1 + 0.01f * ++i;
            factors[name] = factor - 1.0;
            for (int j = 0; j < values.Length; j++) values[j] *= factor;
            entries.Add(SafeTensorsWriter.Entry.FromFloat32(name, values, source.Get(name).Shape));
        }
        SafeTensorsWriter.WriteSharded(o, entries, shardBytes);
        return o;
    }

    // ---------------------------------------------------------------- diff

    [Test]
    public void DiffReportsEqualADirectComputationAndDrawAPng()
    {
        string o = Out("diff");
        var (code, stdout, err) = HftCli.Run("diff", "--base", _base, "--tuned", _trained, "--out", o);
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        Assert.That(stdout, Does.Contain("attention").And.Contain("MLP"));

        var config = LlamaConfig.Load(_base);
        var names = LlamaModel.TensorNames(config);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(o, ParameterDiff.JsonFileName)))!.AsObject();
        var tensors = json["tensors"]!.AsObject();
        var direct = new Dictionary<string, double>();
        using (var b = SafeTensorsCheckpoint.Open(_base))
        using (var t = SafeTensorsCheckpoint.Open(_trained))
        {
            foreach (var s in LlamaModel.ParameterSpecs(config))
            {
                var a = t.ReadFloat64(s.Name);
                var x = b.ReadFloat64(s.Name);
                double dd = 0, bb = 0;
                for (int i = 0; i < a.Length; i++)
                {
                    dd += (a[i] - x[i]) * (a[i] - x[i]);
                    bb += x[i] * x[i];
                }
                direct[s.Name] = Math.Sqrt(dd) / Math.Sqrt(bb);
            }
        }
        Assert.That(tensors.Select(p => p.Key), Is.EquivalentTo(direct.Keys));
        foreach (var (name, value) in direct)
            Assert.That(tensors[name]!.GetValue<double>(), Is.EqualTo(value).Within(1e-12).Percent, name);

        // HFT: the frozen half is exactly unchanged, everything else moved.
        var frozen = Draw(_trained, FreezePolicy.Hft(TrainSeed));
        foreach (var (name, value) in direct) Assert.That(value == 0, Is.EqualTo(frozen.Contains(name)), name);

        // The layer table holds the same numbers, by category.
        var layers = json["layers"]!.AsArray();
        Assert.That(layers, Has.Count.EqualTo(config.NumHiddenLayers));
        var categories = json["categories"]!.AsArray().Select(n => n!.GetValue<string>()).ToArray();
        Assert.That(categories, Is.EqualTo(ParameterDiff.LayerCategories));
        for (int l = 0; l < layers.Count; l++)
        {
            var all = names.Layers[l].All.ToArray();
            for (int c = 0; c < categories.Length; c++)
                Assert.That(layers[l]![categories[c]]!.GetValue<double>(), Is.EqualTo(direct[all[c]]), $"layer {l} {categories[c]}");
        }
        Assert.That(json["embed_tokens"]!.GetValue<double>(), Is.EqualTo(direct["model.embed_tokens.weight"]));
        Assert.That(json["lm_head"]!.GetValue<double>(), Is.EqualTo(direct["lm_head.weight"]));
        Assert.That(json["final_norm"]!.GetValue<double>(), Is.EqualTo(direct["model.norm.weight"]));
        var summary = json["summary"]!;
        double Mean(IEnumerable<string> n) => n.Average(x => direct[x]);
        Assert.That(summary["attention"]!.GetValue<double>(), Is.EqualTo(Mean(names.Layers.SelectMany(l => l.Attention))).Within(1e-12).Percent);
        Assert.That(summary["mlp"]!.GetValue<double>(), Is.EqualTo(Mean(names.Layers.SelectMany(l => l.Mlp))).Within(1e-12).Percent);
        Assert.That(summary["norm"]!.GetValue<double>(), Is.EqualTo(Mean(names.Layers.SelectMany(l => l.Norms).Append(names.FinalNorm))).Within(1e-12).Percent);
        Assert.That(summary["unchanged_tensors"]!.GetValue<int>(), Is.EqualTo(frozen.Count));

        // Markdown: a header, one row per layer with the nine categories, the tensors outside the layers, the summary.
        var md = File.ReadAllLines(Path.Combine(o, ParameterDiff.MarkdownFileName));
        Assert.That(md, Does.Contain("| layer | q | k | v | o | gate | up | down | input_norm | post_norm |"));
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string row = md.Single(line => line.StartsWith($"| {l} |", StringComparison.Ordinal));
            var cells = row.Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            Assert.That(cells, Has.Length.EqualTo(10));
            var all = names.Layers[l].All.ToArray();
            for (int c = 0; c < 9; c++) Assert.That(cells[c + 1], Is.EqualTo(ParameterDiff.Format(direct[all[c]])));
        }
        Assert.That(md.Any(line => line.StartsWith("| embed_tokens | ", StringComparison.Ordinal)));
        Assert.That(md.Any(line => line.StartsWith("| lm_head | ", StringComparison.Ordinal)));
        Assert.That(md.Any(line => line.StartsWith("| final norm | ", StringComparison.Ordinal)));
        Assert.That(md.Count(line => line.StartsWith("- attention", StringComparison.Ordinal) || line.StartsWith("- MLP", StringComparison.Ordinal)
            || line.StartsWith("- norms", StringComparison.Ordinal)), Is.EqualTo(3));

        AssertPng(Path.Combine(o, "diff.png"));
    }

    /// <summary>A PNG: the signature, an IHDR of plausible size, the closing IEND chunk, and more than a few bytes.</summary>
    private static void AssertPng(string path)
    {
        Assert.That(File.Exists(path), path);
        var png = File.ReadAllBytes(path);
        Assert.That(png.Length, Is.GreaterThan(10_000), "a heat map with labels is not a few bytes");
        Assert.That(png[..8], Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }));
        Assert.That(System.Text.Encoding.ASCII.GetString(png, 12, 4), Is.EqualTo("IHDR"));
        int width = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), height = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20));
        Assert.That(width, Is.InRange(400, 4000));
        Assert.That(height, Is.InRange(300, 4000));
        Assert.That(System.Text.Encoding.ASCII.GetString(png, png.Length - 8, 4), Is.EqualTo("IEND"));
    }

    [Test]
    public void DiffOfATiedModelAndOfIdenticalModels()
    {
        string baseDir = Fixtures.CopyCase("llama-gqa-tied-hft");
        var factors = new Dictionary<string, double>();
        string tuned = Perturbed(baseDir, 1 << 30, factors);
        var diff = ParameterDiff.Compute(baseDir, tuned);
        Assert.That(diff.LmHead, Is.Null);
        Assert.That(diff.Tensors.Select(t => t.Name), Is.EquivalentTo(factors.Keys));
        // θ = f·θ₀ (rounded to float32) has relative change |f − 1|.
        foreach (var t in diff.Tensors) Assert.That(t.Relative, Is.EqualTo(factors[t.Name]).Within(1e-6), t.Name);
        var table = diff.LayerTable();
        for (int l = 0; l < diff.Layers; l++)
            for (int c = 0; c < ParameterDiff.LayerCategories.Count; c++) Assert.That(table[l, c], Is.EqualTo(diff.At(l, c).Relative));
        Assert.That(diff.ToJson()["lm_head"], Is.Null);
        Assert.That(diff.ToMarkdown(), Does.Contain("| lm_head | tied to embed_tokens |"));

        string o = Out("diff-same");
        var (code, _, err) = HftCli.Run("diff", "--base", _base, "--tuned", _base, "--out", o);
        Assert.That(code, Is.EqualTo(Program.ExitOk), err);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(o, ParameterDiff.JsonFileName)))!;
        Assert.That(json["tensors"]!.AsObject().Select(p => p.Value!.GetValue<double>()), Is.All.EqualTo(0));
        Assert.That(json["summary"]!["unchanged_tensors"]!.GetValue<int>(), Is.EqualTo(json["summary"]!["tensors"]!.GetValue<int>()));
        AssertPng(Path.Combine(o, "diff.png"));
    }

    // ---------------------------------------------------------------- bad input

    private static IEnumerable<string> Commands() => ["half-reset", "diff"];

    /// <summary>Runs a command that must fail with exit 2, write nothing and leave both inputs as they were.</summary>
    private string Fails(string command, string baseDir, string tuned, string? output = null)
    {
        string o = output ?? Out("fail");
        var before = (Snapshot(baseDir), Snapshot(tuned));
        var parentBefore = Snapshot(Path.GetDirectoryName(o)!);
        var (code, stdout, err) = HftCli.Run(command, "--base", baseDir, "--tuned", tuned, "--out", o);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), stdout + err);
        Assert.That((Snapshot(baseDir), Snapshot(tuned)), Is.EqualTo(before), "the inputs must be untouched");
        if (output is null)
        {
            Assert.That(Directory.Exists(o), Is.False, "nothing may be written on failure");
            Assert.That(Snapshot(Path.GetDirectoryName(o)!), Is.EqualTo(parentBefore), "no staging directory left behind");
        }
        return err;
    }

    private static string CopyModel(string dir)
    {
        string o = Path.Combine(Fixtures.TempDirectory(), "copy");
        Directory.CreateDirectory(o);
        foreach (var f in Directory.GetFiles(dir)) File.Copy(f, Path.Combine(o, Path.GetFileName(f)));
        return o;
    }

    /// <summary>Rewrites a model's weights through <paramref name="edit"/> (name, values, shape → entry or null to drop).</summary>
    private static void RewriteWeights(string dir, Func<string, float[], long[], SafeTensorsWriter.Entry?> edit)
    {
        string path = Path.Combine(dir, "model.safetensors");
        var entries = new List<SafeTensorsWriter.Entry>();
        using (var file = SafeTensorsFile.Open(path))
        {
            foreach (var name in file.Names)
            {
                if (edit(name, file.ReadFloat32(name), file.Get(name).Shape) is { } e) entries.Add(e);
            }
        }
        SafeTensorsWriter.Write(path, entries, ParameterIo.PtMetadata);
    }

    [TestCaseSource(nameof(Commands))]
    public void ConfigsOfDifferentArchitecturesAreRefused(string command)
    {
        string tuned = CopyModel(_other);
        string configPath = Path.Combine(tuned, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["intermediate_size"] = 128;
        File.WriteAllText(configPath, config.ToJsonString());
        string err = Fails(command, _base, tuned);
        Assert.That(err, Does.Contain("intermediate_size").And.Contain(_base).And.Contain(tuned).And.Contain("128").And.Contain("176"));
    }

    [TestCaseSource(nameof(Commands))]
    public void AMissingTensorIsRefused(string command)
    {
        string tuned = CopyModel(_other);
        const string missing = "model.layers.1.mlp.up_proj.weight";
        RewriteWeights(tuned, (name, values, shape) => name == missing ? null : SafeTensorsWriter.Entry.FromFloat32(name, values, shape));
        string err = Fails(command, _base, tuned);
        Assert.That(err, Does.Contain(missing).And.Contain(_base).And.Contain(tuned).And.Contain("missing"));
        // The other way round: the base lacks it.
        err = Fails(command, tuned, _base);
        Assert.That(err, Does.Contain(missing).And.Contain(_base).And.Contain(tuned).And.Contain("missing"));
    }

    [TestCaseSource(nameof(Commands))]
    public void AShapeMismatchIsRefused(string command)
    {
        string tuned = CopyModel(_other);
        const string odd = "model.layers.0.self_attn.o_proj.weight";
        RewriteWeights(tuned, (name, values, shape) =>
            SafeTensorsWriter.Entry.FromFloat32(name, values, name == odd ? [shape[1], shape[0] / 2, 2] : shape));
        string err = Fails(command, _base, tuned);
        Assert.That(err, Does.Contain(odd).And.Contain(_base).And.Contain(tuned).And.Contain("[64, 32, 2]").And.Contain("[64, 64]"));
    }

    [TestCaseSource(nameof(Commands))]
    public void AnOutputThatIsAnInputOrNotEmptyIsRefused(string command)
    {
        string baseDir = CopyModel(_base), tuned = CopyModel(_other);
        Assert.That(Fails(command, baseDir, tuned, output: tuned), Does.Contain("tuned model directory"));
        Assert.That(Fails(command, baseDir, tuned, output: baseDir + Path.DirectorySeparatorChar), Does.Contain("base model directory"));
        string full = Out("full");
        Directory.CreateDirectory(full);
        File.WriteAllText(Path.Combine(full, "keep.txt"), "mine");
        Assert.That(Fails(command, baseDir, tuned, output: full), Does.Contain("not empty"));
        Assert.That(Directory.GetFileSystemEntries(full), Has.Length.EqualTo(1));
        Assert.That(Fails(command, baseDir, Path.Combine(_work, "no-such-model")), Does.Contain("no-such-model"));
    }

    [Test]
    public void AStagedDirectoryLeavesNothingBehindUnlessCommitted()
    {
        string root = Fixtures.TempDirectory();
        string target = Path.Combine(root, "a", "b", "out");
        using (var staged = StagedDirectory.Create(target))
        {
            File.WriteAllText(Path.Combine(staged.Path, "x.txt"), "x");
            Assert.That(Directory.Exists(target), Is.False, "invisible until committed");
        }
        Assert.That(Directory.GetFileSystemEntries(root), Is.Empty, "staging and the parents it created are gone");

        using (var staged = StagedDirectory.Create(target))
        {
            File.WriteAllText(Path.Combine(staged.Path, "x.txt"), "x");
            staged.Commit();
        }
        Assert.That(File.ReadAllText(Path.Combine(target, "x.txt")), Is.EqualTo("x"));
        Assert.That(Directory.GetFileSystemEntries(Path.GetDirectoryName(target)!), Has.Length.EqualTo(1));
        Assert.Throws<InvalidInputException>(() => StagedDirectory.Create(target).Dispose());
    }
}
