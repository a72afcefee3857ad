package dbsnap

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of snapshot.proto that the hand-written row codec uses.
const (
	fieldRecordRow   = 3 // Record.row
	fieldRowTableID  = 1 // Row.table_id
	fieldRowValues   = 2 // Row.values
	fieldValueNull   = 1
	fieldValueInt64  = 2
	fieldValueFloat  = 3
	fieldValueText   = 4
	fieldValueBytes  = 5
	fieldValueBool   = 6
	fieldValueTime   = 7
	fieldValuePg     = 8
	maxFieldsPerRow  = 1664 // PostgreSQL's column limit
	errRowDecodeBase = "dbsnap: row record does not decode"
)

// ErrRowDecode is a Row record that is not valid protobuf of its message.
var ErrRowDecode = errors.New(errRowDecodeBase)

// Kind is the kind of a decoded Value.
type Kind uint8

// Value kinds, as the oneof in snapshot.proto's Value.
const (
	KindUnset Kind = iota // no kind set: invalid in a row
	KindNull
	KindInt64
	KindFloat64
	KindText
	KindBytes
	KindBool
	KindTimestamp // micros since the Unix epoch
	KindPg
)

var kindNames = [...]string{"unset", "null", "int64", "float64", "text", "bytes", "bool", "timestamp", "pg"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Value is a decoded Value: a view into the record it came from.
type Value struct {
	Kind Kind
	Int  int64   // int64, bool (0/1), timestamp micros
	F    float64 // float64
	B    []byte  // text, bytes, pg
}

// AppendRowRecord appends the encoding of Record{row: Row{table_id, values}}
// where every value is Value{pg: f}, or Value{null} for a nil f. An empty
// non-nil f is an empty value, not NULL.
func AppendRowRecord(dst []byte, tableID uint32, fields [][]byte) []byte {
	n := 0
	if tableID != 0 {
		n += 1 + protowire.SizeVarint(uint64(tableID))
	}
	for _, f := range fields {
		v := valueSize(f)
		n += 1 + protowire.SizeVarint(uint64(v)) + v
	}
	dst = protowire.AppendTag(dst, fieldRecordRow, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(n))
	if tableID != 0 {
		dst = protowire.AppendTag(dst, fieldRowTableID, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(tableID))
	}
	for _, f := range fields {
		dst = protowire.AppendTag(dst, fieldRowValues, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(valueSize(f)))
		if f == nil {
			dst = protowire.AppendTag(dst, fieldValueNull, protowire.VarintType)
			dst = append(dst, 0)
			continue
		}
		dst = protowire.AppendTag(dst, fieldValuePg, protowire.BytesType)
		dst = protowire.AppendBytes(dst, f)
	}
	return dst
}

// consumeTag is protowire.ConsumeTag that also refuses field numbers
// outside 1..2^29-1, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && !num.IsValid() {
		return 0, 0, -1
	}
	return num, typ, n
}

// AppendRow appends the encoding of Record{row: Row{table_id, values}}
// for values of any kind (as DecodeRowRecord returns them). KindUnset is
// encoded as an empty Value.
func AppendRow(dst []byte, tableID uint32, vals []Value) []byte {
	n := 0
	if tableID != 0 {
		n += 1 + protowire.SizeVarint(uint64(tableID))
	}
	for _, v := range vals {
		s := v.size()
		n += 1 + protowire.SizeVarint(uint64(s)) + s
	}
	dst = protowire.AppendTag(dst, fieldRecordRow, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(n))
	if tableID != 0 {
		dst = protowire.AppendTag(dst, fieldRowTableID, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(tableID))
	}
	for _, v := range vals {
		dst = protowire.AppendTag(dst, fieldRowValues, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(v.size()))
		switch v.Kind {
		case KindNull:
			dst = protowire.AppendTag(dst, fieldValueNull, protowire.VarintType)
			dst = append(dst, 0)
		case KindInt64, KindTimestamp:
			num := protowire.Number(fieldValueInt64)
			if v.Kind == KindTimestamp {
				num = fieldValueTime
			}
			dst = protowire.AppendTag(dst, num, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(v.Int))
		case KindBool:
			dst = protowire.AppendTag(dst, fieldValueBool, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(v.Int&1))
		case KindFloat64:
			dst = protowire.AppendTag(dst, fieldValueFloat, protowire.Fixed64Type)
			dst = protowire.AppendFixed64(dst, math.Float64bits(v.F))
		case KindText, KindBytes, KindPg:
			num := protowire.Number(fieldValueText)
			if v.Kind == KindBytes {
				num = fieldValueBytes
			} else if v.Kind == KindPg {
				num = fieldValuePg
			}
			dst = protowire.AppendTag(dst, num, protowire.BytesType)
			dst = protowire.AppendBytes(dst, v.B)
		}
	}
	return dst
}

// size is the encoded size of the Value message v.
func (v Value) size() int {
	switch v.Kind {
	case KindNull, KindBool:
		return 2
	case KindInt64, KindTimestamp:
		return 1 + protowire.SizeVarint(uint64(v.Int))
	case KindFloat64:
		return 9
	case KindText, KindBytes, KindPg:
		return 1 + protowire.SizeBytes(len(v.B))
	}
	return 0
}

func valueSize(f []byte) int {
	if f == nil {
		return 2
	}
	return 1 + protowire.SizeBytes(len(f))
}

