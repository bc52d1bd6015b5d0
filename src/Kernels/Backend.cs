namespace HftRuntime.Kernels;

/// <summary>One product of <see cref="Backend.MatMulSum"/>: op(a) [m, k] · op(b) [k, n].</summary>
public readonly record struct MatMulPart(Tensor A, Tensor B, int K);

/// <summary>Hyper-parameters of one AdamW step (PyTorch's decoupled form, bias correction included).</summary>
/// <param name="Lr">Learning rate of this step.</param>
/// <param name="Beta1">First-moment decay.</param>
/// <param name="Beta2">Second-moment decay.</param>
/// <param name="Eps">Added to the bias-corrected root of the second moment.</param>
/// <param name="WeightDecay">Decoupled decay, applied only in segments flagged for decay.</param>
/// <param name="Step">1-based count of applied steps (for bias correction).</param>
public readonly record struct AdamWStep(float Lr, float Beta1, float Beta2, float Eps, float WeightDecay, int Step)
{
    /// <summary>sqrt(1 - beta2^step), computed in double.</summary>
    public float BiasCorrection2Sqrt => (float)Math.Sqrt(1.0 - Math.Pow(Beta2, Step));

    /// <summary>lr / (1 - beta1^step), computed in double.</summary>
    public float StepSize => (float)(Lr / (1.0 - Math.Pow(Beta1, Step)));
}

/// <summary>
/// Every operation a Llama training step needs, forward and backward. Tensors live in arenas of this back-end;
/// shapes are passed explicitly, row-major. Public methods validate their arguments (names, sizes, back-end)
/// and then call the implementation. Unless a method says it accumulates, outputs are overwritten.
/// </summary>
public abstract partial class Backend : IDisposable
{
    /// <summary>Short name: "cpu", "cuda" or "ilgpu-cpu".</summary>
    public abstract string Name { get; }

    /// <summary>The device in words (processor or GPU name).</summary>
    public abstract string DeviceName { get; }

    /// <summary>Bytes of memory this back-end can allocate arenas from (device memory of a GPU; available RAM on the CPU).</summary>
    public abstract long MemoryBytes { get; }

    /// <summary>Creates an empty arena on this back-end.</summary>
    public abstract DeviceArena CreateArena();

    /// <summary>Waits until every queued operation has finished.</summary>
    public abstract void Synchronize();

    /// <summary>Releases the back-end's resources.</summary>
    public abstract void Dispose();

    // ------------------------------------------------------------------ transfers and element-wise

    /// <summary>Copies host data into <paramref name="dst"/> (the first <c>src.Length</c> elements).</summary>
    public void Upload<T>(Tensor dst, ReadOnlySpan<T> src) where T : unmanaged
    {
        Own(dst, nameof(dst));
        CheckElement<T>(dst);
        Need(dst, src.Length, nameof(dst));
        UploadCore(dst, System.Runtime.InteropServices.MemoryMarshal.AsBytes(src));
    }

    /// <summary>Copies the first <c>dst.Length</c> elements of <paramref name="src"/> to the host.</summary>
    public void Download<T>(Tensor src, Span<T> dst) where T : unmanaged
    {
        Own(src, nameof(src));
        CheckElement<T>(src);
        Need(src, dst.Length, nameof(src));
        DownloadCore(src, System.Runtime.InteropServices.MemoryMarshal.AsBytes(dst));
    }

    /// <summary>Copies a whole tensor to a new host array.</summary>
    public T[] ToArray<T>(Tensor src) where T : unmanaged
    {
        var a = new T[src.Count];
        Download<T>(src, a);
        return a;
    }

    /// <summary>Sets every element of an F32 tensor to <paramref name="value"/>.</summary>
    public void Fill(Tensor dst, float value)
    {
        F32(dst, nameof(dst));
        long t0 = BeginOp();
        FillCore(dst, value);
        EndOp("fill", t0);
    }

    /// <summary>dst = src (same element count and type).</summary>
    public void Copy(Tensor dst, Tensor src)
    {
        Own(dst, nameof(dst)); Own(src, nameof(src));
        if (dst.Type != src.Type || dst.Count != src.Count)
            throw new ArgumentException($"copy needs equal tensors: {dst} vs {src}");
        long t0 = BeginOp();
        CopyCore(dst, src);
        EndOp("copy", t0);
    }

    /// <summary>
    /// dst = bfloat16(src), rounding to nearest with ties to even (as PyTorch does); a NaN stays a NaN and values
    /// beyond bfloat16's range become infinities. dst is BF16, src F32, equal counts.
    /// </summary>
    public void ToBf16(Tensor dst, Tensor src)
    {
        Own(dst, nameof(dst)); F32(src, nameof(src)); Same(dst, src);
        if (dst.Type != DType.BF16) throw new ArgumentException($"dst '{dst.Name}' must be BF16, is {dst.Type}", nameof(dst));
        long t0 = BeginOp();
        ToBf16Core(dst, src);
        EndOp("to_bf16", t0);
    }

    /// <summary>y += x (element-wise, equal counts).</summary>
    public void AddInPlace(Tensor y, Tensor x)
    {
        F32(y, nameof(y)); F32(x, nameof(x)); Same(y, x);
        long t0 = BeginOp();
        AddInPlaceCore(y, x);
        EndOp("add", t0);
    }

    /// <summary>x *= s.</summary>
    public void Scale(Tensor x, float s)
    {
        F32(x, nameof(x));
        long t0 = BeginOp();
        ScaleCore(x, s);
        EndOp("scale", t0);
    }

    /// <summary>result[0] = sum of x² (float accumulation per block, blocks summed in double where possible).</summary>
    public void SumSquares(Tensor result, Tensor x)
    {
        F32(result, nameof(result)); F32(x, nameof(x)); Need(result, 1, nameof(result));
        long t0 = BeginOp();
        SumSquaresCore(result, x);
        EndOp("sum_squares", t0);
    }

