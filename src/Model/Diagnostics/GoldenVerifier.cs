using System.Text.Json.Nodes;
using HftRuntime.Kernels;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Objectives;
using HftRuntime.Runtime.SafeTensors;

namespace HftRuntime.Model.Diagnostics;

/// <summary>One compared quantity of a verification.</summary>
/// <param name="Quantity">What was compared (loss, logits, grad.NAME, after.NAME, ...).</param>
/// <param name="RelativeError">‖ours − ref‖ / ‖ref‖ (for a scalar: |ours − ref| / |ref|).</param>
/// <param name="MaxAbsError">Largest element-wise |ours − ref|.</param>
/// <param name="Tolerance">Largest relative error accepted (0 for bit-identity).</param>
/// <param name="Pass">Whether the quantity is within tolerance.</param>
public sealed record VerifyRow(string Quantity, double RelativeError, double MaxAbsError, double Tolerance, bool Pass);

/// <summary>The outcome of checking one reference case.</summary>
/// <param name="Case">The case directory.</param>
/// <param name="Device">The back-end's device in words.</param>
/// <param name="Rows">Every compared quantity.</param>
/// <param name="Precision">The arithmetic the model ran in.</param>
public sealed record VerifyReport(string Case, string Device, IReadOnlyList<VerifyRow> Rows, Precision Precision = Precision.Fp32)
{
    /// <summary>True when every quantity is within tolerance.</summary>
    public bool Passed => Rows.All(r => r.Pass);
}

/// <summary>
/// Checks our model against a reference case made with Hugging Face transformers in float64 (see
/// tests/fixtures/README or ../shared/goldens/README.md): the loss, the logits, the gradient of every parameter, the
/// AdamW steps with the case's frozen list (frozen tensors bit-identical), and, where the case has one, the DPO
/// loss and gradient, in fp32 or in bf16 mixed precision (with the looser tolerances of <see cref="Tolerances"/>).
/// </summary>
public static class GoldenVerifier
{
    /// <summary>Tolerance for losses and logits (relative), fp32.</summary>
    public const double LossTolerance = 1e-5;

    /// <summary>Tolerance for gradients, DPO's included (relative norm), fp32.</summary>
    public const double GradientTolerance = 1e-4;

    /// <summary>Tolerance for parameters after the AdamW steps (relative norm), fp32.</summary>
    public const double ParameterTolerance = 5e-4;

    /// <summary>
    /// (loss and logits, gradients, parameters after AdamW) for a precision. bf16 keeps 8 significant bits: each
    /// rounded operand is off by up to u = 2⁻⁹ ≈ 2e-3 relative, so a product with both operands rounded is off by
    /// about 2u ≈ 4e-3 per term, and random-signed errors partly cancel in the sums. Logits pass through two or three
    /// such products in sequence per layer: 1e-2 (≈ 5u; the fixtures measure 3.4e-3). Gradients pass through the
    /// forward products and as many again backwards, with each output gradient rounded too: 3e-2 (≈ 15u; measured
    /// ≤ 8e-3). Parameters after AdamW: Adam's first steps move every weight by about lr·sign(g) whatever |g| is, so
    /// an element whose gradient is smaller than its bf16 error may move the other way, 2·lr apart; that gives
    /// 1e-2 relative to the weights' norm (measured ≤ 5.5e-3, with elements up to 2·lr apart).
    /// </summary>
    public static (double Loss, double Gradient, double Parameter) Tolerances(Precision precision) =>
        precision == Precision.Bf16 ? (1e-2, 3e-2, 1e-2) : (LossTolerance, GradientTolerance, ParameterTolerance);

