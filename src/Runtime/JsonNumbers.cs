using System.Globalization;
using System.Text.Json.Nodes;

namespace HftRuntime.Runtime;

/// <summary>Reads a JSON number whatever CLR type the node was built from (int, long, float, double).</summary>
public static class JsonNumbers
{
    /// <summary>The node's number as a double; NaN for null.</summary>
    public static double ToDouble(JsonNode? node) =>
        node is null ? double.NaN : double.Parse(node.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture);
}