    /// <summary>result[0] = Σ a·b over a.Count elements, or result[0] += that sum with <paramref name="accumulate"/>.</summary>
    public void Dot(Tensor result, Tensor a, Tensor b, bool accumulate)
    {
        F32(result, nameof(result)); F32(a, nameof(a)); F32(b, nameof(b)); Same(a, b); Need(result, 1, nameof(result));
        long t0 = BeginOp();
        DotCore(result, a, b, accumulate);
        EndOp("dot", t0);
    }

    // ------------------------------------------------------------------ embedding

    /// <summary>y[i, :] = table[ids[i], :] for i &lt; n.</summary>
    public void EmbeddingForward(Tensor y, Tensor ids, Tensor table, int n, int dim, int vocab)
    {
        Pos(n, nameof(n)); Pos(dim, nameof(dim)); Pos(vocab, nameof(vocab));
        F32(y, nameof(y)); I32(ids, nameof(ids)); F32(table, nameof(table));
        Need(y, (long)n * dim, nameof(y)); Need(ids, n, nameof(ids)); Need(table, (long)vocab * dim, nameof(table));
        long t0 = BeginOp();
        EmbeddingForwardCore(y, ids, table, n, dim, vocab);
        EndOp("embedding_forward", t0);
    }

    /// <summary>dTable[ids[i], :] += dy[i, :] (accumulates).</summary>
    public void EmbeddingBackward(Tensor dTable, Tensor ids, Tensor dy, int n, int dim, int vocab)
    {
        Pos(n, nameof(n)); Pos(dim, nameof(dim)); Pos(vocab, nameof(vocab));
        F32(dTable, nameof(dTable)); I32(ids, nameof(ids)); F32(dy, nameof(dy));
        Need(dy, (long)n * dim, nameof(dy)); Need(ids, n, nameof(ids)); Need(dTable, (long)vocab * dim, nameof(dTable));
        long t0 = BeginOp();
        EmbeddingBackwardCore(dTable, ids, dy, n, dim, vocab);
        EndOp("embedding_backward", t0);
    }

    // ------------------------------------------------------------------ RMSNorm

    /// <summary>y = x / sqrt(mean(x²) + eps) * w per row; rstd[i] = 1 / sqrt(mean(x_i²) + eps).</summary>
    /// <remarks>
    /// Fused variants, each in the same pass over the row: with <paramref name="residual"/>, x += residual first (x is
    /// updated in place: the residual add before a norm); with <paramref name="yBf16"/> (BF16), y is also written
    /// rounded to bfloat16, and y may then be the empty tensor.
    /// </remarks>
    public void RmsNormForward(Tensor y, Tensor rstd, Tensor x, Tensor w, int n, int dim, float eps, Tensor residual = default, Tensor yBf16 = default)
    {
        Pos(n, nameof(n)); Pos(dim, nameof(dim));
        F32(rstd, nameof(rstd)); F32(x, nameof(x)); F32(w, nameof(w));
        Need(x, (long)n * dim, nameof(x)); Need(rstd, n, nameof(rstd)); Need(w, dim, nameof(w));
        OptionalOutputs(y, yBf16, (long)n * dim, nameof(y), nameof(yBf16));
        if (!residual.IsEmpty) { F32(residual, nameof(residual)); Need(residual, (long)n * dim, nameof(residual)); }
        long t0 = BeginOp();
        RmsNormForwardCore(y, rstd, x, w, n, dim, eps, residual, yBf16);
        EndOp("rmsnorm_forward", t0);
    }

    /// <summary>An F32 output and an optional BF16 copy of it: at least one present, each of at least <paramref name="count"/> elements.</summary>
    private void OptionalOutputs(Tensor f32, Tensor bf16, long count, string f32Name, string bf16Name)
    {
        if (f32.IsEmpty && bf16.IsEmpty) throw new ArgumentException($"{f32Name} and {bf16Name} are both empty: nothing to write", f32Name);
        if (!f32.IsEmpty) { F32(f32, f32Name); Need(f32, count, f32Name); }
        if (!bf16.IsEmpty)
        {
            Own(bf16, bf16Name); Need(bf16, count, bf16Name);
            if (bf16.Type != DType.BF16) throw new ArgumentException($"{bf16Name} '{bf16.Name}' must be BF16, is {bf16.Type}", bf16Name);
        }
    }

    /// <summary>
    /// dx += dL/dx through the norm (accumulates into the residual gradient); dw += dL/dw when
    /// <paramref name="dw"/> is not empty (a frozen norm passes the empty tensor and gets no weight gradient). With
    /// <paramref name="dxBf16"/> (BF16) the updated dx is also written there rounded to bfloat16, in the same pass: the
    /// operand of the next bf16 product.
    /// </summary>
    public void RmsNormBackward(Tensor dx, Tensor dw, Tensor dy, Tensor x, Tensor w, Tensor rstd, int n, int dim, Tensor dxBf16 = default)
    {
        Pos(n, nameof(n)); Pos(dim, nameof(dim));
        F32(dx, nameof(dx)); F32(dy, nameof(dy)); F32(x, nameof(x)); F32(w, nameof(w)); F32(rstd, nameof(rstd));
        Need(dx, (long)n * dim, nameof(dx)); Need(dy, (long)n * dim, nameof(dy)); Need(x, (long)n * dim, nameof(x));
        Need(w, dim, nameof(w)); Need(rstd, n, nameof(rstd));
        if (!dw.IsEmpty) { F32(dw, nameof(dw)); Need(dw, dim, nameof(dw)); }
        OptionalOutputs(dx, dxBf16, (long)n * dim, nameof(dx), nameof(dxBf16));
        long t0 = BeginOp();
        RmsNormBackwardCore(dx, dw, dy, x, w, rstd, n, dim, dxBf16);
        EndOp("rmsnorm_backward", t0);
    }

    // ------------------------------------------------------------------ RoPE

