using HftRuntime.Kernels;
using HftRuntime.Runtime;
using HftRuntime.Runtime.Data;

namespace HftRuntime.Model;

/// <summary>How <see cref="LlamaGenerator.Generate"/> picks and stops.</summary>
/// <param name="MaxNewTokens">Most tokens to generate per prompt (at least 1).</param>
/// <param name="Temperature">Softmax temperature of the sampling; 0 picks the most likely token (greedy).</param>
/// <param name="TopP">
/// Nucleus sampling: only the most likely tokens whose probabilities add up to at least <paramref name="TopP"/> are
/// drawn from, in (0, 1]; 1 keeps the whole vocabulary. Ignored when greedy.
/// </param>
/// <param name="Seed">
/// Seed of the sampling; prompt i of a call draws from its own stream <c>Rng.Derive(Seed, i)</c>, so a result does not
/// depend on how the prompts are batched.
/// </param>
/// <param name="StopAtEos">
/// Stop a sequence after it generates the end-of-sequence token (config.json's eos_token_id) or one of
/// <paramref name="StopIds"/>.
/// </param>
/// <param name="UseKvCache">
/// True (the default): prefill once, then one token per step against the key/value cache. False: recompute the
/// model's full forward pass over the whole sequence for every new token (slow; the reference the cached path is
/// tested against).
/// </param>
/// <param name="StopIds">
/// More ids that end a sequence with <paramref name="StopAtEos"/>: the tokenizer's EOS, which ends every turn that
/// training appended it to, and the rest of an eos_token_id list (Llama 3 Instruct ends turns with &lt;|eot_id|&gt;,
/// not config.json's first id); see <see cref="StopTokens"/>.
/// </param>
public sealed record GenerationOptions(int MaxNewTokens = 64, float Temperature = 0f, float TopP = 1f, ulong Seed = 1,
    bool StopAtEos = true, bool UseKvCache = true, IReadOnlySet<int>? StopIds = null)
{
    /// <summary>Greedy decoding of up to <paramref name="maxNewTokens"/> tokens, stopping at EOS and <paramref name="stopIds"/>.</summary>
    public static GenerationOptions Greedy(int maxNewTokens, IReadOnlySet<int>? stopIds = null) => new(maxNewTokens, StopIds: stopIds);

    /// <summary>Throws an <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (MaxNewTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, $"the number of new tokens must be positive, got {MaxNewTokens}");
        if (!(Temperature >= 0) || float.IsPositiveInfinity(Temperature))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, $"the temperature must be a finite number >= 0 (0: greedy), got {Temperature}");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, $"top-p must lie in (0, 1], got {TopP}");
    }
}

