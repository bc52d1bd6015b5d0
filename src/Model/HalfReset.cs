using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using HftRuntime.Runtime;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Model;

/// <summary>What <see cref="HalfReset.Run"/> wrote.</summary>
/// <param name="OutputDirectory">The model directory written (full path).</param>
/// <param name="ResetTensors">The tensors reset to the base model's values, in model order.</param>
/// <param name="Policy">The policy settings, as <see cref="FreezePolicy.Describe"/> gives them.</param>
/// <param name="TotalTensors">Number of tensors of the model.</param>
/// <param name="ResetParameters">Number of parameters in <paramref name="ResetTensors"/>.</param>
/// <param name="TotalParameters">Number of parameters of the model.</param>
/// <param name="CopiedFiles">The files copied from the tuned model (config.json and tokenizer files).</param>
public sealed record HalfResetResult(string OutputDirectory, IReadOnlyList<string> ResetTensors, JsonObject Policy,
    int TotalTensors, long ResetParameters, long TotalParameters, IReadOnlyList<string> CopiedFiles);

/// <summary>
/// The half-reset of Hui et al. (HFT, §2 pilot experiment): the tensors a freeze policy draws (with the
/// default <see cref="FreezePolicy.Hft"/>, a category-level half of every layer) are reset to the base model's
/// values, every other tensor keeps the tuned model's. The draw is <see cref="FreezePolicy.SelectFrozen"/> itself,
/// so the seed of a training run reproduces that run's frozen set.
/// <para>
/// The output is a complete model directory: <c>config.json</c> and the tokenizer files copied from the tuned
/// model, <c>model.safetensors</c> (float32, streamed tensor by tensor: one tensor in memory at a time, never two
/// whole models) and <see cref="ReportFileName"/> (the reset tensors, the policy and its seed). Everything is
/// checked before anything is written, and the directory appears only once complete.
/// </para>
/// </summary>
public static class HalfReset
{
    /// <summary>The report written beside the weights.</summary>
    public const string ReportFileName = "half_reset.json";

    /// <summary>Files of a model directory besides the weights that are copied from the tuned model when present.</summary>
    public static readonly IReadOnlyList<string> CopiedFileNames =
    [
        "config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.model", "tokenizer.json",
        "special_tokens_map.json", "added_tokens.json",
    ];

    /// <summary>
    /// Writes the half-reset of <paramref name="tunedDirectory"/> towards <paramref name="baseDirectory"/> into
    /// <paramref name="outputDirectory"/>, which must not exist or be empty and must differ from both inputs.
    /// </summary>
    /// <exception cref="InvalidInputException">
    /// The models differ in architecture (a config field, a missing tensor, a shape), a file is unreadable, or the
    /// output directory is not fresh. Nothing is written then.
    /// </exception>
    public static HalfResetResult Run(string baseDirectory, string tunedDirectory, string outputDirectory, FreezePolicy policy)
    {
        ArgumentException.ThrowIfNullOrEmpty(baseDirectory);
        ArgumentException.ThrowIfNullOrEmpty(tunedDirectory);
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        ArgumentNullException.ThrowIfNull(policy);
        OutputPaths.RequireDistinct(outputDirectory, baseDirectory, "base model directory", "write the half-reset model elsewhere (--out)");
        OutputPaths.RequireDistinct(outputDirectory, tunedDirectory, "tuned model directory", "write the half-reset model elsewhere (--out)");

        using var pair = ModelPair.Open(baseDirectory, tunedDirectory);
        var reset = policy.SelectFrozen(LlamaModel.TensorNames(pair.Config));
        var resetNames = pair.Specs.Where(s => reset.Contains(s.Name)).Select(s => s.Name).ToList();
        long resetParameters = pair.Specs.Where(s => reset.Contains(s.Name)).Sum(s => s.Count);
        long totalParameters = pair.Specs.Sum(s => s.Count);
        var describe = policy.Describe();

        using var staged = StagedDirectory.Create(outputDirectory);
        var buffer = new TensorBuffer();
        var entries = pair.Specs.Select(s => Entry(s, pair.Weights(fromBase: reset.Contains(s.Name)), buffer)).ToList();
        SafeTensorsWriter.Write(Path.Combine(staged.Path, SafeTensorsCheckpoint.SingleFileName), entries, ParameterIo.PtMetadata);

        var copied = new List<string>();
        foreach (string name in CopiedFileNames)
        {
            string source = Path.Combine(tunedDirectory, name);
            if (!File.Exists(source)) continue;
            File.Copy(source, Path.Combine(staged.Path, name));
            copied.Add(name);
        }

        var report = new JsonObject
        {
            ["base"] = Path.GetFullPath(baseDirectory),
            ["tuned"] = Path.GetFullPath(tunedDirectory),
            ["policy"] = describe.DeepClone(),
            ["seed"] = describe["seed"]?.DeepClone(),
            ["reset"] = new JsonArray(resetNames.Select(n => (JsonNode)n).ToArray()),
            ["reset_tensors"] = resetNames.Count,
            ["tensors"] = pair.Specs.Count,
            ["reset_parameters"] = resetParameters,
            ["total_parameters"] = totalParameters,
        };
        File.WriteAllText(Path.Combine(staged.Path, ReportFileName),
            report.ToJsonString(new JsonSerializerOptions { WriteIndented = true, IndentSize = 2, NewLine = "\n" }) + "\n");
        staged.Commit();
        return new HalfResetResult(staged.Destination, resetNames, describe, pair.Specs.Count, resetParameters, totalParameters, copied);
    }

    /// <summary>A float32 entry whose bytes are read from <paramref name="source"/> when the writer reaches it.</summary>
    private static SafeTensorsWriter.Entry Entry(ParameterSpec spec, ISafeTensorsSource source, TensorBuffer buffer) =>
        new(spec.Name, SafeTensorsDType.F32, spec.Shape.Select(d => (long)d).ToArray(), (offset, destination) =>
        {
            // The writer asks for the chunks of one tensor in order, starting at 0: load the tensor then.
            if (offset == 0) buffer.Load(source, spec.Name, (int)spec.Count);
            var values = buffer.Values.AsSpan((int)(offset / sizeof(float)), destination.Length / sizeof(float));
            MemoryMarshal.AsBytes(values).CopyTo(destination);
            if (!BitConverter.IsLittleEndian)
            {
                for (int i = 0; i < destination.Length; i += sizeof(float)) destination.Slice(i, sizeof(float)).Reverse();
            }
        });

    /// <summary>One reusable array holding the tensor being written.</summary>
    private sealed class TensorBuffer
    {
        public float[] Values { get; private set; } = [];

        public void Load(ISafeTensorsSource source, string name, int count)
        {
            if (Values.Length < count) Values = new float[count];
            source.ReadFloat32(name, Values.AsSpan(0, count));
        }
    }
}