    /// <summary>
    /// Rotates x [n, heads, headDim] in place, Hugging Face's rotate-half layout (pairs i and i + headDim/2), by the
    /// angles of positions[i] taken from the tables cos/sin [maxPositions, headDim/2]. With
    /// <paramref name="inverse"/> it rotates by the negative angle, which is the backward pass. With
    /// <paramref name="xBf16"/> (BF16) the rotated values are also written rounded to bfloat16, in the same pass, and
    /// with <paramref name="writeX"/> false only there (x is left as it was: its fp32 rotation is not written at all).
    /// A BF16 x (the bf16 output of the q or k product) is rotated in place in fp32 and rounded back; xBf16 is then empty.
    /// </summary>
    public void Rope(Tensor x, Tensor positions, Tensor cos, Tensor sin, int n, int heads, int headDim, int maxPositions, bool inverse, Tensor xBf16 = default,
        bool writeX = true)
    {
        if (!writeX && xBf16.IsEmpty) throw new ArgumentException("writeX false needs xBf16: the rotation would go nowhere", nameof(writeX));
        Pos(n, nameof(n)); Pos(heads, nameof(heads)); Pos(headDim, nameof(headDim)); Pos(maxPositions, nameof(maxPositions));
        if (headDim % 2 != 0) throw new ArgumentException($"headDim must be even for RoPE, got {headDim}", nameof(headDim));
        Own(x, nameof(x)); I32(positions, nameof(positions)); F32(cos, nameof(cos)); F32(sin, nameof(sin));
        if (x.Type is not (DType.F32 or DType.BF16)) throw new ArgumentException($"x '{x.Name}' must be F32 or BF16, is {x.Type}", nameof(x));
        if (x.Type == DType.BF16 && (!xBf16.IsEmpty || !writeX))
            throw new ArgumentException($"x '{x.Name}' is BF16: it is rotated in place, with no xBf16 copy and writeX true", nameof(xBf16));
        Need(x, (long)n * heads * headDim, nameof(x)); Need(positions, n, nameof(positions));
        Need(cos, (long)maxPositions * headDim / 2, nameof(cos)); Need(sin, (long)maxPositions * headDim / 2, nameof(sin));
        if (!xBf16.IsEmpty) OptionalOutputs(default, xBf16, (long)n * heads * headDim, nameof(x), nameof(xBf16));
        long t0 = BeginOp();
        RopeCore(x, positions, cos, sin, n, heads, headDim, maxPositions, inverse, xBf16, writeX);
        EndOp("rope", t0);
    }

    // ------------------------------------------------------------------ attention

    /// <summary>
    /// Causal grouped-query attention. q, o: [batch·seq, heads·headDim]; k, v: [batch·seq, kvHeads·headDim];
    /// lse: [batch, heads, seq] receives each query's log-sum-exp of scaled scores (kept for the backward pass).
    /// Query t of a sequence sees keys docStart[t] ≤ j ≤ t, where docStart (I32 [batch·seq], optional) marks
    /// where the query's document begins in a packed sequence; empty means plain causal (docStart = 0).
    /// bf16: the products may take bf16 operands (q, k, v and the probabilities rounded to bfloat16, fp32
    /// accumulation and softmax), as the bf16 precision does; a back-end without such a path computes in fp32.
    /// q, k, v and o are F32, or BF16 where <see cref="TakesBf16AttentionInputs"/> says so (bf16 is then implied).
    /// </summary>
    public void AttentionForward(Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16 = false)
    {
        CheckAttention(q, k, v, docStart, batch, seq, heads, kvHeads, headDim);
        AttentionOperand(o, nameof(o), headDim); F32(lse, nameof(lse));
        Need(o, (long)batch * seq * heads * headDim, nameof(o)); Need(lse, (long)batch * heads * seq, nameof(lse));
        long t0 = BeginOp();
        AttentionForwardCore(o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, headDim, scale, bf16);
        EndOp("attention_forward", t0);
    }