    /// <summary>Runs every check of the case in <paramref name="directory"/> on <paramref name="backend"/>.</summary>
    public static VerifyReport Run(string directory, Backend backend, Precision precision = Precision.Fp32)
    {
        var (LossTolerance, GradientTolerance, ParameterTolerance) = Tolerances(precision);
        var golden = GoldenCase.Load(directory);
        var rows = new List<VerifyRow>();
        var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        using var weights = SafeTensorsCheckpoint.Open(directory);
        using var reference = SafeTensorsFile.Open(Path.Combine(directory, "golden.safetensors"));
        int b = golden.Batch, t = golden.Seq, v = config.VocabSize;

        // 1. Loss, logits and every gradient with nothing frozen; then the DPO gradient.
        using (var model = LlamaModel.Create(backend, config, new LlamaModelOptions(golden.Dpo is null ? b : 2 * b, t, Optimizer: false, Precision: precision)))
        {
            model.LoadWeights(weights);
            model.SetInputs(ModelInputs.FromLabels(golden.InputIds, golden.Labels, b, t));
            model.Forward();
            rows.Add(Scalar("loss", model.Loss(), golden.Loss0, LossTolerance));
            var logits = new float[b * t * v];
            backend.Download<float>(model.Logits, logits);
            rows.Add(Compare("logits", logits, reference.ReadFloat64("logits"), LossTolerance));
            model.ZeroGradients();
            model.Backward();
            foreach (var p in model.Parameters.All)
                rows.Add(Compare("grad." + p.Name, model.DownloadGradient(p.Name), reference.ReadFloat64("grad." + p.Name), GradientTolerance));

            if (golden.Dpo is { } dpo)
            {
                var chosen = ToInt(reference.ReadInt64("dpo.chosen"));
                var rejected = ToInt(reference.ReadInt64("dpo.rejected"));
                var inputs = Dpo.BuildInputs(chosen, ResponseLabels(chosen, t, dpo.ResponseStartsAt), rejected,
                    ResponseLabels(rejected, t, dpo.ResponseStartsAt), b, t);
                model.SetInputs(inputs);
                model.ZeroGradients();
                model.Forward();
                var rowLosses = backend.ToArray<float>(model.RowLosses.Slice(0, inputs.Rows));
                var policy = Dpo.PairLogProbs(rowLosses, inputs);
                // The reference model is the starting checkpoint, which is what the model holds now.
                double loss = Dpo.LossAndRowScale(policy, policy, dpo.Beta, inputs, normalizer: b).Loss;
                rows.Add(Scalar("dpo.loss", loss, dpo.Loss, LossTolerance));
                model.SetRowScale(inputs.RowScale);
                model.Backward();
                foreach (var p in model.Parameters.All)
                    rows.Add(Compare("dpo.grad." + p.Name, model.DownloadGradient(p.Name), reference.ReadFloat64("dpo.grad." + p.Name), GradientTolerance));
            }
        }

        // 2. AdamW steps on the same batch with the case's frozen list.
        var frozen = new HashSet<string>(golden.Frozen, StringComparer.Ordinal);
        using (var model = LlamaModel.Create(backend, config, new LlamaModelOptions(b, t, frozen, Precision: precision)))
        {
            model.LoadWeights(weights);
            var optimizer = new AdamWOptimizer(backend, model.Parameters, golden.AdamW);
            model.SetInputs(ModelInputs.FromLabels(golden.InputIds, golden.Labels, b, t));
            for (int s = 0; s < golden.Steps; s++)
            {
                model.ZeroGradients();
                model.Forward(writeGradient: true);
                float loss = model.Loss();
                if (s < golden.LossesDuringAdamW.Length)
                    rows.Add(Scalar($"adamw.loss[{s}]", loss, golden.LossesDuringAdamW[s], LossTolerance));
                model.Backward();
                optimizer.Step(golden.Lr);
            }
            model.Forward();
            rows.Add(Scalar("adamw.loss_after", model.Loss(), golden.LossAfterAdamW, LossTolerance));
            foreach (var p in model.Parameters.All)
            {
                var ours = model.DownloadWeights(p.Name);
                var after = reference.ReadFloat64("after." + p.Name);
                if (p.Trainable) rows.Add(Compare("after." + p.Name, ours, after, ParameterTolerance));
                else rows.Add(BitIdentical("frozen." + p.Name, ours, Held(weights.ReadFloat32(p.Name), p), after, heldInBf16: p.Value.Type == DType.BF16));
            }
        }
        return new VerifyReport(directory, backend.DeviceName, rows, precision);
    }

    /// <summary>The initial values as the model holds them: rounded to bf16 for a bf16-held frozen tensor.</summary>
    private static float[] Held(float[] initial, Parameter p) =>
        p.Value.Type == DType.BF16 ? Array.ConvertAll(initial, Bf16.Round) : initial;

    private static int[] ToInt(long[] a) => Array.ConvertAll(a, x => checked((int)x));

    private static int[] ResponseLabels(int[] ids, int seq, int start)
    {
        var labels = new int[ids.Length];
        for (int i = 0; i < ids.Length; i++) labels[i] = i % seq >= start ? ids[i] : Backend.IgnoreIndex;
        return labels;
    }

    private static VerifyRow Scalar(string name, double ours, double reference, double tol)
    {
        double abs = Math.Abs(ours - reference);
        double rel = abs / Math.Max(Math.Abs(reference), double.Epsilon);
        return new VerifyRow(name, rel, abs, tol, rel <= tol);
    }

    /// <summary>Relative norm error and largest absolute error of <paramref name="ours"/> against <paramref name="reference"/>.</summary>
    public static VerifyRow Compare(string name, ReadOnlySpan<float> ours, ReadOnlySpan<double> reference, double tol)
    {
        if (ours.Length != reference.Length)
            return new VerifyRow(name + $" (length {ours.Length} vs {reference.Length})", double.PositiveInfinity, double.PositiveInfinity, tol, false);
        double diff = 0, norm = 0, max = 0;
        for (int i = 0; i < ours.Length; i++)
        {
            double d = ours[i] - reference[i];
            diff += d * d; norm += reference[i] * reference[i];
            max = Math.Max(max, Math.Abs(d));
            if (double.IsNaN(d)) max = double.NaN;
        }
        double rel = Math.Sqrt(diff) / Math.Max(Math.Sqrt(norm), double.Epsilon);
        return new VerifyRow(name, rel, max, tol, rel <= tol && !double.IsNaN(max));
    }

    /// <summary>
    /// A frozen tensor: ours must equal what the model was given (bit for bit) and the reference's values after the
    /// steps, except that a tensor held in bf16 equals the reference rounded to bf16 (its max error is then shown).
    /// </summary>
    private static VerifyRow BitIdentical(string name, float[] ours, float[] initial, double[] after, bool heldInBf16)
    {
        bool same = ours.Length == initial.Length && ours.AsSpan().SequenceEqual(initial);
        double max = 0;
        for (int i = 0; i < Math.Min(ours.Length, after.Length); i++) max = Math.Max(max, Math.Abs(ours[i] - after[i]));
        bool matchesReference = ours.Length == after.Length &&
            (heldInBf16 ? ours.Select((x, i) => x == Bf16.Round((float)after[i])).All(b => b) : max == 0);
        return new VerifyRow(heldInBf16 ? name + " (bf16)" : name, same ? 0 : double.PositiveInfinity, max, 0, same && matchesReference);
    }
}