/// <summary>
/// Text generation with a loaded <see cref="LlamaModel"/>: its weights (the parameters' value tensors) are used in
/// place, never copied. The generator owns a second arena on the model's back-end with the key/value cache (per
/// layer K and V of [maxBatch · maxLength, kvHeads · headDim]; sequence slot s owns rows s · maxLength …), RoPE tables
/// for maxLength positions, and the activations of one prefill (up to maxLength − 1 rows) or one decode step (up to
/// maxBatch rows); nothing of the model's own activations is touched on this path, so any model layout works
/// (<see cref="LlamaModelOptions"/>(1, 1, Training: false) is enough).
/// </summary>
/// <remarks>
/// <para>
/// Cached path: the prompts of a batch are placed in cache slots in order of length, and each prompt is prefilled on
/// its own (one forward pass over its tokens, keys and values written straight into its slot, logits only for its
/// last position), so prompts of different lengths need neither padding nor masks. Each decode step then feeds the
/// last token of every unfinished sequence as one batch through the projections and the MLP; the new keys and values
/// are copied into each sequence's slot, and <see cref="Backend.AttentionDecode"/> runs once per run of adjacent slots
/// whose sequences have the same length (once per step when the prompts have equal lengths).
/// </para>
/// <para>
/// Recomputing path (<see cref="GenerationOptions.UseKvCache"/> false): the model's own <see cref="LlamaModel.Forward"/>
/// over each whole sequence so far (right-padded to the longest in a batch of up to the model's
/// <see cref="LlamaModel.MaxBatch"/>; causal attention makes the padding invisible), reading the logits of each
/// sequence's last position. It needs a model whose <see cref="LlamaModel.MaxSeq"/> holds the longest sequence fed,
/// min(prompt + MaxNewTokens, maxLength) − 1 tokens; training or inference layout both work. It overwrites the
/// model's inputs, activations and logits.
/// </para>
/// <para>
/// Tokens are picked on the host from the last position's logits (<see cref="SampleToken"/>). A sequence ends after
/// MaxNewTokens tokens, after the EOS token when asked, or when prompt and continuation reach maxLength tokens. Not
/// thread-safe.
/// </para>
/// </remarks>
public sealed class LlamaGenerator : IDisposable
{
    private readonly LlamaModel _model;
    private readonly Backend _be;
    private readonly LlamaConfig _c;
    private readonly DeviceArena _arena;
    private readonly Layer[] _layers;
    private readonly Tensor _embed, _head, _finalNorm;
    private readonly Tensor _ids, _positions, _iota, _cos, _sin;
    private readonly Tensor _x, _next, _xMid, _xn, _rstd, _q, _k, _v, _attn, _gate, _up, _h;
    private readonly Tensor _finalXn, _finalRstd, _logits;
    private readonly Tensor _operandBf16;
    private readonly float _scale, _eps;
    private bool _disposed;

    private sealed record Layer(Tensor Q, Tensor K, Tensor V, Tensor O, Tensor Gate, Tensor Up, Tensor Down, Tensor InputNorm, Tensor PostNorm,
        Tensor KCache, Tensor VCache);

    /// <summary>
    /// A generator for <paramref name="model"/> that holds up to <paramref name="maxBatch"/> sequences of up to
    /// <paramref name="maxLength"/> tokens (prompt and continuation) at once. The model must stay alive (and keep its
    /// weights) while the generator is used; the generator does not dispose it.
    /// </summary>
    public LlamaGenerator(LlamaModel model, int maxBatch, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (maxBatch <= 0) throw new ArgumentOutOfRangeException(nameof(maxBatch), maxBatch, $"maxBatch must be positive, got {maxBatch}");
        if (maxLength < 2)
            throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, $"maxLength must be at least 2 (a prompt token and a new one), got {maxLength}");
        _model = model; _be = model.Backend; _c = model.Config;
        MaxBatch = maxBatch; MaxLength = maxLength;
        int d = _c.HiddenSize, f = _c.IntermediateSize, hd = _c.HeadDim, v = _c.VocabSize;
        int qd = _c.NumAttentionHeads * hd, kvd = _c.NumKeyValueHeads * hd;
        long cacheRows = (long)maxBatch * maxLength, rows = Math.Max(maxLength, maxBatch);
        if (cacheRows * kvd > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(maxLength), $"a key/value cache of {maxBatch} x {maxLength} tokens x {kvd} values per layer is larger than one tensor can be ({int.MaxValue} elements)");
        var p = model.Parameters;
        _embed = p["model.embed_tokens.weight"].Value;
        _finalNorm = p["model.norm.weight"].Value;
        _head = p[_c.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight"].Compute;
        _scale = 1f / MathF.Sqrt(hd);
        _eps = (float)_c.RmsNormEps;

        _arena = _be.CreateArena();
        try
        {
            Tensor R(string name, long count, DType t = DType.F32) => _arena.Reserve("gen." + name, count, t);
            _layers = new Layer[_c.NumHiddenLayers];
            for (int l = 0; l < _layers.Length; l++)
            {
                string w = $"model.layers.{l}.";
                _layers[l] = new Layer(
                    p[w + "self_attn.q_proj.weight"].Compute, p[w + "self_attn.k_proj.weight"].Compute, p[w + "self_attn.v_proj.weight"].Compute,
                    p[w + "self_attn.o_proj.weight"].Compute, p[w + "mlp.gate_proj.weight"].Compute, p[w + "mlp.up_proj.weight"].Compute,
                    p[w + "mlp.down_proj.weight"].Compute, p[w + "input_layernorm.weight"].Value, p[w + "post_attention_layernorm.weight"].Value,
                    R($"layer.{l}.k_cache", cacheRows * kvd), R($"layer.{l}.v_cache", cacheRows * kvd));
            }
            _ids = R("ids", rows, DType.I32); _positions = R("positions", rows, DType.I32); _iota = R("iota", maxLength, DType.I32);
            _cos = R("rope.cos", (long)maxLength * hd / 2); _sin = R("rope.sin", (long)maxLength * hd / 2);
            _x = R("residual.a", rows * d); _next = R("residual.b", rows * d); _xMid = R("xmid", rows * d);
            _xn = R("xn", rows * d); _rstd = R("rstd", rows);
            _q = R("q", rows * qd); _k = R("k", rows * kvd); _v = R("v", rows * kvd); _attn = R("attn", rows * qd);
            _gate = R("gate", rows * f); _up = R("up", rows * f); _h = R("h", rows * f);
            if (model.Options.Precision == Precision.Bf16) _operandBf16 = R("operand.bf16", rows * Math.Max(Math.Max(d, qd), f), DType.BF16);
            _finalXn = R("final.xn", (long)maxBatch * d); _finalRstd = R("final.rstd", maxBatch); _logits = R("logits", (long)maxBatch * v);
            _arena.Commit();

            var cos = new float[maxLength * hd / 2];
            var sin = new float[cos.Length];
            _c.RopeTables(maxLength, cos, sin);
            _be.Upload<float>(_cos, cos);
            _be.Upload<float>(_sin, sin);
            var iota = new int[maxLength];
            for (int i = 0; i < iota.Length; i++) iota[i] = i;
            _be.Upload<int>(_iota, iota);
        }
        catch
        {
            _arena.Dispose();
            throw;
        }
    }

