using System.Runtime.CompilerServices;
using ILGPU;

namespace HftRuntime.Kernels.Ilgpu;

/// <summary>
/// The global loads and shared stores of the fast bf16 GEMM per operand layout. The shared layout is the same for
/// every form (see <see cref="IlgpuBackend.MatMulBf16FastKernel"/>): A as ready fragments, B as [row][chunk]; only how
/// a step's tiles get there differs. k-contiguous operands (A [m, k], B [n, k]) are loaded and stored in 16-byte
/// chunks along k. m- or n-contiguous ones (A [k, m], B [k, n]) are loaded in 16-byte chunks along m or n (8 rows at
/// one k) and transposed in registers into bf16 pairs along k: A by 2 k rows (8 pairs, 4-byte stores into the
/// fragments), B by 4 k rows (8 × 2 pairs, 8-byte stores).
/// </summary>
public sealed partial class IlgpuBackend
{
    /// <summary>The forms of the fast kernel: C = A·Bᵀ (both k-contiguous), A·B (B n-contiguous), Aᵀ·B (A m-, B n-contiguous).</summary>
    private const int FastNT = 0, FastNN = 1, FastTN = 2;

    /// <summary>Two bf16 pairs (an 8-byte shared store).</summary>
    internal struct U2
    {
        public uint X, Y;
    }

    /// <summary>
    /// Where this thread loads and stores one operand's share of a k step. Idx: its first chunk (Row·Ld + Col, the
    /// tile's origin added per tile), Gap: between its loads, Step: from one 8 k to the next (chunks), St: its
    /// shared store offset (in U4 for k-contiguous operands, uint for a transposed A, U2 for a transposed B).
    /// </summary>
    internal struct FastOperand
    {
        public int Ld, Row, Col, Gap, Step, St;
    }

    /// <summary>
    /// A's plan: k-contiguous, chunk tid mod 4 of rows g and g+8 of m16 block tid/32 (g = tid/4 mod 8); m-contiguous,
    /// m chunk 2·warp + lane/16 (the rows g or g+8 of m16 block `warp`) at k rows 2·(lane mod 16) and one further.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FastOperand FastPlanA(Bf16GemmArgs p, int form, int tid)
    {
        FastOperand o;
        int warp = tid >> 5, lane = tid & 31;
        if (form != FastTN)
        {
            o.Ld = p.K >> 3;
            o.Row = warp * 16 + ((tid >> 2) & 7);
            o.Col = tid & 3;
            o.Gap = 8 * o.Ld;
            o.Step = 1;
            o.St = o.Row * Bf16FastChunks + o.Col;
        }
        else
        {
            // k pair kp = lane mod 16 of the step: chunk kp/4, 16-k half (kp/2) mod 2, pair kp mod 2 of the half
            // (X/Y or Z/W), row g (X, Z) or g+8 (Y, W) by lane/16; row g of the chunk's 8 at 16 uints each.
            int kp = lane & 15, bottom = lane >> 4;
            o.Ld = p.M >> 3;
            o.Row = 2 * kp;
            o.Col = 2 * warp + bottom;
            o.Gap = o.Ld;
            o.Step = 8 * o.Ld;
            o.St = (2 * warp + ((kp >> 1) & 1)) * 128 + (kp >> 2) * 4 + (kp & 1) * 2 + bottom;
        }
        return o;
    }

    /// <summary>
    /// B's plan: k-contiguous, chunk tid mod 4 of rows tid/4 + 64q; n-contiguous, n chunk tid/8 at k rows
    /// 4·(tid mod 8) .. +3 (one half of a chunk: pairs 2·(tid mod 8), +1 of the step).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FastOperand FastPlanB(Bf16GemmArgs p, int form, int tid)
    {
        FastOperand o;
        if (form == FastNT)
        {
            o.Ld = p.K >> 3;
            o.Row = tid >> 2;
            o.Col = tid & 3;
            o.Gap = 64 * o.Ld;
            o.Step = 1;
            o.St = o.Row * Bf16FastChunks + o.Col;
        }
        else
        {
            int kq = tid & 7, nc = tid >> 3;
            o.Ld = p.N >> 3;
            o.Row = 4 * kq;
            o.Col = nc;
            o.Gap = o.Ld;
            o.Step = 8 * o.Ld;
            o.St = 64 * nc + kq;
        }
        return o;
    }

    /// <summary>
    /// The operand's first chunk for the tile whose rows (m or n) start at r0 and whose k slice starts at k0:
    /// k-contiguous (r0 + Row)·Ld + k0/8 + Col, otherwise (k0 + Row)·Ld + r0/8 + Col.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FastFirst(FastOperand o, bool kContiguous, int r0, int k0) =>
        kContiguous ? (r0 + o.Row) * o.Ld + (k0 >> 3) + o.Col : (k0 + o.Row) * o.Ld + (r0 >> 3) + o.Col;

