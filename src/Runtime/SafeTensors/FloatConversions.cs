using HftRuntime.Kernels;

namespace HftRuntime.Runtime.SafeTensors;

/// <summary>Bit-exact conversions between float32 and the 16-bit float formats stored in safetensors files.</summary>
public static class FloatConversions
{
    /// <summary>float32 to bfloat16 bits, rounding to nearest with ties to even (see <see cref="Bf16.FromFloat"/>).</summary>
    public static ushort FloatToBFloat16(float value) => Bf16.FromFloat(value);

    /// <summary>bfloat16 bits to float32 (exact).</summary>
    public static float BFloat16ToFloat(ushort bits) => Bf16.ToFloat(bits);

    /// <summary>float32 to IEEE half-precision bits, rounding to nearest with ties to even; overflow gives infinity.</summary>
    public static ushort FloatToHalf(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>IEEE half-precision bits to float32 (exact, subnormals included).</summary>
    public static float HalfToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);
}
