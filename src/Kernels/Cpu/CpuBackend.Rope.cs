namespace HftRuntime.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    private struct RopeArgs { public float* X, Cos, Sin; public int* Pos; public ushort* X16; public int Heads, HeadDim, MaxPositions; public bool Inverse, WriteX, Bf16In; }

    /// <inheritdoc/>
    /// <remarks>A BF16 x is widened row by row, rotated and rounded back.</remarks>
    protected override void RopeCore(Tensor x, Tensor positions, Tensor cos, Tensor sin, int n, int heads, int headDim, int maxPositions, bool inverse, Tensor xBf16, bool writeX)
    {
        bool bf16In = x.Type == DType.BF16;
        var a = new RopeArgs
        {
            X = bf16In ? null : F(x), Cos = F(cos), Sin = F(sin), Pos = I(positions), X16 = bf16In ? H(x) : xBf16.IsEmpty ? null : H(xBf16),
            Heads = heads, HeadDim = headDim, MaxPositions = maxPositions, Inverse = inverse, WriteX = writeX, Bf16In = bf16In,
        };
        for (int i = 0; i < n; i++)
            if ((uint)a.Pos[i] >= (uint)maxPositions)
                throw new ArgumentOutOfRangeException(nameof(positions), a.Pos[i], $"position {a.Pos[i]} at row {i} is outside the RoPE table [0, {maxPositions})");
        _pool.For(n, Math.Max(1, 8192 / (heads * headDim)), &RopeRows, &a);
    }

    private static void RopeRows(void* p, int s, int e)
    {
        var a = (RopeArgs*)p;
        int half = a->HeadDim / 2;
        float sign = a->Inverse ? -1f : 1f;
        for (int i = s; i < e; i++)
        {
            float* c = a->Cos + (long)a->Pos[i] * half, sn = a->Sin + (long)a->Pos[i] * half;
            int width = a->Heads * a->HeadDim;
            float* row = a->X + (long)i * width;
            if (a->Bf16In)
            {
                row = ScratchBuffer.Get(width);
                WidenRange(a->X16 + (long)i * width, row, 0, width);
            }
            else if (!a->WriteX)
            {
                // Only the bf16 copy receives the rotation: rotate a copy of the row.
                float* copy = ScratchBuffer.Get(width);
                Buffer.MemoryCopy(row, copy, (long)width * sizeof(float), (long)width * sizeof(float));
                row = copy;
            }
            for (int h = 0; h < a->Heads; h++)
            {
                float* x = row + h * a->HeadDim;
                for (int j = 0; j < half; j++)
                {
                    float x1 = x[j], x2 = x[j + half], cj = c[j], sj = sign * sn[j];
                    x[j] = x1 * cj - x2 * sj;
                    x[j + half] = x2 * cj + x1 * sj;
                }
            }
            if (a->X16 != null) RoundRange(row, a->X16 + (long)i * width, 0, width);
        }
    }
}
