using HftRuntime.Model;
using HftRuntime.Runtime;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

[TestFixture]
public sealed class FreezePolicyTests
{
    private static LlamaConfig Config(int layers, bool tied = false) => new()
    {
        VocabSize = 300, HiddenSize = 64, IntermediateSize = 160, NumHiddenLayers = layers, NumAttentionHeads = 4,
        NumKeyValueHeads = 2, TieWordEmbeddings = tied,
    };

    private static ModelTensorNames Names(int layers, bool tied = false) => LlamaModel.TensorNames(Config(layers, tied));

    [TestCase(12, 1UL)]
    [TestCase(3, 42UL)]
    [TestCase(7, 5UL)]
    public void HftDrawsByCategoryPerLayer(int layers, ulong seed)
    {
        var names = Names(layers);
        var frozen = FreezePolicy.Hft(seed).SelectFrozen(names);
        int twoMlp = 0;
        foreach (var l in names.Layers)
        {
            Assert.That(l.Attention.Count(frozen.Contains), Is.EqualTo(2));
            Assert.That(l.Norms.Count(frozen.Contains), Is.EqualTo(1));
            int mlp = l.Mlp.Count(frozen.Contains);
            Assert.That(mlp, Is.InRange(1, 2));
            if (mlp == 2) twoMlp++;
        }
        Assert.That(twoMlp, Is.EqualTo(layers / 2), "2 of {gate, up, down} in a random half of the layers");
        Assert.That(names.Embeddings.Any(frozen.Contains) || frozen.Contains(names.FinalNorm), Is.False);
        Assert.That(FreezePolicy.Hft(seed).SelectFrozen(names), Is.EquivalentTo(frozen), "reproducible from the seed");
        Assert.That(FreezePolicy.Hft(seed + 1).SelectFrozen(names), Is.Not.EquivalentTo(frozen), "another seed, another draw");
    }

    [Test]
    public void TheReferenceCaseFrozenListIsAnHftDraw()
    {
        var config = LlamaConfig.Load(Path.Combine(Fixtures.Case("llama-gqa-tied-hft"), "config.json"));
        var golden = HftRuntime.Model.Diagnostics.GoldenCase.Load(Fixtures.Case("llama-gqa-tied-hft"));
        var names = LlamaModel.TensorNames(config);
        var frozen = golden.Frozen.ToHashSet();
        Assert.That(names.Layers.Select(l => l.Attention.Count(frozen.Contains)), Is.All.EqualTo(2));
        Assert.That(names.Layers.Select(l => l.Norms.Count(frozen.Contains)), Is.All.EqualTo(1));
        Assert.That(names.Layers.Sum(l => l.Mlp.Count(frozen.Contains)), Is.EqualTo(4), "3 layers: one with 2, two with 1 (floor of 1.5 x 3)");
    }

    [Test]
    public void HftCanFreezeEmbeddingsAndScalesWithTheRatio()
    {
        var names = Names(8);
        var withEmb = FreezePolicy.Hft(3, freezeEmbeddings: true).SelectFrozen(names);
        Assert.That(names.Embeddings, Is.SubsetOf(withEmb));
        var quarter = FreezePolicy.Hft(3, trainableRatio: 0.25).SelectFrozen(names);
        Assert.That(names.Layers.Sum(l => l.Attention.Count(quarter.Contains)), Is.EqualTo(24));   // 4 · 0.75 · 8
        Assert.That(names.Layers.Sum(l => l.Mlp.Count(quarter.Contains)), Is.EqualTo(18));         // 3 · 0.75 · 8
        Assert.That(FreezePolicy.Hft(3, trainableRatio: 1.0).SelectFrozen(names), Is.Empty);
    }

    [Test]
    public void LayerAndModelPolicies()
    {
        var names = Names(10);
        var layer = FreezePolicy.Layer(9).SelectFrozen(names);
        var whole = names.Layers.Where(l => l.All.All(layer.Contains)).Count();
        Assert.That(whole, Is.EqualTo(5));
        Assert.That(layer.Count, Is.EqualTo(5 * 9));
        var model = FreezePolicy.Model(9).SelectFrozen(names);
        Assert.That(names.Layers.Sum(l => l.Attention.Concat(l.Mlp).Count(model.Contains)), Is.EqualTo(35));
        Assert.That(names.Layers.Sum(l => l.Norms.Count(model.Contains)), Is.EqualTo(10));
        Assert.That(FreezePolicy.None.SelectFrozen(names), Is.Empty);
    }

    [Test]
    public void ExplicitListsTakeNamesAndGlobs()
    {
        var names = Names(3, tied: true);
        string file = Path.Combine(Fixtures.TempDirectory(), "freeze.txt");
        File.WriteAllLines(file, ["# freeze the MLP down projections and one norm", "model.layers.*.mlp.down_proj.weight", "", "model.layers.1.input_layernorm.weight  # trailing comment"]);
        var frozen = FreezePolicy.Explicit(file).SelectFrozen(names);
        Assert.That(frozen, Is.EquivalentTo(new[]
        {
            "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight",
            "model.layers.1.input_layernorm.weight",
        }));
        File.AppendAllLines(file, ["lm_head.weight"]);
        var e = Assert.Throws<InvalidInputException>(() => FreezePolicy.Explicit(file).SelectFrozen(names));
        Assert.That(e!.Message, Does.Contain("freeze.txt:5").And.Contain("lm_head.weight"));
    }

    [TestCase(0.0)]
    [TestCase(-0.5)]
    [TestCase(1.01)]
    [TestCase(double.NaN)]
    public void RatioOutsideTheUnitIntervalIsRejected(double ratio)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => FreezePolicy.Hft(1, ratio));
        Assert.Throws<ArgumentOutOfRangeException>(() => FreezePolicy.Layer(1, ratio));
    }

    [Test]
    public void UnknownPolicyIsRejected() =>
        Assert.That(Assert.Throws<ArgumentException>(() => FreezePolicy.Create("random", 1))!.Message, Does.Contain("random"));
}

[TestFixture]
public sealed class PolicyCommandTests
{
    [Test]
    public void PrintsTheFrozenNamesReproducibly()
    {
        string dir = Fixtures.Case("llama-gqa-tied-hft");
        var (code, output, err) = HftCli.Run("policy", "--model", dir, "--policy", "hft", "--seed", "3");
        Assert.That(code, Is.EqualTo(0), err);
        var names = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith('#')).ToList();
        Assert.That(names, Has.Count.EqualTo(13));
        Assert.That(names, Is.All.StartsWith("model.layers."));
        Assert.That(HftCli.Run("policy", "--model", dir, "--policy", "hft", "--seed", "3").Out, Is.EqualTo(output));
        Assert.That(output, Does.Contain("parameters trainable"));
    }
}
