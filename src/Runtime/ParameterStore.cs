using HftRuntime.Kernels;

namespace HftRuntime.Runtime;

/// <summary>What a model declares about one parameter tensor.</summary>
/// <param name="Name">Hugging Face tensor name.</param>
/// <param name="Shape">Dimensions, row-major.</param>
/// <param name="Decay">Whether AdamW's weight decay applies (2-D weights: yes; norms: no).</param>
public sealed record ParameterSpec(string Name, int[] Shape, bool Decay)
{
    /// <summary>Number of elements.</summary>
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>One parameter tensor: its value and, when trainable, its gradient (views into the store's blocks).</summary>
public sealed class Parameter
{
    internal Parameter(ParameterSpec spec, bool trainable, Tensor value, Tensor grad, long offset, Tensor compute)
    {
        Spec = spec; Trainable = trainable; Value = value; Grad = grad; Offset = offset; Compute = compute;
    }

    /// <summary>The declaration.</summary>
    public ParameterSpec Spec { get; }

    /// <summary>Hugging Face tensor name.</summary>
    public string Name => Spec.Name;

    /// <summary>Dimensions.</summary>
    public int[] Shape => Spec.Shape;

    /// <summary>Number of elements.</summary>
    public int Count => Value.Count;

    /// <summary>False for a frozen parameter: it has no gradient, no optimizer state and is never written.</summary>
    public bool Trainable { get; }

    /// <summary>
    /// The weights: F32, except a frozen matrix of a bf16 store, which is held in BF16 alone. Read and write them
    /// through <see cref="ParameterStore.Read"/> and <see cref="ParameterStore.Write"/>, which convert.
    /// </summary>
    public Tensor Value { get; }

    /// <summary>
    /// The copy matrix products read: <see cref="Value"/> in fp32; in bf16 the BF16 copy of a trainable tensor
    /// (rewritten by every optimizer step) or the BF16 value of a frozen matrix (a frozen tensor outside the bf16
    /// set, such as a tied embedding, stays F32 here).
    /// </summary>
    public Tensor Compute { get; }

    /// <summary>The gradient (same layout as <see cref="Value"/>); the empty tensor when frozen.</summary>
    public Tensor Grad { get; }

    /// <summary>Offset of this tensor inside its block (trainable or frozen), in elements.</summary>
    public long Offset { get; }
}

/// <summary>
/// All parameters of a model in one arena. Trainable tensors are laid out contiguously in one block (decayed ones
/// first), and only that block has a gradient buffer and AdamW moments of the same layout; frozen tensors sit in a
/// separate block with neither. The AdamW segment table (start, length, decay) covers the trainable block with
/// one segment per run of equal decay, so one launch updates every trainable tensor and touches nothing frozen.
/// </summary>
public sealed class ParameterStore
{
    private readonly Dictionary<string, Parameter> _byName = new(StringComparer.Ordinal);
    private readonly List<Parameter> _all = new();
    private readonly int[] _segmentTable;

    private ParameterStore(DeviceArena arena, IReadOnlyList<ParameterSpec> specs, IReadOnlySet<string> frozen, bool withOptimizer,
        Precision precision, IReadOnlySet<string> bf16Matrices)
    {
        Precision = precision;
        var unknown = frozen.Where(n => !specs.Any(s => s.Name == n)).ToList();
        if (unknown.Count > 0)
            throw new ArgumentException($"frozen list names tensors the model does not have: {string.Join(", ", unknown)}", nameof(frozen));
        var dup = specs.GroupBy(s => s.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup != null) throw new ArgumentException($"parameter '{dup.Key}' is declared twice", nameof(specs));

        var trainable = specs.Where(s => !frozen.Contains(s.Name)).OrderByDescending(s => s.Decay).ToList();
        bool bf16 = precision == Precision.Bf16;
        var frozenSpecs = specs.Where(s => frozen.Contains(s.Name) && !(bf16 && bf16Matrices.Contains(s.Name))).ToList();
        var frozenBf16Specs = specs.Where(s => frozen.Contains(s.Name) && bf16 && bf16Matrices.Contains(s.Name)).ToList();
        TrainableCount = trainable.Sum(s => s.Count);
        FrozenCount = frozenSpecs.Sum(s => s.Count) + frozenBf16Specs.Sum(s => s.Count);

        TrainableValues = arena.Reserve("params.trainable", TrainableCount);
        FrozenValues = arena.Reserve("params.frozen", frozenSpecs.Sum(s => s.Count));
        if (bf16)
        {
            FrozenBf16 = arena.Reserve("params.frozen.bf16", frozenBf16Specs.Sum(s => s.Count), DType.BF16);
            TrainableBf16 = arena.Reserve("params.trainable.bf16", TrainableCount, DType.BF16);
        }
        HasOptimizerState = withOptimizer && TrainableCount > 0;
        if (TrainableCount > 0)
        {
            Grads = arena.Reserve("grads", TrainableCount);
            GradStats = arena.Reserve("grads.stats", 2);
        }
        if (HasOptimizerState)
        {
            Moment1 = arena.Reserve("adamw.m", TrainableCount);
            Moment2 = arena.Reserve("adamw.v", TrainableCount);
        }

        var segments = new List<int>();
        long offset = 0;
        foreach (var s in trainable)
        {
            var value = TrainableValues.Slice(offset, (int)s.Count);
            var p = new Parameter(s, true, value, Grads.Slice(offset, (int)s.Count), offset, bf16 ? TrainableBf16.Slice(offset, (int)s.Count) : value);
            int decay = s.Decay ? 1 : 0;
            if (segments.Count > 0 && segments[^1] == decay) segments[^2] += (int)s.Count;
            else { segments.Add((int)offset); segments.Add((int)s.Count); segments.Add(decay); }
            offset += s.Count;
            _byName[s.Name] = p;
        }
        offset = 0;
        foreach (var s in frozenSpecs)
        {
            var value = FrozenValues.Slice(offset, (int)s.Count);
            _byName[s.Name] = new Parameter(s, false, value, default, offset, value);
            offset += s.Count;
        }
        offset = 0;
        foreach (var s in frozenBf16Specs)
        {
            var value = FrozenBf16.Slice(offset, (int)s.Count);
            _byName[s.Name] = new Parameter(s, false, value, default, offset, value);
            offset += s.Count;
        }
        foreach (var s in specs) _all.Add(_byName[s.Name]);
        _segmentTable = segments.ToArray();
        SegmentCount = _segmentTable.Length / 3;
        if (SegmentCount > 0) Segments = arena.Reserve("adamw.segments", _segmentTable.Length, DType.I32);
    }

    /// <summary>
    /// Reserves the blocks for <paramref name="specs"/> in <paramref name="arena"/> (not yet committed).
    /// Call <see cref="Initialize"/> after the arena is committed.
    /// </summary>
    /// <remarks>
    /// With <see cref="Precision.Bf16"/>, trainable tensors get a BF16 compute copy (<see cref="TrainableBf16"/>,
    /// same layout) and frozen tensors named in <paramref name="bf16Matrices"/> are held in BF16 alone.
    /// </remarks>
    public static ParameterStore Reserve(DeviceArena arena, IReadOnlyList<ParameterSpec> specs, IReadOnlySet<string> frozen, bool withOptimizer,
        Precision precision = Precision.Fp32, IReadOnlySet<string>? bf16Matrices = null)
    {
        long total = specs.Sum(s => s.Count);
        if (specs.Any(s => s.Count > int.MaxValue) || total > int.MaxValue)
            throw new ArgumentException($"the model has {total} parameters; this version holds at most {int.MaxValue} per block");
        return new ParameterStore(arena, specs, frozen, withOptimizer, precision, bf16Matrices ?? new HashSet<string>());
    }

    /// <summary>Writes the segment table to the device (after the arena is committed).</summary>
    public void Initialize(Backend backend)
    {
        if (SegmentCount > 0) backend.Upload<int>(Segments, _segmentTable);
    }

    /// <summary>
    /// Rewrites the BF16 compute copy of the trainable block from the fp32 masters (bf16 stores; nothing in fp32).
    /// Call after writing trainable values other than through the optimizer, which keeps the copy current itself.
    /// </summary>
    public void SyncCompute(Backend backend)
    {
        if (!TrainableBf16.IsEmpty && TrainableCount > 0) backend.ToBf16(TrainableBf16, TrainableValues);
    }

    /// <summary>A parameter's values as float32 (a BF16-held tensor is widened exactly).</summary>
    public static float[] Read(Backend backend, Parameter p)
    {
        if (p.Value.Type == DType.F32) return backend.ToArray<float>(p.Value);
        var bits = backend.ToArray<ushort>(p.Value);
        var values = new float[bits.Length];
        for (int i = 0; i < bits.Length; i++) values[i] = Bf16.ToFloat(bits[i]);
        return values;
    }

    /// <summary>
    /// Writes a parameter's values (rounded to bfloat16 for a BF16-held tensor). Writing a trainable tensor of a
    /// bf16 store also refreshes its compute copy.
    /// </summary>
    public void Write(Backend backend, Parameter p, ReadOnlySpan<float> values)
    {
        if (values.Length != p.Count) throw new ArgumentException($"'{p.Name}' has {p.Count} elements, got {values.Length}");
        if (p.Value.Type == DType.F32)
        {
            backend.Upload(p.Value, values);
            if (p.Trainable && !TrainableBf16.IsEmpty) backend.ToBf16(p.Compute, p.Value);
            return;
        }
        var bits = new ushort[values.Length];
        for (int i = 0; i < bits.Length; i++) bits[i] = Bf16.FromFloat(values[i]);
        backend.Upload<ushort>(p.Value, bits);
    }

    /// <summary>The arithmetic of the model this store belongs to.</summary>
    public Precision Precision { get; }

    /// <summary>The BF16 compute copy of the trainable block (bf16 stores only; else empty).</summary>
    public Tensor TrainableBf16 { get; }

    /// <summary>The BF16 block of frozen matrices (bf16 stores only; else empty).</summary>
    public Tensor FrozenBf16 { get; }

    /// <summary>Bytes of every weight copy on the device: fp32 masters, frozen blocks and the bf16 compute copy.</summary>
    public long WeightBytes => TrainableValues.Bytes + FrozenValues.Bytes + (FrozenBf16.IsEmpty ? 0 : FrozenBf16.Bytes) + (TrainableBf16.IsEmpty ? 0 : TrainableBf16.Bytes);

    /// <summary>Every parameter in declaration order.</summary>
    public IReadOnlyList<Parameter> All => _all;

    /// <summary>The parameter called <paramref name="name"/>.</summary>
    public Parameter this[string name] => _byName.TryGetValue(name, out var p) ? p
        : throw new KeyNotFoundException($"no parameter named '{name}'");

    /// <summary>Looks a parameter up by name.</summary>
    public bool TryGet(string name, out Parameter parameter) => _byName.TryGetValue(name, out parameter!);

    /// <summary>Elements in trainable tensors.</summary>
    public long TrainableCount { get; }

    /// <summary>Elements in frozen tensors.</summary>
    public long FrozenCount { get; }

    /// <summary>Whether AdamW moments were reserved.</summary>
    public bool HasOptimizerState { get; }

    /// <summary>The contiguous block of trainable weights.</summary>
    public Tensor TrainableValues { get; }

    /// <summary>The block of frozen weights held in F32 (in a bf16 store: those outside the bf16 set).</summary>
    public Tensor FrozenValues { get; }

    /// <summary>Gradients of the trainable block (same layout); empty if nothing is trainable.</summary>
    public Tensor Grads { get; }

    /// <summary>Two device scalars: [0] the squared global gradient norm, [1] the clipping scale AdamW applies.</summary>
    public Tensor GradStats { get; }

    /// <summary>AdamW first moments (same layout); empty without optimizer state.</summary>
    public Tensor Moment1 { get; }

    /// <summary>AdamW second moments (same layout); empty without optimizer state.</summary>
    public Tensor Moment2 { get; }

    /// <summary>The segment table, I32 [SegmentCount, 3]: start, length, decay flag.</summary>
    public Tensor Segments { get; }

    /// <summary>Rows of the segment table.</summary>
    public int SegmentCount { get; }

    /// <summary>The segment table as the host sees it.</summary>
    public ReadOnlySpan<int> SegmentTable => _segmentTable;
}
