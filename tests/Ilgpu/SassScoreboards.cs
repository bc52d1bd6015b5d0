using System.Globalization;
using System.Text.RegularExpressions;

namespace HftRuntime.Tests.Ilgpu;

/// <summary>
/// A cubin's instructions as NVIDIA's nvdisasm prints them (-hex), with the scoreboard fields of their control bits:
/// on sm_70 and later each instruction is 128 bits, and bits 105 to 125 hold the stall count (4 bits), the yield
/// flag, the scoreboard a variable-latency instruction (a global load) sets when its result arrives (3 bits, 7 =
/// none), the one it sets when its operands have been read (3 bits), and the mask of scoreboards the instruction
/// waits for before it issues (6 bits). A load's latency is hidden only as far as the first instruction that waits
/// on its scoreboard.
/// </summary>
internal static class SassScoreboards
{
    /// <summary>One instruction: address, text (predicate, opcode, operands), the scoreboard it sets on arrival, the scoreboards it waits for.</summary>
    internal sealed record Instruction(int Address, string Text, int WriteBarrier, int WaitMask)
    {
        /// <summary>The opcode with its modifiers, without a predicate.</summary>
        public string Opcode => Regex.Replace(Text, @"^@!?U?P\w+\s+", "").Split(' ')[0];
    }

    private static readonly Regex Line = new(@"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;\s*/\* 0x([0-9a-f]{16}) \*/", RegexOptions.Compiled);
    private static readonly Regex High = new(@"^\s*/\* 0x([0-9a-f]{16}) \*/", RegexOptions.Compiled);

    /// <summary>Parses nvdisasm -hex output (each instruction's line, then a line with its high 64 bits).</summary>
    public static List<Instruction> Parse(string disassembly)
    {
        var lines = disassembly.Split('\n');
        var list = new List<Instruction>();
        for (int i = 0; i + 1 < lines.Length; i++)
        {
            var m = Line.Match(lines[i]);
            if (!m.Success) continue;
            var hi = High.Match(lines[i + 1]);
            if (!hi.Success) continue;
            ulong h = ulong.Parse(hi.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            list.Add(new Instruction(int.Parse(m.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture), m.Groups[2].Value,
                (int)(h >> 46) & 7, (int)(h >> 52) & 0x3F));
            i++;
        }
        return list;
    }

    /// <summary>
    /// For each global load between the first and the last barrier (a kernel's main loop, where the next tile is
    /// loaded while the current one is multiplied): the load and how many instructions matching
    /// <paramref name="work"/> come between it and the first instruction, in program order, that waits for it.
    /// </summary>
    public static List<(Instruction Load, int WorkBefore)> LoadsInTheLoop(IReadOnlyList<Instruction> code, Func<Instruction, bool> work)
    {
        int first = -1, last = -1;
        for (int i = 0; i < code.Count; i++)
            if (code[i].Opcode.StartsWith("BAR.SYNC", StringComparison.Ordinal))
            {
                if (first < 0) first = i;
                last = i;
            }
        var result = new List<(Instruction, int)>();
        if (first < 0) return result;
        for (int i = first + 1; i < last; i++)
        {
            var load = code[i];
            if (!load.Opcode.StartsWith("LDG", StringComparison.Ordinal) || load.WriteBarrier == 7) continue;
            int done = 0, j = i + 1;
            for (; j < code.Count && (code[j].WaitMask >> load.WriteBarrier & 1) == 0; j++)
                if (work(code[j])) done++;
            result.Add((load, done));
        }
        return result;
    }
}