    /// <summary>
    /// This thread's chunks of one k step (indices in chunks): A at aIdx and aGap further, B at bIdx and 1, 2, 3 bGap
    /// further.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FastRegs LoadFast(ArrayView<U4> a, ArrayView<U4> b, int aIdx, int bIdx, int aGap, int bGap)
    {
        FastRegs r;
        r.A0 = a[aIdx];
        r.A1 = a[aIdx + aGap];
        r.B0 = b[bIdx];
        r.B1 = b[bIdx + bGap];
        r.B2 = b[bIdx + 2 * bGap];
        r.B3 = b[bIdx + 3 * bGap];
        return r;
    }

    /// <summary>Stores a step's registers into stage `buffer` of the shared tiles, each operand as its form loaded it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFast(ArrayView<U4> sa, ArrayView<U4> sb, int buffer, int aOff, int bOff, FastRegs r, int form)
    {
        if (form != FastTN) StoreAChunks(sa.SubView(buffer * Bf16FastStageA + aOff), r);
        else StoreATransposed(sa.Cast<uint>().SubView(4 * (buffer * Bf16FastStageA) + aOff), r);
        if (form == FastNT) StoreBChunks(sb.SubView(buffer * Bf16FastStageB + bOff), r);
        else StoreBTransposed(sb.Cast<U2>().SubView(2 * (buffer * Bf16FastStageB) + bOff), r);
    }

    /// <summary>
    /// A k-contiguous: the rows g and g+8 interleaved, (g, X), (g+8, X), (g, Y), (g+8, Y) for the first 16-k half at
    /// sa[0], the Z and W pairs for the second half 8 rows' worth (32 chunks) further.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreAChunks(ArrayView<U4> sa, FastRegs r)
    {
        U4 lo, hi;
        lo.X = r.A0.X; lo.Y = r.A1.X; lo.Z = r.A0.Y; lo.W = r.A1.Y;
        hi.X = r.A0.Z; hi.Y = r.A1.Z; hi.Z = r.A0.W; hi.W = r.A1.W;
        sa[0] = lo;
        sa[8 * Bf16FastChunks] = hi;
    }

    /// <summary>B k-contiguous: [row][chunk], the thread's 4 rows 64 apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBChunks(ArrayView<U4> sb, FastRegs r)
    {
        const int rows64 = 64 * Bf16FastChunks;
        sb[0] = r.B0;
        sb[rows64] = r.B1;
        sb[2 * rows64] = r.B2;
        sb[3 * rows64] = r.B3;
    }

    /// <summary>The low bf16 of lo and of hi as a pair (element 2j of two chunks at k and k+1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint PairLo(uint lo, uint hi) => (lo & 0xFFFFu) | (hi << 16);

    /// <summary>The high bf16 of lo and of hi as a pair (element 2j+1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint PairHi(uint lo, uint hi) => (lo >> 16) | (hi & 0xFFFF0000u);

    /// <summary>
    /// A m-contiguous: A0, A1 hold 8 m at k and k+1; element j of both is the pair of row g = j, stored in its
    /// fragment slot 16 uints (one g) apart.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreATransposed(ArrayView<uint> s, FastRegs r)
    {
        s[0] = PairLo(r.A0.X, r.A1.X);
        s[16] = PairHi(r.A0.X, r.A1.X);
        s[32] = PairLo(r.A0.Y, r.A1.Y);
        s[48] = PairHi(r.A0.Y, r.A1.Y);
        s[64] = PairLo(r.A0.Z, r.A1.Z);
        s[80] = PairHi(r.A0.Z, r.A1.Z);
        s[96] = PairLo(r.A0.W, r.A1.W);
        s[112] = PairHi(r.A0.W, r.A1.W);
    }

    /// <summary>
    /// B n-contiguous: B0..B3 hold 8 n at k .. k+3; element j gives row j's pairs (k, k+1), (k+2, k+3), one half of
    /// its chunk, at s[8j] (a row is 4 chunks, 8 halves).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBTransposed(ArrayView<U2> s, FastRegs r)
    {
        s[0] = HalfLo(r.B0.X, r.B1.X, r.B2.X, r.B3.X);
        s[8] = HalfHi(r.B0.X, r.B1.X, r.B2.X, r.B3.X);
        s[16] = HalfLo(r.B0.Y, r.B1.Y, r.B2.Y, r.B3.Y);
        s[24] = HalfHi(r.B0.Y, r.B1.Y, r.B2.Y, r.B3.Y);
        s[32] = HalfLo(r.B0.Z, r.B1.Z, r.B2.Z, r.B3.Z);
        s[40] = HalfHi(r.B0.Z, r.B1.Z, r.B2.Z, r.B3.Z);
        s[48] = HalfLo(r.B0.W, r.B1.W, r.B2.W, r.B3.W);
        s[56] = HalfHi(r.B0.W, r.B1.W, r.B2.W, r.B3.W);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U2 HalfLo(uint k0, uint k1, uint k2, uint k3)
    {
        U2 v;
        v.X = PairLo(k0, k1);
        v.Y = PairLo(k2, k3);
        return v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U2 HalfHi(uint k0, uint k1, uint k2, uint k3)
    {
        U2 v;
        v.X = PairHi(k0, k1);
        v.Y = PairHi(k2, k3);
        return v;
    }
}