    /// <summary>
    /// Gradients of <see cref="AttentionForward"/>: dq, dk, dv (F32) are overwritten (bf16: dO, O and dS rounded too);
    /// dO, o, q, k, v may be BF16 as in the forward pass.
    /// </summary>
    public void AttentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse,
        Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16 = false)
    {
        F32(dq, nameof(dq)); F32(dk, nameof(dk)); F32(dv, nameof(dv));
        CheckAttentionBackward(dq, dk, dv, dO, o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, headDim);
        long t0 = BeginOp();
        AttentionBackwardCore(dq, dk, dv, dO, o, lse, q, k, v, docStart, batch, seq, heads, kvHeads, headDim, scale, bf16);
        EndOp("attention_backward", t0);
    }

    /// <summary>
    /// Causal grouped-query attention of new queries against a key/value cache, for generation: the prefill of a
    /// prompt (queries = keys) and the decode steps (queries = 1). q, o: [batch·queries, heads·headDim];
    /// kCache, vCache: [batch·cacheRows, kvHeads·headDim], sequence b's rows starting at b·cacheRows, of which the
    /// first <paramref name="keys"/> hold keys and values (rows from <paramref name="keys"/> on are never read). The
    /// queries are the last <paramref name="queries"/> positions of those keys: query i of sequence b sees cache rows
    /// 0 … keys − queries + i. Heads are grouped as in <see cref="AttentionForward"/> (head h reads kv head
    /// h / (heads / kvHeads)). o must not overlap q or the caches. No log-sum-exp is kept: there is no backward pass.
    /// </summary>
    public void AttentionDecode(Tensor o, Tensor q, Tensor kCache, Tensor vCache,
        int batch, int queries, int keys, int cacheRows, int heads, int kvHeads, int headDim, float scale)
    {
        Pos(batch, nameof(batch)); Pos(queries, nameof(queries)); Pos(keys, nameof(keys)); Pos(cacheRows, nameof(cacheRows));
        Pos(heads, nameof(heads)); Pos(kvHeads, nameof(kvHeads)); Pos(headDim, nameof(headDim));
        if (heads % kvHeads != 0)
            throw new ArgumentException($"heads ({heads}) must be a multiple of kvHeads ({kvHeads})", nameof(kvHeads));
        if (queries > keys)
            throw new ArgumentOutOfRangeException(nameof(queries), queries, $"queries ({queries}) must not exceed keys ({keys}): the queries are the last of the cached positions");
        if (keys > cacheRows)
            throw new ArgumentOutOfRangeException(nameof(keys), keys, $"keys ({keys}) must not exceed the cache's rows per sequence ({cacheRows})");
        F32(o, nameof(o)); F32(q, nameof(q)); F32(kCache, nameof(kCache)); F32(vCache, nameof(vCache));
        long nq = (long)batch * queries * heads * headDim, nk = (long)batch * cacheRows * kvHeads * headDim;
        Need(o, nq, nameof(o)); Need(q, nq, nameof(q)); Need(kCache, nk, nameof(kCache)); Need(vCache, nk, nameof(vCache));
        long t0 = BeginOp();
        AttentionDecodeCore(o, q, kCache, vCache, batch, queries, keys, cacheRows, heads, kvHeads, headDim, scale);
        EndOp("attention_decode", t0);
    }

    // ------------------------------------------------------------------ SwiGLU

    /// <summary>h = silu(gate) · up, element-wise over gate.Count elements.</summary>
    /// <remarks>
    /// gate and up are both F32, or both BF16 (the bf16 outputs of the products: widened, computed in fp32). With
    /// <paramref name="hBf16"/> (BF16) the result is also written rounded to bfloat16, in the same pass (the
    /// operand of a bf16 product); h may then be the empty tensor, when nothing needs the fp32 values. With
    /// <paramref name="gateBf16"/> and <paramref name="upBf16"/> (BF16, both or neither; F32 inputs only) the inputs are
    /// also written rounded, for a bf16 backward pass.
    /// </remarks>
    public void SwiGluForward(Tensor h, Tensor gate, Tensor up, Tensor hBf16 = default, Tensor gateBf16 = default, Tensor upBf16 = default)
    {
        Own(gate, nameof(gate));
        if (gate.Type is not (DType.F32 or DType.BF16)) throw new ArgumentException($"gate '{gate.Name}' must be F32 or BF16, is {gate.Type}", nameof(gate));
        Like(up, gate, gate, nameof(up));
        if (gate.Type == DType.BF16 && !gateBf16.IsEmpty)
            throw new ArgumentException($"gate '{gate.Name}' is BF16 already: gateBf16 and upBf16 copies are for F32 inputs", nameof(gateBf16));
        OptionalOutputs(h, hBf16, gate.Count, nameof(h), nameof(hBf16));
        if (gateBf16.IsEmpty != upBf16.IsEmpty) throw new ArgumentException("gateBf16 and upBf16 go together: give both or neither", nameof(gateBf16));
        if (!gateBf16.IsEmpty)
        {
            OptionalOutputs(default, gateBf16, gate.Count, nameof(gate), nameof(gateBf16));
            OptionalOutputs(default, upBf16, gate.Count, nameof(up), nameof(upBf16));
        }
        long t0 = BeginOp();
        SwiGluForwardCore(h, gate, up, hBf16, gateBf16, upBf16);
        EndOp("swiglu_forward", t0);
    }

    /// <summary>
    /// dGate, dUp from dh. gate, up, dGate and dUp are all F32, or all BF16 (the bf16 precision: the inputs
    /// widened, the gradients rounded); dh is F32, or BF16 with BF16 gate and up (the bf16 output of the down
    /// projection's input gradient). dGate may alias gate and dUp may alias up (each element is read before it is
    /// written).
    /// </summary>
    public void SwiGluBackward(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up)
    {
        Own(dh, nameof(dh));
        Own(gate, nameof(gate));
        if (gate.Type != DType.F32 && gate.Type != DType.BF16) throw new ArgumentException($"gate '{gate.Name}' must be F32 or BF16, is {gate.Type}", nameof(gate));
        if (dh.Type != DType.F32 && !(dh.Type == DType.BF16 && gate.Type == DType.BF16))
            throw new ArgumentException($"dh '{dh.Name}' must be F32, or BF16 with BF16 gate and up; it is {dh.Type} with {gate.Type} gate", nameof(dh));
        Like(gate, dh, gate, nameof(gate)); Like(up, dh, gate, nameof(up)); Like(dGate, dh, gate, nameof(dGate)); Like(dUp, dh, gate, nameof(dUp));
        long t0 = BeginOp();
        SwiGluBackwardCore(dGate, dUp, dh, gate, up);
        EndOp("swiglu_backward", t0);
    }

    /// <summary>t has the element type of <paramref name="typeOf"/> and the element count of <paramref name="countOf"/>.</summary>
    private void Like(Tensor t, Tensor countOf, Tensor typeOf, string what)
    {
        Own(t, what);
        if (t.Type != typeOf.Type) throw new ArgumentException($"{what} '{t.Name}' must be {typeOf.Type} like '{typeOf.Name}', is {t.Type}", what);
        if (t.Count != countOf.Count) throw new ArgumentException($"{what} '{t.Name}' has {t.Count} elements but '{countOf.Name}' has {countOf.Count}", what);
    }

    // ------------------------------------------------------------------ matrix products

    /// <summary>
    /// c[m, n] (+)= op(a) · op(b), row-major, where op(a) is a[m, k] or, with <paramref name="transA"/>, a[k, m]ᵀ,
    /// and op(b) is b[k, n] or, with <paramref name="transB"/>, b[n, k]ᵀ. Training uses three forms:
    /// Y = X·Wᵀ (transB), dX = dY·W (none), dW += dYᵀ·X (transA, accumulate).
    /// </summary>
    /// <remarks>
    /// a and b are both F32 or both BF16 (mixed precision: bf16 products accumulated in fp32, on tensor cores where
    /// the back-end has them). c is F32, or BF16 without <paramref name="accumulate"/>: the fp32 result rounded to
    /// bfloat16 (nearest even) as it is stored, for a product whose output is only ever read as a bf16 operand (half
    /// the bytes written and read again, and no rounding pass).
    /// </remarks>
    public void MatMul(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate)
    {
        Pos(m, nameof(m)); Pos(n, nameof(n)); Pos(k, nameof(k));
        Own(c, nameof(c)); Own(a, nameof(a)); Own(b, nameof(b));
        if (c.Type is not (DType.F32 or DType.BF16))
            throw new ArgumentException($"matmul output '{c.Name}' must be F32 or BF16, is {c.Type}", nameof(c));
        if (c.Type == DType.BF16 && accumulate)
            throw new ArgumentException($"matmul output '{c.Name}' is BF16: a bf16 output is written, never accumulated into", nameof(accumulate));
        if (a.Type is not (DType.F32 or DType.BF16) || b.Type != a.Type)
            throw new ArgumentException($"matmul operands must be both F32 or both BF16: a '{a.Name}' is {a.Type}, b '{b.Name}' is {b.Type}");
        Need(c, (long)m * n, nameof(c)); Need(a, (long)m * k, nameof(a)); Need(b, (long)k * n, nameof(b));
        long t0 = BeginOp();
        MatMulCore(c, a, b, m, n, k, transA, transB, accumulate);
        if (Profile is not null) EndOp(MatMulOpName(transA, transB, a.Type == DType.BF16), t0, 2.0 * m * n * k);
    }

    /// <summary>
    /// c[m, n] (+)= Σᵢ op(aᵢ) · op(bᵢ) over <paramref name="parts"/> (each as in <see cref="MatMul"/>, with its own k):
    /// an input gradient through several weight matrices, dX = dQ·W_q + dK·W_k + dV·W_v. The same as a
    /// <see cref="MatMul"/> per part, all but the first accumulating, and in this order where a back-end sums them that
    /// way; a back-end may instead run them as one product over the parts' k together (one pass over c, no fp32
    /// read and write of c between the parts), so the sums may differ in their last bits. c is F32.
    /// </summary>
    public void MatMulSum(Tensor c, int m, int n, bool transA, bool transB, bool accumulate, params ReadOnlySpan<MatMulPart> parts)
    {
        Pos(m, nameof(m)); Pos(n, nameof(n));
        if (parts.IsEmpty) throw new ArgumentException("a summed matmul needs at least one part", nameof(parts));
        F32(c, nameof(c)); Need(c, (long)m * n, nameof(c));
        double flops = 0;
        foreach (var (a, b, k) in parts)
        {
            Pos(k, nameof(k)); Own(a, nameof(a)); Own(b, nameof(b));
            if (a.Type is not (DType.F32 or DType.BF16) || b.Type != parts[0].A.Type || a.Type != parts[0].A.Type)
                throw new ArgumentException($"summed matmul operands must be all F32 or all BF16: a '{a.Name}' is {a.Type}, b '{b.Name}' is {b.Type}");
            Need(a, (long)m * k, nameof(a)); Need(b, (long)k * n, nameof(b));
            flops += 2.0 * m * n * k;
        }
        long t0 = BeginOp();
        MatMulSumCore(c, m, n, transA, transB, accumulate, parts);
        if (Profile is not null) EndOp(MatMulOpName(transA, transB, parts[0].A.Type == DType.BF16), t0, flops);
    }

    /// <summary>Implementation of <see cref="MatMulSum"/>: by default a <see cref="MatMulCore"/> per part, all but the first accumulating.</summary>
    protected virtual void MatMulSumCore(Tensor c, int m, int n, bool transA, bool transB, bool accumulate, ReadOnlySpan<MatMulPart> parts)
    {
        for (int i = 0; i < parts.Length; i++)
            MatMulCore(c, parts[i].A, parts[i].B, m, n, parts[i].K, transA, transB, accumulate || i > 0);
    }

    /// <summary>
    /// An MLP's SwiGLU projections in bf16: gate = x·W_gateᵀ and up = x·W_upᵀ ([n, f], written in bf16) and h =
    /// silu(gate)·up of the rounded values ([n, f], bf16). The same as <see cref="MatMul"/> twice (BF16 outputs) and
    /// <see cref="SwiGluForward"/> from them, which a back-end may do in one pass (tiles that hold gate and up of the
    /// same features compute h as they store them); x [n, d], W_gate and W_up [f, d], all BF16.
    /// </summary>
    public void MatMulSwiGlu(Tensor h, Tensor gate, Tensor up, Tensor x, Tensor wGate, Tensor wUp, int n, int f, int d)
    {
        Pos(n, nameof(n)); Pos(f, nameof(f)); Pos(d, nameof(d));
        foreach (var (t, what) in new[] { (h, nameof(h)), (gate, nameof(gate)), (up, nameof(up)), (x, nameof(x)), (wGate, nameof(wGate)), (wUp, nameof(wUp)) })
        {
            Own(t, what);
            if (t.Type != DType.BF16) throw new ArgumentException($"{what} '{t.Name}' must be BF16, is {t.Type}", what);
        }
        Need(h, (long)n * f, nameof(h)); Need(gate, (long)n * f, nameof(gate)); Need(up, (long)n * f, nameof(up));
        Need(x, (long)n * d, nameof(x)); Need(wGate, (long)f * d, nameof(wGate)); Need(wUp, (long)f * d, nameof(wUp));
        long t0 = BeginOp();
        MatMulSwiGluCore(h, gate, up, x, wGate, wUp, n, f, d);
        if (Profile is not null) EndOp("matmul NT bf16 + swiglu", t0, 4.0 * n * f * d);
    }

    /// <summary>Implementation of <see cref="MatMulSwiGlu"/>: by default the two products and the SwiGLU forward pass.</summary>
    protected virtual void MatMulSwiGluCore(Tensor h, Tensor gate, Tensor up, Tensor x, Tensor wGate, Tensor wUp, int n, int f, int d)
    {
        var (g, u) = (gate.Slice(0, checked(n * f)), up.Slice(0, checked(n * f)));
        MatMulCore(g, x, wGate, n, f, d, transA: false, transB: true, accumulate: false);
        MatMulCore(u, x, wUp, n, f, d, transA: false, transB: true, accumulate: false);
        SwiGluForwardCore(default, g, u, h.Slice(0, checked(n * f)), default, default);
    }

    /// <summary>
    /// c = op(a)·bᵀ ([m, n], written in bf16) with each of its <paramref name="heads"/> heads rotated by RoPE as
    /// <see cref="Rope"/> rotates a BF16 x (forward): the attention's q or k projection. The same as <see cref="MatMul"/>
    /// (NT, BF16 c) and <see cref="Rope"/> on c, which a back-end may do in one pass (rotating the products before they
    /// are rounded: one rounding fewer). a [m, k] and b [n, k] BF16; n = heads · headDim.
    /// </summary>
    public void MatMulRope(Tensor c, Tensor a, Tensor b, int m, int n, int k, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim, int maxPositions)
    {
        Pos(m, nameof(m)); Pos(n, nameof(n)); Pos(k, nameof(k)); Pos(heads, nameof(heads)); Pos(headDim, nameof(headDim)); Pos(maxPositions, nameof(maxPositions));
        foreach (var (t, what) in new[] { (c, nameof(c)), (a, nameof(a)), (b, nameof(b)) })
        {
            Own(t, what);
            if (t.Type != DType.BF16) throw new ArgumentException($"{what} '{t.Name}' must be BF16, is {t.Type}", what);
        }
        if ((long)heads * headDim != n || headDim % 2 != 0)
            throw new ArgumentException($"n = {n} must be heads · headDim = {heads} · {headDim}, headDim even", nameof(n));
        I32(positions, nameof(positions)); F32(cos, nameof(cos)); F32(sin, nameof(sin));
        Need(c, (long)m * n, nameof(c)); Need(a, (long)m * k, nameof(a)); Need(b, (long)n * k, nameof(b)); Need(positions, m, nameof(positions));
        Need(cos, (long)maxPositions * headDim / 2, nameof(cos)); Need(sin, (long)maxPositions * headDim / 2, nameof(sin));
        long t0 = BeginOp();
        MatMulRopeCore(c, a, b, m, n, k, positions, cos, sin, heads, headDim, maxPositions);
        if (Profile is not null) EndOp("matmul NT bf16 + rope", t0, 2.0 * m * n * k);
    }

    /// <summary>Implementation of <see cref="MatMulRope"/>: by default the product and the rotation.</summary>
    protected virtual void MatMulRopeCore(Tensor c, Tensor a, Tensor b, int m, int n, int k, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim,
        int maxPositions)
    {
        var out16 = c.Slice(0, checked(m * n));
        MatMulCore(out16, a, b, m, n, k, transA: false, transB: true, accumulate: false);
        RopeCore(out16, positions, cos, sin, m, heads, headDim, maxPositions, inverse: false, default, writeX: true);
    }

    // ------------------------------------------------------------------ cross-entropy

    /// <summary>
    /// Per row i &lt; n of logits [n, vocab]: losses[i] = logsumexp(row) − row[targets[i]], or 0 where
    /// targets[i] = −100 (ignored). With <paramref name="writeGradient"/>, the row is then overwritten in place with
    /// rowScale[i] · (softmax(row) − onehot(targets[i])) (zero for ignored rows): no second [n, vocab] buffer.
    /// </summary>
    /// <remarks>
    /// With <paramref name="gradBf16"/> (BF16, [n, vocab]) and <paramref name="writeGradient"/>, the gradient goes
    /// there instead, rounded to bfloat16 (the operand of the head's bf16 products), and the logits stay as they are.
    /// BF16 logits (the head product's bf16 output) are widened and computed in fp32; their gradient, rounded, takes
    /// their place (gradBf16 is then empty).
    /// </remarks>
    public void CrossEntropy(Tensor logits, Tensor targets, Tensor rowScale, Tensor losses, int n, int vocab, bool writeGradient, Tensor gradBf16 = default)
    {
        Pos(n, nameof(n)); Pos(vocab, nameof(vocab));
        Own(logits, nameof(logits)); I32(targets, nameof(targets)); F32(losses, nameof(losses));
        if (logits.Type is not (DType.F32 or DType.BF16)) throw new ArgumentException($"logits '{logits.Name}' must be F32 or BF16, is {logits.Type}", nameof(logits));
        if (logits.Type == DType.BF16 && !gradBf16.IsEmpty)
            throw new ArgumentException($"logits '{logits.Name}' are BF16: their gradient is written in place, not to gradBf16", nameof(gradBf16));
        Need(logits, (long)n * vocab, nameof(logits)); Need(targets, n, nameof(targets)); Need(losses, n, nameof(losses));
        if (writeGradient) { F32(rowScale, nameof(rowScale)); Need(rowScale, n, nameof(rowScale)); }
        if (!gradBf16.IsEmpty)
        {
            if (!writeGradient) throw new ArgumentException("gradBf16 is given but writeGradient is false", nameof(gradBf16));
            Own(gradBf16, nameof(gradBf16)); Need(gradBf16, (long)n * vocab, nameof(gradBf16));
            if (gradBf16.Type != DType.BF16) throw new ArgumentException($"gradBf16 '{gradBf16.Name}' must be BF16, is {gradBf16.Type}", nameof(gradBf16));
        }
        long t0 = BeginOp();
        CrossEntropyCore(logits, targets, rowScale, losses, n, vocab, writeGradient, gradBf16);
        EndOp("cross_entropy", t0);
    }

    /// <summary>The label value whose position carries no loss.</summary>
    public const int IgnoreIndex = -100;

    // ------------------------------------------------------------------ optimizer

    /// <summary>
    /// One AdamW step over a table of segments (I32 [segmentCount, 3]: start, length, decay flag) of the
    /// contiguous trainable block: param, grad, m, v share one layout. Elements outside every segment are
    /// untouched. grad is multiplied by gradScale[0] when gradScale is not empty (clipping).
    /// </summary>
    /// <remarks>
    /// With a non-empty <paramref name="paramBf16"/> (BF16, same layout as param) the step also writes the updated
    /// values rounded to bfloat16 there, in the same pass: the compute copy of mixed-precision training.
    /// </remarks>
    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor segments, int segmentCount, AdamWStep step, Tensor gradScale, Tensor paramBf16 = default)
    {
        if (!paramBf16.IsEmpty)
        {
            Own(paramBf16, nameof(paramBf16)); Same(param, paramBf16);
            if (paramBf16.Type != DType.BF16) throw new ArgumentException($"paramBf16 '{paramBf16.Name}' must be BF16, is {paramBf16.Type}", nameof(paramBf16));
        }
        F32(param, nameof(param)); F32(grad, nameof(grad)); F32(m, nameof(m)); F32(v, nameof(v)); I32(segments, nameof(segments));
        Same(param, grad); Same(param, m); Same(param, v);
        Pos(segmentCount, nameof(segmentCount)); Need(segments, segmentCount * 3L, nameof(segments));
        if (step.Step < 1) throw new ArgumentOutOfRangeException(nameof(step), $"AdamW step must be >= 1, got {step.Step}");
        if (!gradScale.IsEmpty) { F32(gradScale, nameof(gradScale)); Need(gradScale, 1, nameof(gradScale)); }
        long t0 = BeginOp();
        AdamWCore(param, grad, m, v, segments, segmentCount, step, gradScale, paramBf16);
        EndOp("adamw", t0);
    }

    // ------------------------------------------------------------------ profiling

    /// <summary>
    /// While set, every operation (not the transfers) is synchronized before and after and its time added to the
    /// profile under its name (matrix products by form and precision, with their FLOPs): for finding where a step's
    /// time goes, not for timing the step itself (the synchronizations cost launch overlap).
    /// </summary>
    public OpProfile? Profile { get; set; }

    private static readonly string[] MatMulOpNames = [.. from ta in "NT" from tb in "NT" from p in new[] { "fp32", "bf16" } select $"matmul {ta}{tb} {p}"];

    /// <summary>A matrix product's profile name ("matmul NT bf16"), without allocating.</summary>
    private static string MatMulOpName(bool transA, bool transB, bool bf16) => MatMulOpNames[(transA ? 4 : 0) + (transB ? 2 : 0) + (bf16 ? 1 : 0)];

    private long BeginOp()
    {
        if (Profile is null) return 0;
        Synchronize();
        return System.Diagnostics.Stopwatch.GetTimestamp();
    }

    private void EndOp(string op, long t0, double flops = 0)
    {
        if (Profile is null) return;
        Synchronize();
        Profile.Add(op, System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds, flops);
    }

    // ------------------------------------------------------------------ implementations

    /// <summary>Implementation of <see cref="Upload{T}"/>.</summary>
    protected abstract void UploadCore(Tensor dst, ReadOnlySpan<byte> src);
    /// <summary>Implementation of <see cref="Download{T}"/>.</summary>
    protected abstract void DownloadCore(Tensor src, Span<byte> dst);
    /// <summary>Implementation of <see cref="Fill"/>.</summary>
    protected abstract void FillCore(Tensor dst, float value);
    /// <summary>Implementation of <see cref="Copy"/>.</summary>
    protected abstract void CopyCore(Tensor dst, Tensor src);
    /// <summary>Implementation of <see cref="ToBf16"/>.</summary>
    protected abstract void ToBf16Core(Tensor dst, Tensor src);
    /// <summary>Implementation of <see cref="AddInPlace"/>.</summary>
    protected abstract void AddInPlaceCore(Tensor y, Tensor x);
    /// <summary>Implementation of <see cref="Scale"/>.</summary>
    protected abstract void ScaleCore(Tensor x, float s);
    /// <summary>Implementation of <see cref="SumSquares"/>.</summary>
    protected abstract void SumSquaresCore(Tensor result, Tensor x);
    /// <summary>Implementation of <see cref="Dot"/>.</summary>
    protected abstract void DotCore(Tensor result, Tensor a, Tensor b, bool accumulate);
    /// <summary>Implementation of <see cref="EmbeddingForward"/>.</summary>
    protected abstract void EmbeddingForwardCore(Tensor y, Tensor ids, Tensor table, int n, int dim, int vocab);
    /// <summary>Implementation of <see cref="EmbeddingBackward"/>.</summary>
    protected abstract void EmbeddingBackwardCore(Tensor dTable, Tensor ids, Tensor dy, int n, int dim, int vocab);
    /// <summary>Implementation of <see cref="RmsNormForward"/>.</summary>
    protected abstract void RmsNormForwardCore(Tensor y, Tensor rstd, Tensor x, Tensor w, int n, int dim, float eps, Tensor residual, Tensor yBf16);
    /// <summary>Implementation of <see cref="RmsNormBackward"/>.</summary>
    protected abstract void RmsNormBackwardCore(Tensor dx, Tensor dw, Tensor dy, Tensor x, Tensor w, Tensor rstd, int n, int dim, Tensor dxBf16);
    /// <summary>Implementation of <see cref="Rope"/>.</summary>
    protected abstract void RopeCore(Tensor x, Tensor positions, Tensor cos, Tensor sin, int n, int heads, int headDim, int maxPositions, bool inverse, Tensor xBf16, bool writeX);
    /// <summary>Implementation of <see cref="AttentionForward"/>.</summary>
    protected abstract void AttentionForwardCore(Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16);
    /// <summary>Implementation of <see cref="AttentionBackward"/>.</summary>
    protected abstract void AttentionBackwardCore(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse,
        Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, int headDim, float scale, bool bf16);
    /// <summary>Implementation of <see cref="AttentionDecode"/>.</summary>
    protected abstract void AttentionDecodeCore(Tensor o, Tensor q, Tensor kCache, Tensor vCache,
        int batch, int queries, int keys, int cacheRows, int heads, int kvHeads, int headDim, float scale);
    /// <summary>Implementation of <see cref="SwiGluForward"/>.</summary>
    protected abstract void SwiGluForwardCore(Tensor h, Tensor gate, Tensor up, Tensor hBf16, Tensor gateBf16, Tensor upBf16);
    /// <summary>Implementation of <see cref="SwiGluBackward"/>.</summary>
    protected abstract void SwiGluBackwardCore(Tensor dGate, Tensor dUp, Tensor dh, Tensor gate, Tensor up);
    /// <summary>Implementation of <see cref="MatMul"/>.</summary>
    protected abstract void MatMulCore(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, bool accumulate);
    /// <summary>Implementation of <see cref="CrossEntropy"/>.</summary>
    protected abstract void CrossEntropyCore(Tensor logits, Tensor targets, Tensor rowScale, Tensor losses, int n, int vocab, bool writeGradient, Tensor gradBf16);
    /// <summary>Implementation of <see cref="AdamW"/>.</summary>
    protected abstract void AdamWCore(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor segments, int segmentCount, AdamWStep step, Tensor gradScale, Tensor paramBf16);

    // ------------------------------------------------------------------ validation

    /// <summary>The checks of an attention backward pass but the gradients' types (which its caller checks): operands and sizes.</summary>
    private void CheckAttentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor docStart,
        int batch, int seq, int heads, int kvHeads, int headDim)
    {
        CheckAttention(q, k, v, docStart, batch, seq, heads, kvHeads, headDim);
        long nq = (long)batch * seq * heads * headDim, nk = (long)batch * seq * kvHeads * headDim;
        AttentionOperand(dO, nameof(dO), headDim); AttentionOperand(o, nameof(o), headDim); F32(lse, nameof(lse));
        Need(dq, nq, nameof(dq)); Need(dO, nq, nameof(dO)); Need(o, nq, nameof(o));
        Need(dk, nk, nameof(dk)); Need(dv, nk, nameof(dv)); Need(lse, (long)batch * heads * seq, nameof(lse));
    }

    private void CheckAttention(Tensor q, Tensor k, Tensor v, Tensor docStart, int batch, int seq, int heads, int kvHeads, int headDim)
    {
        Pos(batch, nameof(batch)); Pos(seq, nameof(seq)); Pos(heads, nameof(heads)); Pos(kvHeads, nameof(kvHeads)); Pos(headDim, nameof(headDim));
        if (heads % kvHeads != 0)
            throw new ArgumentException($"heads ({heads}) must be a multiple of kvHeads ({kvHeads})", nameof(kvHeads));
        AttentionOperand(q, nameof(q), headDim); AttentionOperand(k, nameof(k), headDim); AttentionOperand(v, nameof(v), headDim);
        Need(q, (long)batch * seq * heads * headDim, nameof(q));
        Need(k, (long)batch * seq * kvHeads * headDim, nameof(k));
        Need(v, (long)batch * seq * kvHeads * headDim, nameof(v));
        if (!docStart.IsEmpty) { I32(docStart, nameof(docStart)); Need(docStart, (long)batch * seq, nameof(docStart)); }
    }

    /// <summary>
    /// Whether <see cref="AttentionForward"/> and <see cref="AttentionBackward"/> take BF16 q, k, v, o and dO for
    /// this head dimension (else they must be F32). The base back-end does not.
    /// </summary>
    public virtual bool TakesBf16AttentionInputs(int headDim) => false;

    /// <summary>An attention operand: F32, or BF16 where <see cref="TakesBf16AttentionInputs"/>.</summary>
    private void AttentionOperand(Tensor t, string what, int headDim)
    {
        Own(t, what);
        if (t.Type == DType.F32 || (t.Type == DType.BF16 && TakesBf16AttentionInputs(headDim))) return;
        throw new ArgumentException(TakesBf16AttentionInputs(headDim)
            ? $"{what} '{t.Name}' must be F32 or BF16, is {t.Type}"
            : $"{what} '{t.Name}' must be F32, is {t.Type} (back-end '{Name}' takes BF16 attention operands only where TakesBf16AttentionInputs, not at head dimension {headDim})", what);
    }

    private void Own(Tensor t, string what)
    {
        if (t.Arena is null) throw new ArgumentException($"{what} is the empty tensor", what);
        if (!ReferenceEquals(t.Arena.Backend, this))
            throw new ArgumentException($"{what} '{t.Name}' belongs to back-end '{t.Arena.Backend.Name}', not '{Name}'", what);
        if (!t.Arena.IsCommitted) throw new ArgumentException($"{what} '{t.Name}' lives in an arena that is not committed yet", what);
    }

    private void F32(Tensor t, string what) { Own(t, what); if (t.Type != DType.F32) throw new ArgumentException($"{what} '{t.Name}' must be F32, is {t.Type}", what); }

    private void I32(Tensor t, string what) { Own(t, what); if (t.Type != DType.I32) throw new ArgumentException($"{what} '{t.Name}' must be I32, is {t.Type}", what); }

    private static void CheckElement<T>(Tensor t) where T : unmanaged
    {
        if (System.Runtime.CompilerServices.Unsafe.SizeOf<T>() != t.Type.Size())
            throw new ArgumentException($"tensor '{t.Name}' holds {t.Type}; {typeof(T).Name} has another size");
    }

    private static void Need(Tensor t, long count, string what)
    {
        if (t.Count < count) throw new ArgumentException($"{what} '{t.Name}' has {t.Count} elements, needs {count}", what);
    }

    private static void Same(Tensor a, Tensor b)
    {
        if (a.Count != b.Count) throw new ArgumentException($"'{a.Name}' has {a.Count} elements but '{b.Name}' has {b.Count}");
    }

    private static void Pos(int value, string what)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(what, value, $"{what} must be positive");
    }
}
