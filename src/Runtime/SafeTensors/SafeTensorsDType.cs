namespace HftRuntime.Runtime.SafeTensors;

/// <summary>Element types of the safetensors format, named as they are spelled in a header ("F32", "BF16", ...).</summary>
public enum SafeTensorsDType
{
    /// <summary>64-bit IEEE float ("F64").</summary>
    F64,
    /// <summary>32-bit IEEE float ("F32").</summary>
    F32,
    /// <summary>16-bit IEEE half-precision float ("F16").</summary>
    F16,
    /// <summary>bfloat16: the upper 16 bits of a 32-bit float ("BF16").</summary>
    BF16,
    /// <summary>8-bit float, 4 exponent and 3 mantissa bits ("F8_E4M3"); readable only as raw bytes.</summary>
    F8_E4M3,
    /// <summary>8-bit float, 5 exponent and 2 mantissa bits ("F8_E5M2"); readable only as raw bytes.</summary>
    F8_E5M2,
    /// <summary>64-bit signed integer ("I64").</summary>
    I64,
    /// <summary>32-bit signed integer ("I32").</summary>
    I32,
    /// <summary>16-bit signed integer ("I16").</summary>
    I16,
    /// <summary>8-bit signed integer ("I8").</summary>
    I8,
    /// <summary>64-bit unsigned integer ("U64").</summary>
    U64,
    /// <summary>32-bit unsigned integer ("U32").</summary>
    U32,
    /// <summary>16-bit unsigned integer ("U16").</summary>
    U16,
    /// <summary>8-bit unsigned integer ("U8").</summary>
    U8,
    /// <summary>Boolean stored as one byte, 0 or 1 ("BOOL").</summary>
    BOOL,
}

/// <summary>Sizes and header spellings of <see cref="SafeTensorsDType"/> values.</summary>
public static class SafeTensorsDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this SafeTensorsDType type) => type switch
    {
        SafeTensorsDType.F64 or SafeTensorsDType.I64 or SafeTensorsDType.U64 => 8,
        SafeTensorsDType.F32 or SafeTensorsDType.I32 or SafeTensorsDType.U32 => 4,
        SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.I16 or SafeTensorsDType.U16 => 2,
        SafeTensorsDType.F8_E4M3 or SafeTensorsDType.F8_E5M2 or SafeTensorsDType.I8 or SafeTensorsDType.U8
            or SafeTensorsDType.BOOL => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown safetensors dtype"),
    };

    /// <summary>The spelling used in a safetensors header, e.g. "BF16".</summary>
    public static string ToHeaderName(this SafeTensorsDType type)
    {
        _ = SizeOf(type); // rejects values outside the enum
        return type.ToString();
    }

    /// <summary>Parses a header spelling (exact, case-sensitive, as the format requires); false when unknown.</summary>
    public static bool TryParse(string name, out SafeTensorsDType type)
    {
        switch (name)
        {
            case "F64": type = SafeTensorsDType.F64; return true;
            case "F32": type = SafeTensorsDType.F32; return true;
            case "F16": type = SafeTensorsDType.F16; return true;
            case "BF16": type = SafeTensorsDType.BF16; return true;
            case "F8_E4M3": type = SafeTensorsDType.F8_E4M3; return true;
            case "F8_E5M2": type = SafeTensorsDType.F8_E5M2; return true;
            case "I64": type = SafeTensorsDType.I64; return true;
            case "I32": type = SafeTensorsDType.I32; return true;
            case "I16": type = SafeTensorsDType.I16; return true;
            case "I8": type = SafeTensorsDType.I8; return true;
            case "U64": type = SafeTensorsDType.U64; return true;
            case "U32": type = SafeTensorsDType.U32; return true;
            case "U16": type = SafeTensorsDType.U16; return true;
            case "U8": type = SafeTensorsDType.U8; return true;
            case "BOOL": type = SafeTensorsDType.BOOL; return true;
            default: type = default; return false;
        }
    }
}
