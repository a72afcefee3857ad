package pg

import (
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// firstNormalOID is PostgreSQL's FirstNormalObjectId: types below it are
// built in and have the same OID in every cluster.
const firstNormalOID = 16384

// portableKinds maps a built-in type name to its portable kind.
var portableKinds = map[string]pb.ColumnType{
	"int2": pb.ColumnType_COLUMN_TYPE_INT64, "int4": pb.ColumnType_COLUMN_TYPE_INT64, "int8": pb.ColumnType_COLUMN_TYPE_INT64,
	"float4": pb.ColumnType_COLUMN_TYPE_FLOAT64, "float8": pb.ColumnType_COLUMN_TYPE_FLOAT64,
	"text": pb.ColumnType_COLUMN_TYPE_TEXT, "varchar": pb.ColumnType_COLUMN_TYPE_TEXT, "bpchar": pb.ColumnType_COLUMN_TYPE_TEXT, "name": pb.ColumnType_COLUMN_TYPE_TEXT,
	"bytea":       pb.ColumnType_COLUMN_TYPE_BYTES,
	"bool":        pb.ColumnType_COLUMN_TYPE_BOOL,
	"timestamptz": pb.ColumnType_COLUMN_TYPE_TIMESTAMP,
	"timestamp":   pb.ColumnType_COLUMN_TYPE_LOCAL_TIMESTAMP,
	"numeric":     pb.ColumnType_COLUMN_TYPE_DECIMAL,
	"date":        pb.ColumnType_COLUMN_TYPE_DATE,
	"time":        pb.ColumnType_COLUMN_TYPE_TIME,
	"interval":    pb.ColumnType_COLUMN_TYPE_INTERVAL,
	"uuid":        pb.ColumnType_COLUMN_TYPE_UUID,
	"json":        pb.ColumnType_COLUMN_TYPE_JSON, "jsonb": pb.ColumnType_COLUMN_TYPE_JSON,
}

// typeInfo is what the catalog says about a column's type.
type typeInfo struct {
	oid      uint32
	name     string // pg_type.typname
	typtype  string // b base, e enum, d domain, c composite, r range, m multirange, p pseudo
	elemOID  uint32 // element type of an array, else 0
	elemType string // typtype of the element
}

// classify decides how a column travels: BINARY for built-in types and
// built-in arrays (OID-independent binary forms) and enums (binary form is
// the label); TEXT, restored by a cast, for everything else.
func classify(t typeInfo) (pb.ColumnType, pb.PgEncoding) {
	switch {
	case t.typtype == "e":
		return pb.ColumnType_COLUMN_TYPE_ENUM, pb.PgEncoding_PG_ENCODING_BINARY
	case t.elemOID != 0:
		if t.oid < firstNormalOID && t.elemOID < firstNormalOID {
			return pb.ColumnType_COLUMN_TYPE_ARRAY, pb.PgEncoding_PG_ENCODING_BINARY
		}
		return pb.ColumnType_COLUMN_TYPE_ARRAY, pb.PgEncoding_PG_ENCODING_TEXT
	case t.oid < firstNormalOID && t.typtype != "p":
		if k, ok := portableKinds[t.name]; ok {
			return k, pb.PgEncoding_PG_ENCODING_BINARY
		}
		return pb.ColumnType_COLUMN_TYPE_OTHER, pb.PgEncoding_PG_ENCODING_BINARY
	}
	return pb.ColumnType_COLUMN_TYPE_OTHER, pb.PgEncoding_PG_ENCODING_TEXT
}

// ident quotes a possibly qualified name.
func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

// literal quotes a string as an SQL literal.
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// tableParts returns a table's schema and unqualified name. Synthetic
// snapshots have only Name ("public.orders"), split at the first dot.
func tableParts(t *pb.Table) (schema, rel string) {
	if t.GetRelname() != "" {
		s := t.GetSchema()
		if s == "" {
			s = "public"
		}
		return s, t.GetRelname()
	}
	if s, r, ok := strings.Cut(t.GetName(), "."); ok {
		return s, r
	}
	return "public", t.GetName()
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_$]*$`)

// display is a name for messages: like SQL, but quoted only where needed.
func display(parts ...string) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		if plainIdent.MatchString(p) {
			out[i] = p
		} else {
			out[i] = ident(p)
		}
	}
	return strings.Join(out, ".")
}

// displayTable is display of t's schema and name.
func displayTable(t *pb.Table) string { return display(tableParts(t)) }

// qualified is the quoted schema.table of t.
func qualified(t *pb.Table) string { return ident(tableParts(t)) }

// targetType is the SQL type a restore creates for column c, and whether
// it is created as text first and cast after the load.
func targetType(c *pb.Column) (sqlType string, castAfter bool, err error) {
	switch c.GetPgEncoding() {
	case pb.PgEncoding_PG_ENCODING_BINARY:
		return c.GetDeclaredType(), false, nil
	case pb.PgEncoding_PG_ENCODING_TEXT:
		return "text", true, nil
	}
	switch c.GetType() {
	case pb.ColumnType_COLUMN_TYPE_INT64:
		return "bigint", false, nil
	case pb.ColumnType_COLUMN_TYPE_FLOAT64:
		return "double precision", false, nil
	case pb.ColumnType_COLUMN_TYPE_TEXT:
		return "text", false, nil
	case pb.ColumnType_COLUMN_TYPE_BYTES:
		return "bytea", false, nil
	case pb.ColumnType_COLUMN_TYPE_BOOL:
		return "boolean", false, nil
	case pb.ColumnType_COLUMN_TYPE_TIMESTAMP:
		return "timestamp with time zone", false, nil
	}
	return "", false, fmt.Errorf("column %s: type %v has no PostgreSQL mapping", c.GetName(), c.GetType())
}

// pgEpochMicros is 2000-01-01 UTC in micros since the Unix epoch.
const pgEpochMicros = 946684800000000

// ValueError is a value a PostgreSQL target cannot hold.
type ValueError struct {
	Table  string
	Row    uint64 // 1-based, within the table
	Column string
	Reason string
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("table %s, row %d, column %s: %s", e.Table, e.Row, e.Column, e.Reason)
}

// portableValueKind is the Value kind each portable column type holds.
var portableValueKind = [...]dbsnap.Kind{
	pb.ColumnType_COLUMN_TYPE_INT64: dbsnap.KindInt64, pb.ColumnType_COLUMN_TYPE_FLOAT64: dbsnap.KindFloat64,
	pb.ColumnType_COLUMN_TYPE_TEXT: dbsnap.KindText, pb.ColumnType_COLUMN_TYPE_BYTES: dbsnap.KindBytes,
	pb.ColumnType_COLUMN_TYPE_BOOL: dbsnap.KindBool, pb.ColumnType_COLUMN_TYPE_TIMESTAMP: dbsnap.KindTimestamp,
}

// appendValue appends v as one binary COPY field for column c.
func appendValue(dst []byte, c *pb.Column, v dbsnap.Value) ([]byte, string) {
	if v.Kind == dbsnap.KindNull {
		return appendField(dst, nil), ""
	}
	if c.GetPgEncoding() != pb.PgEncoding_PG_ENCODING_NONE {
		if v.Kind != dbsnap.KindPg {
			return dst, fmt.Sprintf("%v value in a column of PostgreSQL values", v.Kind)
		}
		if c.GetPgEncoding() == pb.PgEncoding_PG_ENCODING_TEXT {
			if bad := badText(v.B); bad != "" {
				return dst, bad
			}
		}
		return appendField(dst, v.B), ""
	}
	if t := c.GetType(); t < 0 || int(t) >= len(portableValueKind) || v.Kind != portableValueKind[t] {
		return dst, fmt.Sprintf("%v value in a %s column", v.Kind, strings.ToLower(strings.TrimPrefix(c.GetType().String(), "COLUMN_TYPE_")))
	}
	switch v.Kind {
	case dbsnap.KindInt64:
		dst = binary.BigEndian.AppendUint32(dst, 8)
		return binary.BigEndian.AppendUint64(dst, uint64(v.Int)), ""
	case dbsnap.KindFloat64:
		dst = binary.BigEndian.AppendUint32(dst, 8)
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(v.F)), ""
	case dbsnap.KindText:
		if bad := badText(v.B); bad != "" {
			return dst, bad
		}
		return appendField(dst, v.B), ""
	case dbsnap.KindBytes:
		return appendField(dst, v.B), ""
	case dbsnap.KindBool:
		dst = binary.BigEndian.AppendUint32(dst, 1)
		return append(dst, byte(v.Int)), ""
	case dbsnap.KindTimestamp:
		dst = binary.BigEndian.AppendUint32(dst, 8)
		return binary.BigEndian.AppendUint64(dst, uint64(v.Int-pgEpochMicros)), ""
	}
	return dst, "unknown value kind"
}

// badText says why PostgreSQL text cannot hold b, or "".
func badText(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return fmt.Sprintf("text holds a NUL byte at offset %d, which PostgreSQL text cannot store", i)
		}
	}
	if !utf8.Valid(b) {
		return "text is not valid UTF-8"
	}
	return ""
}
