using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Model.Diagnostics;

/// <summary>The DPO settings of a reference case.</summary>
/// <param name="Beta">DPO's β.</param>
/// <param name="Loss">The reference loss.</param>
/// <param name="ResponseStartsAt">First token position that belongs to the response.</param>
public sealed record GoldenDpo(double Beta, double Loss, int ResponseStartsAt);

/// <summary>
/// A reference case's description: golden.json plus the batch from golden.safetensors. Format: see the README of
/// the reference cases (B, T, loss0, losses_during_adamw, loss_after_adamw, adamw settings, frozen list, dpo).
/// </summary>
public sealed class GoldenCase
{
    private GoldenCase() { }

    /// <summary>Sequences in the batch.</summary>
    public int Batch { get; private init; }

    /// <summary>Tokens per sequence.</summary>
    public int Seq { get; private init; }

    /// <summary>Input ids [Batch · Seq].</summary>
    public int[] InputIds { get; private init; } = [];

    /// <summary>Labels [Batch · Seq] (unshifted, −100 = no loss).</summary>
    public int[] Labels { get; private init; } = [];

    /// <summary>Loss at the initial weights.</summary>
    public double Loss0 { get; private init; }

    /// <summary>Loss before each AdamW step.</summary>
    public double[] LossesDuringAdamW { get; private init; } = [];

    /// <summary>Loss after the last AdamW step.</summary>
    public double LossAfterAdamW { get; private init; }

    /// <summary>AdamW steps taken.</summary>
    public int Steps { get; private init; }

    /// <summary>Learning rate of the steps.</summary>
    public float Lr { get; private init; }

    /// <summary>The other AdamW settings.</summary>
    public AdamWOptions AdamW { get; private init; } = new();

    /// <summary>Names of the frozen tensors.</summary>
    public string[] Frozen { get; private init; } = [];

    /// <summary>DPO settings, when the case has a DPO gradient.</summary>
    public GoldenDpo? Dpo { get; private init; }

    /// <summary>Reads golden.json and the batch of golden.safetensors in <paramref name="directory"/>.</summary>
    public static GoldenCase Load(string directory)
    {
        string path = Path.Combine(directory, "golden.json");
        if (!File.Exists(path)) throw new InvalidInputException(path, "file not found (a reference case needs golden.json)");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidInputException(path, "not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"malformed JSON: {e.Message}", e);
        }
        T Get<T>(JsonNode? parent, string field)
        {
            var node = parent?[field] ?? throw new InvalidInputException(path, $"field '{field}' is missing");
            try { return node.GetValue<T>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new InvalidInputException(path, $"field '{field}' is not a {typeof(T).Name}", e);
            }
        }
        double[] Doubles(string field) => (root[field] as JsonArray ?? throw new InvalidInputException(path, $"field '{field}' is missing"))
            .Select(n => n!.GetValue<double>()).ToArray();

        var adamw = root["adamw"] as JsonObject ?? throw new InvalidInputException(path, "field 'adamw' is missing");
        var betas = adamw["betas"] as JsonArray ?? throw new InvalidInputException(path, "field 'adamw.betas' is missing");
        GoldenDpo? dpo = root["dpo"] is JsonObject d
            ? new GoldenDpo(Get<double>(d, "beta"), Get<double>(d, "loss"), Get<int>(d, "response_starts_at"))
            : null;

        int batch = Get<int>(root, "B"), seq = Get<int>(root, "T");
        using var gold = SafeTensorsFile.Open(Path.Combine(directory, "golden.safetensors"));
        int[] ReadIds(string name)
        {
            var a = gold.ReadInt64(name);
            if (a.Length != batch * seq)
                throw new InvalidInputException(gold.Path, $"tensor '{name}' has {a.Length} elements, golden.json says B x T = {batch * seq}");
            return Array.ConvertAll(a, x => checked((int)x));
        }
        return new GoldenCase
        {
            Batch = batch, Seq = seq,
            InputIds = ReadIds("input_ids"), Labels = ReadIds("labels"),
            Loss0 = Get<double>(root, "loss0"),
            LossesDuringAdamW = Doubles("losses_during_adamw"),
            LossAfterAdamW = Get<double>(root, "loss_after_adamw"),
            Steps = Get<int>(root, "steps"),
            Lr = (float)Get<double>(adamw, "lr"),
            AdamW = new AdamWOptions((float)betas[0]!.GetValue<double>(), (float)betas[1]!.GetValue<double>(),
                (float)Get<double>(adamw, "eps"), (float)Get<double>(adamw, "weight_decay")),
            Frozen = (root["frozen"] as JsonArray ?? new JsonArray()).Select(n => n!.GetValue<string>()).ToArray(),
            Dpo = dpo,
        };
    }
}
