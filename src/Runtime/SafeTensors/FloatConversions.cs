namespace HftRuntime.Runtime.SafeTensors;

/// <summary>Bit-exact conversions between float32 and the 16-bit float formats stored in safetensors files.</summary>
public static class FloatConversions
{
    /// <summary>
    /// float32 to bfloat16 bits, rounding to nearest with ties to even (as PyTorch does). Values too large for
    /// bfloat16 become infinity; a NaN stays a NaN with the same sign (its quiet bit is set so that dropping the
    /// low mantissa bits can never turn it into an infinity).
    /// </summary>
    public static ushort FloatToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((bits >> 16) | 0x0040u);
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>bfloat16 bits to float32 (exact: the bits become the upper half of the float).</summary>
    public static float BFloat16ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>float32 to IEEE half-precision bits, rounding to nearest with ties to even; overflow gives infinity.</summary>
    public static ushort FloatToHalf(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>IEEE half-precision bits to float32 (exact, subnormals included).</summary>
    public static float HalfToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);
}
