namespace HftRuntime.Kernels;

/// <summary>bfloat16 conversions, bit-exact with PyTorch's: every back-end and file reader rounds the same way.</summary>
public static class Bf16
{
    /// <summary>
    /// float32 to bfloat16 bits, rounding to nearest with ties to even. Values too large for bfloat16 become
    /// infinity; a NaN stays a NaN with the same sign (its quiet bit is set so that dropping the low mantissa bits
    /// can never turn it into an infinity).
    /// </summary>
    public static ushort FromFloat(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((bits >> 16) | 0x0040u);
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>bfloat16 bits to float32 (exact: the bits become the upper half of the float).</summary>
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>The float32 nearest to <paramref name="value"/> that bfloat16 can hold (<see cref="FromFloat"/> then back).</summary>
    public static float Round(float value) => ToFloat(FromFloat(value));
}
