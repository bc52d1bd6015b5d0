namespace HftRuntime.Model.Tokenizers;

/// <summary>
/// The few facts this runtime needs from a SentencePiece <c>ModelProto</c> (sentencepiece_model.proto), read with a
/// minimal protobuf scanner: the number of pieces (the vocabulary size, which the library's dictionary does not
/// always give: unigram models leave byte and control pieces out of it), the model type, byte fallback, and the first
/// piece whose text holds a NUL character (Microsoft.ML.Tokenizers' unigram trie cannot store one: it refuses some and
/// fails with IndexOutOfRangeException when encoding with others).
/// </summary>
internal readonly record struct SentencePieceModelProto(int PieceCount, int ModelType, bool ByteFallback, int FirstPieceWithNul = -1)
{
    /// <summary>TrainerSpec.ModelType.UNIGRAM (the proto default).</summary>
    public const int Unigram = 1;

    /// <summary>TrainerSpec.ModelType.BPE.</summary>
    public const int Bpe = 2;

    /// <summary>A readable name of <see cref="ModelType"/>.</summary>
    public string ModelTypeName => ModelType switch
    {
        Unigram => "unigram",
        Bpe => "bpe",
        3 => "word",
        4 => "char",
        _ => $"unknown ({ModelType})",
    };

    // Field numbers from sentencepiece_model.proto.
    private const int ModelPiecesField = 1;
    private const int PieceTextField = 1;
    private const int ModelTrainerSpecField = 2;
    private const int TrainerModelTypeField = 3;
    private const int TrainerByteFallbackField = 35;

    /// <summary>Scans the serialized model.</summary>
    /// <exception cref="FormatException">The bytes are not a well-formed protobuf message.</exception>
    public static SentencePieceModelProto Read(ReadOnlySpan<byte> model)
    {
        int pieces = 0, modelType = Unigram, firstPieceWithNul = -1;
        bool byteFallback = false;
        int pos = 0;
        while (pos < model.Length)
        {
            var (field, wireType) = ReadKey(model, ref pos);
            if (field == ModelPiecesField && wireType == 2)
            {
                var piece = ReadLengthDelimited(model, ref pos);
                if (firstPieceWithNul < 0 && HasNul(piece)) firstPieceWithNul = pieces;
                pieces++;
            }
            else if (field == ModelTrainerSpecField && wireType == 2)
            {
                var spec = ReadLengthDelimited(model, ref pos);
                int p = 0;
                while (p < spec.Length)
                {
                    var (f, w) = ReadKey(spec, ref p);
                    if (f == TrainerModelTypeField && w == 0) modelType = (int)ReadVarint(spec, ref p);
                    else if (f == TrainerByteFallbackField && w == 0) byteFallback = ReadVarint(spec, ref p) != 0;
                    else Skip(spec, ref p, w);
                }
            }
            else
            {
                Skip(model, ref pos, wireType);
            }
        }
        return new SentencePieceModelProto(pieces, modelType, byteFallback, firstPieceWithNul);
    }

    /// <summary>True when a SentencePiece message's text (field 1) holds a 0 byte (U+0000 in UTF-8).</summary>
    private static bool HasNul(ReadOnlySpan<byte> piece)
    {
        int p = 0;
        bool nul = false;
        while (p < piece.Length)
        {
            var (f, w) = ReadKey(piece, ref p);
            if (f == PieceTextField && w == 2) nul |= ReadLengthDelimited(piece, ref p).Contains((byte)0);
            else Skip(piece, ref p, w);
        }
        return nul;
    }

    private static (int Field, int WireType) ReadKey(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong key = ReadVarint(data, ref pos);
        ulong field = key >> 3;
        if (field == 0 || field > int.MaxValue) throw new FormatException($"invalid protobuf field number {field} at byte {pos}");
        return ((int)field, (int)(key & 7));
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= data.Length) throw new FormatException("truncated protobuf varint");
            byte b = data[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
        throw new FormatException($"protobuf varint longer than 10 bytes at byte {pos}");
    }

    private static ReadOnlySpan<byte> ReadLengthDelimited(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong length = ReadVarint(data, ref pos);
        if (length > (ulong)(data.Length - pos))
            throw new FormatException($"protobuf field of {length} bytes at byte {pos} runs past the end of the data");
        var slice = data.Slice(pos, (int)length);
        pos += (int)length;
        return slice;
    }

    private static void Skip(ReadOnlySpan<byte> data, ref int pos, int wireType)
    {
        switch (wireType)
        {
            case 0: ReadVarint(data, ref pos); break;
            case 1: Advance(data, ref pos, 8); break;
            case 2: ReadLengthDelimited(data, ref pos); break;
            case 5: Advance(data, ref pos, 4); break;
            default: throw new FormatException($"unsupported protobuf wire type {wireType} before byte {pos}");
        }
    }

    private static void Advance(ReadOnlySpan<byte> data, ref int pos, int count)
    {
        if (data.Length - pos < count) throw new FormatException("truncated protobuf field");
        pos += count;
    }
}