    /// <summary>Most sequences generated at once (a longer prompt list runs in batches of this size).</summary>
    public int MaxBatch { get; }

    /// <summary>Most tokens of a sequence, prompt and continuation together.</summary>
    public int MaxLength { get; }

    /// <summary>The model whose weights are used.</summary>
    public LlamaModel Model => _model;

    /// <summary>Bytes of the generator's own arena (key/value cache, RoPE tables, activations, logits).</summary>
    public long ArenaBytes => _arena.ReservedBytes;

    /// <summary>
    /// Generates a continuation of each prompt (token ids; add the BOS token yourself, see <see cref="EncodePrompt"/>)
    /// and returns the new tokens of each, in prompt order, ending with the EOS token when it stopped there. Every
    /// prompt needs 1 to maxLength − 1 tokens, each in [0, vocab).
    /// </summary>
    public int[][] Generate(IReadOnlyList<int[]> prompts, GenerationOptions options)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int vocab = _c.VocabSize;
        for (int i = 0; i < prompts.Count; i++)
        {
            var prompt = prompts[i] ?? throw new ArgumentNullException(nameof(prompts), $"prompt {i} is null");
            if (prompt.Length == 0) throw new ArgumentException($"prompt {i} is empty; a prompt needs at least one token (e.g. BOS)", nameof(prompts));
            if (prompt.Length >= MaxLength)
                throw new ArgumentException($"prompt {i} has {prompt.Length} tokens; this generator holds {MaxLength} tokens per sequence, so a prompt may have at most {MaxLength - 1}", nameof(prompts));
            for (int t = 0; t < prompt.Length; t++)
                if ((uint)prompt[t] >= (uint)vocab)
                    throw new ArgumentOutOfRangeException(nameof(prompts), prompt[t], $"token {t} of prompt {i} is outside the vocabulary [0, {vocab})");
        }
        var states = new Sequence[prompts.Count];
        for (int i = 0; i < states.Length; i++) states[i] = new Sequence(i, prompts[i], new Rng(Rng.Derive(options.Seed, i)));
        if (!options.UseKvCache)
        {
            int longest = states.Length == 0 ? 0 : states.Max(s => Math.Min(s.Prompt.Length + options.MaxNewTokens, MaxLength) - 1);
            if (longest > _model.MaxSeq)
                throw new ArgumentException($"recomputing without the cache feeds sequences of up to {longest} tokens, but the model was laid out for {_model.MaxSeq} (LlamaModelOptions.Seq)", nameof(options));
        }
        var sampler = new Sampler(vocab);
        if (options.UseKvCache)
            for (int start = 0; start < states.Length; start += MaxBatch)
                RunCached(states.AsSpan(start, Math.Min(MaxBatch, states.Length - start)).ToArray(), options, sampler);
        else
            RunRecomputing(states, options, sampler);
        return states.Select(s => s.Output.ToArray()).ToArray();
    }

    /// <summary>
    /// Greedy answers to text prompts, for exact-match evaluation: each prompt is encoded with
    /// <see cref="EncodePrompt"/>, continued by up to <paramref name="maxNewTokens"/> tokens (stopping at EOS, the
    /// tokenizer's too) with the key/value cache, and decoded (special tokens dropped).
    /// </summary>
    public string[] GreedyAnswers(IReadOnlyList<string> prompts, ITokenizer tokenizer, int maxNewTokens)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var ids = prompts.Select(p => EncodePrompt(p, tokenizer)).ToArray();
        var outputs = Generate(ids, GenerationOptions.Greedy(maxNewTokens, StopTokens.Of(tokenizer)));
        return outputs.Select(o => tokenizer.Decode(o)).ToArray();
    }

    /// <summary>The ids of <paramref name="text"/>, preceded by the tokenizer's BOS token when it has one.</summary>
    public static int[] EncodePrompt(string text, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var ids = new List<int>(text.Length + 1);
        if (tokenizer.BosId is int bos) ids.Add(bos);
        tokenizer.Encode(text, ids);
        return ids.ToArray();
    }

    /// <summary>
    /// Picks a token from one row of logits: the most likely (lowest id on ties) when <paramref name="temperature"/>
    /// is 0; otherwise a draw from softmax(logits / temperature) restricted to the smallest set of most likely tokens
    /// whose probability reaches <paramref name="topP"/> (ties ordered by id), with one uniform number from
    /// <paramref name="rng"/>. Probabilities are formed in double.
    /// </summary>
    public static int SampleToken(ReadOnlySpan<float> logits, float temperature, float topP, Rng rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var s = new Sampler(logits.Length);
        return s.Pick(logits, temperature, topP, rng);
    }

    /// <summary>Frees the generator's arena (the model is not touched).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _arena.Dispose();
    }

    // ------------------------------------------------------------------ state

    private sealed class Sequence(int index, int[] prompt, Rng rng)
    {
        public readonly int Index = index;
        public readonly int[] Prompt = prompt;
        public readonly Rng Rng = rng;
        public readonly List<int> Output = new();
        public bool Done;

        /// <summary>Tokens so far, prompt included.</summary>
        public int Length => Prompt.Length + Output.Count;

        public int Last => Output.Count > 0 ? Output[^1] : Prompt[^1];
    }

    /// <summary>Records a new token and decides whether the sequence is finished.</summary>
    private void Accept(Sequence s, int token, GenerationOptions o)
    {
        s.Output.Add(token);
        if ((o.StopAtEos && (_c.EosTokenId == token || o.StopIds?.Contains(token) == true)) || s.Output.Count >= o.MaxNewTokens || s.Length >= MaxLength)
            s.Done = true;
    }

    /// <summary>Host buffers for picking tokens (one vocabulary's worth, reused).</summary>
    private sealed class Sampler(int vocab)
    {
        private readonly double[] _p = new double[vocab];
        private readonly int[] _order = new int[vocab];
        public readonly float[] Row = new float[vocab];

        public int Pick(ReadOnlySpan<float> logits, float temperature, float topP, Rng rng)
        {
            int n = logits.Length;
            if (n == 0) throw new ArgumentException("no logits to pick from", nameof(logits));
            int best = 0;
            for (int i = 0; i < n; i++)
            {
                if (float.IsNaN(logits[i])) throw new InvalidOperationException($"the logits hold NaN (at id {i}): the model's weights or activations are not finite");
                if (logits[i] > logits[best]) best = i;
            }
            if (temperature == 0) return best;
            double max = logits[best], total = 0;
            var p = _p.AsSpan(0, n);
            for (int i = 0; i < n; i++) total += p[i] = Math.Exp((logits[i] - max) / temperature);
            double u = rng.NextDouble();
            if (topP >= 1)
            {
                double target = u * total, acc = 0;
                for (int i = 0; i < n; i++)
                {
                    acc += p[i];
                    if (acc > target && p[i] > 0) return i;
                }
                return best;
            }
            var order = _order.AsSpan(0, n);
            for (int i = 0; i < n; i++) order[i] = i;
            var probs = _p;
            order.Sort((a, b) => probs[a] != probs[b] ? probs[b].CompareTo(probs[a]) : a.CompareTo(b));
            double keep = topP * total, kept = 0;
            int count = 0;
            while (count < n && (count == 0 || kept < keep)) kept += p[order[count++]];
            double pick = u * kept, sum = 0;
            for (int r = 0; r < count; r++)
            {
                sum += p[order[r]];
                if (sum > pick) return order[r];
            }
            return order[count - 1];
        }
    }

    // ------------------------------------------------------------------ recomputing path

    private void RunRecomputing(Sequence[] all, GenerationOptions o, Sampler sampler)
    {
        int vocab = _c.VocabSize;
        var active = new List<Sequence>(all.Length);
        while (true)
        {
            active.Clear();
            foreach (var s in all) if (!s.Done) active.Add(s);
            if (active.Count == 0) return;
            for (int start = 0; start < active.Count; start += _model.MaxBatch)
            {
                int batch = Math.Min(_model.MaxBatch, active.Count - start);
                int seq = 0;
                for (int b = 0; b < batch; b++) seq = Math.Max(seq, active[start + b].Length);
                var inputs = new ModelInputs(batch, seq);
                Array.Fill(inputs.Targets, Backend.IgnoreIndex);
                for (int b = 0; b < batch; b++)
                {
                    var s = active[start + b];
                    s.Prompt.CopyTo(inputs.Ids, b * seq);
                    s.Output.CopyTo(inputs.Ids, b * seq + s.Prompt.Length);
                }
                _model.SetInputs(inputs);
                _model.Forward();
                for (int b = 0; b < batch; b++)
                {
                    var s = active[start + b];
                    long row = (long)b * seq + s.Length - 1;
                    _be.Download<float>(_model.Logits.Slice(row * vocab, vocab), sampler.Row);
                    Accept(s, sampler.Pick(sampler.Row, o.Temperature, o.TopP, s.Rng), o);
                }
            }
        }
    }

    // ------------------------------------------------------------------ cached path

    private void RunCached(Sequence[] chunk, GenerationOptions o, Sampler sampler)
    {
        int vocab = _c.VocabSize;
        // Slots in order of prompt length, so that sequences of equal length sit side by side in the cache.
        var slots = chunk.OrderBy(s => s.Prompt.Length).ThenBy(s => s.Index).ToArray();
        for (int s = 0; s < slots.Length; s++) Prefill(s, slots[s].Prompt);
        var logits = new float[(long)slots.Length * vocab];
        _be.Download<float>(_logits.Slice(0, logits.Length), logits);
        for (int s = 0; s < slots.Length; s++)
            Accept(slots[s], sampler.Pick(logits.AsSpan(s * vocab, vocab), o.Temperature, o.TopP, slots[s].Rng), o);

        var active = new List<int>(slots.Length);
        var ids = new int[slots.Length];
        var positions = new int[slots.Length];
        while (true)
        {
            active.Clear();
            for (int s = 0; s < slots.Length; s++) if (!slots[s].Done) active.Add(s);
            if (active.Count == 0) return;
            int n = active.Count;
            for (int a = 0; a < n; a++)
            {
                var seq = slots[active[a]];
                ids[a] = seq.Last;
                positions[a] = seq.Length - 1; // the fed token's position, and the cache row it fills
            }
            DecodeStep(active, ids.AsSpan(0, n), positions.AsSpan(0, n));
            _be.Download<float>(_logits.Slice(0, n * vocab), logits.AsSpan(0, n * vocab));
            for (int a = 0; a < n; a++)
            {
                var seq = slots[active[a]];
                Accept(seq, sampler.Pick(logits.AsSpan(a * vocab, vocab), o.Temperature, o.TopP, seq.Rng), o);
            }
        }
    }

    /// <summary>The prompt through every layer, its keys and values into cache slot <paramref name="slot"/>, its last logits into row <paramref name="slot"/>.</summary>
    private void Prefill(int slot, int[] prompt)
    {
        var be = _be;
        int n = prompt.Length, d = _c.HiddenSize, hd = _c.HeadDim, hq = _c.NumAttentionHeads, hkv = _c.NumKeyValueHeads;
        int qd = hq * hd, kvd = hkv * hd, vocab = _c.VocabSize;
        long slotBase = (long)slot * MaxLength * kvd;
        be.Upload<int>(_ids, prompt);
        be.EmbeddingForward(_x, _ids, _embed, n, d, vocab);
        var x = _x; var next = _next;
        foreach (var w in _layers)
        {
            var kSlot = w.KCache.Slice(slotBase, MaxLength * kvd);
            var vSlot = w.VCache.Slice(slotBase, MaxLength * kvd);
            QkvWithRope(w, x, n, kSlot, vSlot, _iota);
            be.AttentionDecode(_attn, _q, kSlot, vSlot, 1, n, n, MaxLength, hq, hkv, hd, _scale);
            Mlp(w, x, next, n);
            (x, next) = (next, x);
        }
        be.RmsNormForward(_finalXn.Slice((long)slot * d, d), _finalRstd.Slice(slot, 1), x.Slice((long)(n - 1) * d, d), _finalNorm, 1, d, _eps);
        Linear(_logits.Slice((long)slot * vocab, vocab), _finalXn.Slice((long)slot * d, d), _head, 1, vocab, d);
    }

    /// <summary>One token for each active slot: logits row a for active[a].</summary>
    private void DecodeStep(List<int> active, ReadOnlySpan<int> ids, ReadOnlySpan<int> positions)
    {
        var be = _be;
        int n = active.Count, d = _c.HiddenSize, hd = _c.HeadDim, hq = _c.NumAttentionHeads, hkv = _c.NumKeyValueHeads;
        int qd = hq * hd, kvd = hkv * hd, vocab = _c.VocabSize;
        be.Upload(_ids, ids);
        be.Upload(_positions, positions);
        be.EmbeddingForward(_x, _ids, _embed, n, d, vocab);
        var x = _x; var next = _next;
        foreach (var w in _layers)
        {
            QkvWithRope(w, x, n, _k, _v, _positions);
            for (int a = 0; a < n; a++)
            {
                long row = (long)active[a] * MaxLength + positions[a];
                be.Copy(w.KCache.Slice(row * kvd, kvd), _k.Slice((long)a * kvd, kvd));
                be.Copy(w.VCache.Slice(row * kvd, kvd), _v.Slice((long)a * kvd, kvd));
            }
            // One attention call per run of adjacent slots whose sequences have the same length.
            for (int a0 = 0; a0 < n;)
            {
                int a1 = a0 + 1;
                while (a1 < n && active[a1] == active[a1 - 1] + 1 && positions[a1] == positions[a0]) a1++;
                int count = a1 - a0, keys = positions[a0] + 1;
                long cacheBase = (long)active[a0] * MaxLength * kvd, cacheCount = (long)count * MaxLength * kvd;
                be.AttentionDecode(_attn.Slice((long)a0 * qd, count * qd), _q.Slice((long)a0 * qd, count * qd),
                    w.KCache.Slice(cacheBase, (int)cacheCount), w.VCache.Slice(cacheBase, (int)cacheCount),
                    count, 1, keys, MaxLength, hq, hkv, hd, _scale);
                a0 = a1;
            }
            Mlp(w, x, next, n);
            (x, next) = (next, x);
        }
        be.RmsNormForward(_finalXn, _finalRstd, x, _finalNorm, n, d, _eps);
        Linear(_logits, _finalXn, _head, n, vocab, d);
    }

    /// <summary>The rest of a layer after attention: next = x + o-proj(attn) + MLP(norm(·)).</summary>
    private void Mlp(Layer w, Tensor x, Tensor next, int n)
    {
        var be = _be;
        int d = _c.HiddenSize, f = _c.IntermediateSize, qd = _c.NumAttentionHeads * _c.HeadDim;
        var xMid = _xMid.Slice(0, n * d);
        Linear(xMid, _attn, w.O, n, d, qd);
        be.RmsNormForward(_xn, _rstd, xMid, w.PostNorm, n, d, _eps, residual: x.Slice(0, n * d));
        var xn = Operand(_xn, n * d, w.Gate);
        Project(_gate, xn, w.Gate, n, f, d);
        Project(_up, xn, w.Up, n, f, d);
        be.SwiGluForward(_h.Slice(0, n * f), _gate.Slice(0, n * f), _up.Slice(0, n * f));
        var nx = next.Slice(0, n * d);
        Linear(nx, _h, w.Down, n, d, f);
        be.AddInPlace(nx, xMid);
    }

    /// <summary>
    /// The input norm of a layer and its q, k and v projections (into <see cref="_q"/>, <paramref name="k"/> and
    /// <paramref name="v"/>), with RoPE at <paramref name="positions"/> applied to q and k.
    /// </summary>
    private void QkvWithRope(Layer w, Tensor x, int n, Tensor k, Tensor v, Tensor positions)
    {
        int d = _c.HiddenSize, hd = _c.HeadDim, hq = _c.NumAttentionHeads, hkv = _c.NumKeyValueHeads;
        _be.RmsNormForward(_xn, _rstd, x, w.InputNorm, n, d, _eps);
        var xn = Operand(_xn, n * d, w.Q);
        Project(_q, xn, w.Q, n, hq * hd, d);
        Project(k, xn, w.K, n, hkv * hd, d);
        Project(v, xn, w.V, n, hkv * hd, d);
        _be.Rope(_q, positions, _cos, _sin, n, hq, hd, MaxLength, inverse: false);
        _be.Rope(k, positions, _cos, _sin, n, hkv, hd, MaxLength, inverse: false);
    }

    /// <summary>
    /// The operand a product with <paramref name="w"/> reads for the fp32 values x (their first
    /// <paramref name="count"/>): x itself for an fp32 weight; for a bf16 weight (a bf16 model), x rounded to
    /// bfloat16, as in training, into the one operand buffer (valid until the next call).
    /// </summary>
    private Tensor Operand(Tensor x, int count, Tensor w)
    {
        if (w.Type == DType.F32) return x;
        _be.ToBf16(_operandBf16.Slice(0, count), x.Slice(0, count));
        return _operandBf16;
    }

    /// <summary>y[rows, outDim] = op · wᵀ for an operand from <see cref="Operand"/>.</summary>
    private void Project(Tensor y, Tensor op, Tensor w, int rows, int outDim, int inDim) =>
        _be.MatMul(y, op, w, rows, outDim, inDim, transA: false, transB: true, accumulate: false);

    /// <summary>y[rows, outDim] = x · wᵀ with the weight in its compute precision.</summary>
    private void Linear(Tensor y, Tensor x, Tensor w, int rows, int outDim, int inDim) =>
        Project(y, Operand(x, rows * inDim, w), w, rows, outDim, inDim);
}
