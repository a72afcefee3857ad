package snapfile

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The fast path of Verify. Almost every record of a snapshot is a Row, and
// Verify needs only its table id and the kind of each value, not the
// values. scanRow reads exactly that from the wire bytes with protowire
// (the primitives proto.Unmarshal itself is built on) and allocates
// nothing. Profiling Verify showed proto.Unmarshal's generic decoder,
// which allocates the Row, every Value and every oneof wrapper, taking
// most of its time; vtprotobuf's generated UnmarshalVT was about 3× faster
// but allocates as much, skips the UTF-8 check proto3 strings require and
// accepts varints proto.Unmarshal refuses.
//
// scanRow accepts only the canonical encoding of a Row record, the one
// every proto encoder writes: a Record with its row field once, a Row
// with table_id at most once and its values, each Value with exactly one
// kind of the right wire type, text valid UTF-8. Anything else (unknown
// fields, a repeated or empty oneof, another wire type, any other record
// kind, a malformed record) is reported as not canonical and the caller
// decodes the record with proto.Unmarshal, so the verdict on it is
// exactly proto.Unmarshal's. FuzzScanRow checks that whatever scanRow
// accepts, proto.Unmarshal decodes to the same table id and kinds.

// Value kinds as scanRow reports them: the Value oneof's field numbers.
const (
	kindNull      = 1
	kindInt64     = 2
	kindFloat64   = 3
	kindText      = 4
	kindBytes     = 5
	kindBool      = 6
	kindTimestamp = 7
	kindPg        = 8 // a PostgreSQL value in its binary or text form (snapshot dump)
)

// wireOf is the wire type of each Value kind.
var wireOf = [...]protowire.Type{
	kindNull:      protowire.VarintType,
	kindInt64:     protowire.VarintType,
	kindFloat64:   protowire.Fixed64Type,
	kindText:      protowire.BytesType,
	kindBytes:     protowire.BytesType,
	kindBool:      protowire.VarintType,
	kindTimestamp: protowire.VarintType,
	kindPg:        protowire.BytesType,
}

// scanRow reads a Record holding a Row: its table id, and the kind of each
// value appended to kinds. ok is false when b is not the canonical
// encoding of a Row record; kinds may then hold partial results.
func scanRow(b []byte, kinds []uint8) (tableID uint32, _ []uint8, ok bool) {
	// Record: field 3 (row), length-delimited, and nothing after it.
	num, typ, n := consumeTag(b)
	if n < 0 || num != 3 || typ != protowire.BytesType {
		return 0, kinds, false
	}
	row, m := consumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return 0, kinds, false
	}
	seenID := false
	for len(row) > 0 {
		num, typ, n := consumeTag(row)
		if n < 0 {
			return 0, kinds, false
		}
		row = row[n:]
		switch {
		case num == 1 && typ == protowire.VarintType && !seenID:
			v, n := protowire.ConsumeVarint(row)
			if n < 0 {
				return 0, kinds, false
			}
			tableID, seenID, row = uint32(v), true, row[n:]
		case num == 2 && typ == protowire.BytesType:
			val, n := consumeBytes(row)
			if n < 0 {
				return 0, kinds, false
			}
			row = row[n:]
			k, ok := scanValue(val)
			if !ok {
				return 0, kinds, false
			}
			kinds = append(kinds, k)
		default:
			return 0, kinds, false
		}
	}
	return tableID, kinds, true
}

// scanValue reads a Value that has exactly one kind, of its wire type.
func scanValue(b []byte) (uint8, bool) {
	num, typ, n := consumeTag(b)
	if n < 0 || num < kindNull || num > kindPg || typ != wireOf[num] {
		return 0, false
	}
	b = b[n:]
	switch typ {
	case protowire.VarintType:
		_, n = protowire.ConsumeVarint(b)
	case protowire.Fixed64Type:
		_, n = protowire.ConsumeFixed64(b)
	default:
		var s []byte
		s, n = consumeBytes(b)
		if num == kindText && n >= 0 && !utf8.Valid(s) {
			return 0, false
		}
	}
	if n < 0 || n != len(b) {
		return 0, false
	}
	return uint8(num), true
}

// consumeTag is protowire.ConsumeTag with the one-byte tags of fields 1
// to 15 inlined. (It returns field number 0 where ConsumeTag fails; no
// caller accepts 0.)
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return protowire.ConsumeTag(b)
}

// consumeBytes is protowire.ConsumeBytes with one-byte lengths inlined.
func consumeBytes(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 {
		n := 1 + int(b[0])
		if n > len(b) {
			return nil, -1
		}
		return b[1:n], n
	}
	return protowire.ConsumeBytes(b)
}
