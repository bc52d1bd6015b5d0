namespace HftRuntime.Runtime.Training;

/// <summary>Everything that shapes a training run (the CLI's options, resolved). Defaults follow common practice.</summary>
public sealed record TrainingOptions
{
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 100;

    /// <summary>Sequences per micro-batch.</summary>
    public int Batch { get; init; } = 8;

    /// <summary>Tokens per sequence.</summary>
    public int Seq { get; init; } = 128;

    /// <summary>Micro-batches per optimizer step (gradient accumulation).</summary>
    public int GradAccum { get; init; } = 1;

    /// <summary>Peak learning rate.</summary>
    public float Lr { get; init; } = 3e-4f;

    /// <summary>Learning rate at the end of the cosine decay.</summary>
    public float MinLr { get; init; }

    /// <summary>Linear warm-up steps; null means 5 % of <see cref="Steps"/>.</summary>
    public int? WarmupSteps { get; init; }

    /// <summary>AdamW β1.</summary>
    public float Beta1 { get; init; } = 0.9f;

    /// <summary>AdamW β2.</summary>
    public float Beta2 { get; init; } = 0.999f;

    /// <summary>AdamW ε.</summary>
    public float Eps { get; init; } = 1e-8f;

    /// <summary>AdamW decoupled weight decay (2-D weights only).</summary>
    public float WeightDecay { get; init; }

    /// <summary>Global gradient-norm clipping over the trainable parameters (0: off).</summary>
    public float ClipNorm { get; init; } = 1.0f;

    /// <summary>Seed of the data order (and of anything else random in the run).</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Steps between evaluations on the held-out split (0: only at the end).</summary>
    public int EvalEvery { get; init; }

    /// <summary>Batches per evaluation.</summary>
    public int EvalBatches { get; init; } = 8;

    /// <summary>Steps between checkpoints (0: only at the end).</summary>
    public int SaveEvery { get; init; }

    /// <summary>Checkpoints kept on disk (the newest ones).</summary>
    public int KeepCheckpoints { get; init; } = 2;

    /// <summary>Steps between progress reports.</summary>
    public int LogEvery { get; init; } = 10;

    /// <summary>Consecutive non-finite steps (skipped) after which the run stops with an error.</summary>
    public int MaxConsecutiveNanSteps { get; init; } = 5;

    /// <summary>The warm-up length in effect.</summary>
    public int EffectiveWarmup => WarmupSteps ?? (int)Math.Round(0.05 * Steps);

    /// <summary>Checks every value; throws ArgumentOutOfRangeException naming the option.</summary>
    public void Validate()
    {
        static void Positive(int v, string name) { if (v <= 0) throw new ArgumentOutOfRangeException(name, v, $"--{name} must be positive"); }
        Positive(Steps, "steps"); Positive(Batch, "batch"); Positive(Seq, "seq"); Positive(GradAccum, "accum");
        Positive(EvalBatches, "eval-batches"); Positive(LogEvery, "log-every"); Positive(KeepCheckpoints, "keep-checkpoints");
        Positive(MaxConsecutiveNanSteps, "max-nan-steps");
        if (!(Lr > 0) || float.IsInfinity(Lr)) throw new ArgumentOutOfRangeException("lr", Lr, "--lr must be a positive number");
        if (!(MinLr >= 0) || MinLr > Lr) throw new ArgumentOutOfRangeException("min-lr", MinLr, "--min-lr must lie in [0, lr]");
        if (WarmupSteps is < 0) throw new ArgumentOutOfRangeException("warmup", WarmupSteps, "--warmup must be >= 0");
        if (!(ClipNorm >= 0)) throw new ArgumentOutOfRangeException("clip", ClipNorm, "--clip must be >= 0");
        if (EvalEvery < 0 || SaveEvery < 0) throw new ArgumentOutOfRangeException("eval-every", "--eval-every and --save-every must be >= 0");
        new AdamWOptions(Beta1, Beta2, Eps, WeightDecay).Validate();
    }

    /// <summary>
    /// The learning rate of optimizer step <paramref name="step"/> (0-based): linear warm-up lr·(step+1)/warmup over
    /// the first warmup steps, then cosine decay from lr towards min_lr over the remaining ones (Hugging Face's schedule: the last step's rate is
    /// still above min_lr).
    /// </summary>
    public float LearningRate(int step)
    {
        int warmup = EffectiveWarmup;
        if (step < warmup) return Lr * (step + 1) / warmup;
        int decay = Math.Max(1, Steps - warmup);
        double progress = Math.Clamp((double)(step - warmup) / decay, 0, 1);
        return (float)(MinLr + (Lr - MinLr) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}
