using HftRuntime.Model.Tokenizers;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;
using HftRuntime.Tests.Support;
using NUnit.Framework;

namespace HftRuntime.Tests.Runtime;

[TestFixture]
public sealed class DataTests
{
    [Test]
    public void WindowsCoverTheStreamAndTargetsAreTheNextTokens()
    {
        var tokens = Enumerable.Range(0, 1001).ToArray();
        var b = new LmBatcher(tokens, 3, 10, 5, "test");
        Assert.That(b.Windows, Is.EqualTo(100));
        var seen = new HashSet<int>();
        for (int i = 0; i < 34; i++)
        {
            var m = b.Next();
            for (int r = 0; r < m.Rows; r++)
            {
                Assert.That(m.Targets[r], Is.EqualTo(m.Ids[r] + 1));
                Assert.That(m.RowScale[r], Is.EqualTo(1f));
                if (r % 10 == 0) { Assert.That(m.Ids[r] % 10, Is.Zero); seen.Add(m.Ids[r] / 10); }
            }
        }
        Assert.That(seen, Has.Count.EqualTo(100), "one epoch visits every window once");
        Assert.That(b.Position.Epoch, Is.EqualTo(1));
    }

    [Test]
    public void APositionDeterminesWhatFollows()
    {
        var tokens = Enumerable.Range(0, 5001).Select(i => i % 97).ToArray();
        var a = new LmBatcher(tokens, 4, 16, 9, "test");
        for (int i = 0; i < 7; i++) a.Next();
        var pos = a.Position;
        var expect = a.Next().Ids.ToArray();
        var b = new LmBatcher(tokens, 4, 16, 9, "test") { Position = pos };
        Assert.That(b.Next().Ids, Is.EqualTo(expect));
        var other = new LmBatcher(tokens, 4, 16, 10, "test") { Position = pos };
        Assert.That(other.Next().Ids, Is.Not.EqualTo(expect), "another seed, another order");
    }

    [Test]
    public void TooShortForOneBatchNamesTheSource()
    {
        var e = Assert.Throws<InvalidInputException>(() => new LmBatcher(new int[50], 4, 16, 1, "tiny.txt"));
        Assert.That(e!.Message, Does.Contain("tiny.txt").And.Contain("too short"));
    }

    [Test]
    public void CorpusSplitsHeldOutTailAndRejectsInvalidUtf8()
    {
        string dir = Fixtures.TempDirectory();
        string path = TestData.WriteText(dir, 2000);
        var c = TokenCorpus.FromTextFile(path, new ByteTokenizer(), 0.1);
        int total = c.Train.Length + c.HeldOut.Length;
        Assert.That(total, Is.EqualTo(new FileInfo(path).Length + 2), "bytes plus BOS and EOS");
        Assert.That(c.HeldOut.Length, Is.EqualTo(total / 10));
        Assert.That(c.Train[0], Is.EqualTo(256));
        string bad = Path.Combine(dir, "bad.txt");
        File.WriteAllBytes(bad, [0x41, 0x42, 0xC3, 0x28, 0x43]);
        var e = Assert.Throws<InvalidInputException>(() => TokenCorpus.FromTextFile(bad, new ByteTokenizer()));
        Assert.That(e!.Message, Does.Contain("bad.txt").And.Contain("UTF-8").And.Contain("byte 2"));
    }
}