// IsRowRecord reports whether a Record's encoding is a Row (the common
// case, decoded by DecodeRowRecord without allocating).
func IsRowRecord(rec []byte) bool {
	num, typ, n := consumeTag(rec)
	return n > 0 && num == fieldRecordRow && typ == protowire.BytesType
}

// DecodeRowRecord decodes a Record that IsRowRecord, appending its values
// to vals[:0]. The values point into rec.
func DecodeRowRecord(rec []byte, vals []Value) (tableID uint32, _ []Value, err error) {
	vals = vals[:0]
	var row []byte
	for len(rec) > 0 {
		num, typ, n := consumeTag(rec)
		if n < 0 {
			return 0, vals, ErrRowDecode
		}
		rec = rec[n:]
		if num == fieldRecordRow && typ == protowire.BytesType {
			b, n := protowire.ConsumeBytes(rec)
			if n < 0 {
				return 0, vals, ErrRowDecode
			}
			if row != nil {
				return 0, vals, fmt.Errorf("%w: two rows in one record", ErrRowDecode)
			}
			row, rec = b, rec[n:]
			continue
		}
		// A row record holds nothing else; snapshot writers never add
		// another field to it.
		return 0, vals, fmt.Errorf("%w: field %d in a row record", ErrRowDecode, num)
	}
	for len(row) > 0 {
		num, typ, n := consumeTag(row)
		if n < 0 {
			return 0, vals, ErrRowDecode
		}
		row = row[n:]
		switch {
		case num == fieldRowTableID && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(row)
			if n < 0 {
				return 0, vals, ErrRowDecode
			}
			tableID, row = uint32(v), row[n:]
		case num == fieldRowValues && typ == protowire.BytesType:
			b, n := protowire.ConsumeBytes(row)
			if n < 0 {
				return 0, vals, ErrRowDecode
			}
			row = row[n:]
			if len(vals) >= maxFieldsPerRow {
				return 0, vals, fmt.Errorf("%w: more than %d values", ErrRowDecode, maxFieldsPerRow)
			}
			v, err := decodeValue(b)
			if err != nil {
				return 0, vals, err
			}
			vals = append(vals, v)
		default:
			n := protowire.ConsumeFieldValue(num, typ, row)
			if n < 0 {
				return 0, vals, ErrRowDecode
			}
			row = row[n:]
		}
	}
	return tableID, vals, nil
}

func decodeValue(b []byte) (Value, error) {
	var v Value
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return v, ErrRowDecode
		}
		b = b[n:]
		want := protowire.VarintType
		switch num {
		case fieldValueFloat:
			want = protowire.Fixed64Type
		case fieldValueText, fieldValueBytes, fieldValuePg:
			want = protowire.BytesType
		}
		if num < fieldValueNull || num > fieldValuePg || typ != want {
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return v, ErrRowDecode
			}
			b = b[n:]
			continue
		}
		switch typ {
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return v, ErrRowDecode
			}
			b = b[n:]
			v.Int, v.B = int64(x), nil
			switch num {
			case fieldValueNull:
				v.Kind = KindNull
			case fieldValueInt64:
				v.Kind = KindInt64
			case fieldValueBool:
				v.Kind, v.Int = KindBool, 0
				if x != 0 {
					v.Int = 1
				}
			case fieldValueTime:
				v.Kind = KindTimestamp
			}
		case protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return v, ErrRowDecode
			}
			b = b[n:]
			v.Kind, v.F = KindFloat64, math.Float64frombits(x)
		case protowire.BytesType:
			x, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return v, ErrRowDecode
			}
			b = b[n:]
			if x == nil {
				x = []byte{}
			}
			v.B = x
			switch num {
			case fieldValueText:
				if !utf8.Valid(x) {
					return v, fmt.Errorf("%w: text value is not valid UTF-8", ErrRowDecode)
				}
				v.Kind = KindText
			case fieldValueBytes:
				v.Kind = KindBytes
			case fieldValuePg:
				v.Kind = KindPg
			}
		}
	}
	return v, nil
}

// Digest is an order-independent digest of a multiset of rows: the lane-
// wise sum mod 2^64 of the rows' SHA-256.
type Digest [4]uint64

// AddRow adds the row whose canonical bytes are b.
func (d *Digest) AddRow(b []byte) {
	h := sha256.Sum256(b)
	for i := range d {
		d[i] += binary.BigEndian.Uint64(h[8*i:])
	}
}

// String is the digest in hex.
func (d Digest) String() string {
	var b [32]byte
	for i, x := range d {
		binary.BigEndian.PutUint64(b[8*i:], x)
	}
	return hex.EncodeToString(b[:])
}

// TableCompare is the comparison of one table of a snapshot with a
// database.
type TableCompare struct {
	Name                 string
	SnapRows, DBRows     int64
	SnapDigest, DBDigest Digest
	Problem              string // "" when equal
}

// DumpStats describes a finished dump.
type DumpStats struct {
	Tables  int
	Rows    int64
	Records int64
	Bytes   int64
	// NotCarried lists the objects of the dumped database that the
	// snapshot does not hold (views, functions, triggers, …), one
	// "kind name" each: a restore will not recreate them.
	NotCarried []string
}

// RestoreStats describes a finished restore.
type RestoreStats struct {
	Tables int
	Rows   int64
}

// Comparison is the result of comparing a database with a snapshot.
type Comparison struct {
	Tables []TableCompare
	// FirstDifference describes the first row that differs, in the first
	// table that differs; "" when all tables are equal.
	FirstDifference string
}

// Equal reports whether every table matched.
func (c *Comparison) Equal() bool { return c.FirstDifference == "" }
