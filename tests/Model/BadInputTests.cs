using System.Text.Json.Nodes;
using HftRuntime.Cli;
using HftRuntime.Runtime.SafeTensors;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Model;

/// <summary>Broken reference cases give a clear error naming the file and tensor or field, exit code 2, and write nothing.</summary>
[TestFixture]
public sealed class BadInputTests
{
    private static (int Code, string Err) Verify(string dir)
    {
        var before = Snapshot(dir);
        var (code, _, err) = HftCli.Run("verify", "--device", "cpu", "--golden", dir);
        Assert.That(Snapshot(dir), Is.EqualTo(before), "verify must not write anything");
        return (code, err);
    }

    private static string[] Snapshot(string dir) =>
        Directory.GetFiles(dir).Select(f => $"{Path.GetFileName(f)}:{new FileInfo(f).Length}:{File.GetLastWriteTimeUtc(f).Ticks}").OrderBy(x => x).ToArray();

    [Test]
    public void MissingWeights()
    {
        string dir = Fixtures.CopyCase("llama-mha");
        File.Delete(Path.Combine(dir, "model.safetensors"));
        var (code, err) = Verify(dir);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain(dir).And.Contain("model.safetensors"));
    }

    [Test]
    public void TruncatedWeights()
    {
        string dir = Fixtures.CopyCase("llama-mha");
        string path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length - 1000).ToArray());
        var (code, err) = Verify(dir);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("model.safetensors"));
    }

    [Test]
    public void TensorShapeDisagreesWithConfig()
    {
        string dir = Fixtures.CopyCase("llama-gqa-tied-hft");
        Rewrite(Path.Combine(dir, "model.safetensors"), "model.layers.1.self_attn.k_proj.weight", [64, 32]);
        var (code, err) = Verify(dir);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("model.layers.1.self_attn.k_proj.weight").And.Contain("[64, 32]").And.Contain("[32, 64]"));
    }

    [Test]
    public void MissingTensor()
    {
        string dir = Fixtures.CopyCase("llama-mha");
        Rewrite(Path.Combine(dir, "model.safetensors"), "lm_head.weight", null);
        var (code, err) = Verify(dir);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("lm_head.weight"));
    }

    [Test]
    public void LayerTheConfigDoesNotHave()
    {
        string dir = Fixtures.CopyCase("llama-mha");
        EditConfig(dir, c => c["num_hidden_layers"] = 1);
        var (code, err) = Verify(dir);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput));
        Assert.That(err, Does.Contain("model.layers.1.").And.Contain("num_hidden_layers"));
    }

    [TestCase("attention_bias", "true")]
    [TestCase("mlp_bias", "true")]
    [TestCase("hidden_act", "\"gelu\"")]
    [TestCase("rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}")]
    public void UnsupportedConfigValue(string field, string json)
    {
        string dir = Fixtures.CopyCase("llama-mha");
        EditConfig(dir, c => c[field] = JsonNode.Parse(json));
        var (code, err) = Verify(dir);
        Assert.That(code, Is.EqualTo(Program.ExitBadInput), err);
        Assert.That(err, Does.Contain("config.json").And.Contain(field == "rope_scaling" ? "yarn" : field));
    }

    private static void EditConfig(string dir, Action<JsonObject> edit)
    {
        string path = Path.Combine(dir, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(c);
        File.WriteAllText(path, c.ToJsonString());
    }

    /// <summary>Rewrites a safetensors file with one tensor reshaped (same data) or removed (shape null).</summary>
    private static void Rewrite(string path, string name, long[]? shape)
    {
        var entries = new List<SafeTensorsWriter.Entry>();
        using (var file = SafeTensorsFile.Open(path))
            foreach (var n in file.Names)
            {
                if (n == name && shape is null) continue;
                entries.Add(SafeTensorsWriter.Entry.FromFloat32(n, file.ReadFloat32(n), n == name ? shape : file.Get(n).Shape));
            }
        SafeTensorsWriter.Write(path, entries);
    }
}
