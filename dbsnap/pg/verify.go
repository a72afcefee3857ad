package pg

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// TableCompare and Comparison are dbsnap's.
type (
	TableCompare = dbsnap.TableCompare
	Comparison   = dbsnap.Comparison
)

// Compare compares a database with a snapshot, table by table: the
// database's rows are read as a restore of the snapshot would have
// written them (same column forms), and both sides are reduced to a row
// count and an order-independent digest. When a table differs, Compare
// reads it again to find the first row of the snapshot that the database
// lacks (or the reverse), which is why it needs to seek back in the file.
func Compare(ctx context.Context, f io.ReadSeeker, url string) (*Comparison, error) {
	sr, snap, err := dbsnap.DigestSnapshot(f, rowBytes)
	if err != nil {
		return nil, err
	}
	conn, err := connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, pgErr(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('search_path', '', true)"); err != nil {
		return nil, pgErr(err)
	}
	res := &Comparison{}
	for _, t := range sr.Tables {
		tc := snap[t.GetId()]
		tc.Name = displayTable(t)
		if tc.Problem, err = checkColumns(ctx, tx, t); err != nil {
			return nil, err
		}
		var detail func() (string, error)
		if tc.Problem == "" {
			if err := copyRows(ctx, conn, t, func(raw []byte) error {
				tc.DBRows++
				tc.DBDigest.AddRow(raw)
				return nil
			}); err != nil {
				return nil, err
			}
			detail = func() (string, error) { return firstRowDiff(ctx, conn, f, t, tc.DBRows) }
		}
		if err := res.Add(tc, detail); err != nil {
			return nil, err
		}
	}
	return res, tx.Commit(ctx)
}

// rowBytes appends a row's fields as binary COPY writes them.
func rowBytes(dst []byte, row *dbsnap.Row) ([]byte, error) {
	for i, v := range row.Values {
		var bad string
		if dst, bad = appendValue(dst, row.Table.Columns[i], v); bad != "" {
			return dst, &ValueError{Table: displayTable(row.Table), Row: row.N, Column: row.Table.Columns[i].GetName(), Reason: bad}
		}
	}
	return dst, nil
}

// checkColumns says how the database's table differs from the
// snapshot's in shape, or "".
func checkColumns(ctx context.Context, tx pgx.Tx, t *pb.Table) (string, error) {
	s, rel := tableParts(t)
	rows, err := tx.Query(ctx, `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
	  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
	  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
	 ORDER BY a.attnum`, s, rel)
	if err != nil {
		return "", pgErr(err)
	}
	var names, types []string
	for rows.Next() {
		var n, ty string
		if err := rows.Scan(&n, &ty); err != nil {
			return "", err
		}
		names, types = append(names, n), append(types, ty)
	}
	if err := rows.Err(); err != nil {
		return "", pgErr(err)
	}
	if names == nil {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r')`, s, rel).Scan(&exists); err != nil {
			return "", pgErr(err)
		}
		if !exists {
			return "the table does not exist in the database", nil
		}
	}
	if len(names) != len(t.Columns) {
		return fmt.Sprintf("%d columns in the snapshot, %d in the database", len(t.Columns), len(names)), nil
	}
	for i, c := range t.Columns {
		if names[i] != c.GetName() {
			return fmt.Sprintf("column %d is %q in the snapshot, %q in the database", i+1, c.GetName(), names[i]), nil
		}
		want, _, _ := targetType(c)
		if c.GetPgEncoding() == pb.PgEncoding_PG_ENCODING_TEXT {
			want = c.GetDeclaredType()
		}
		if want != types[i] {
			return fmt.Sprintf("column %s is %s in the snapshot, %s in the database", c.GetName(), want, types[i]), nil
		}
	}
	return "", nil
}

// copyRows streams a table's rows from the database in the snapshot's
// column forms and calls fn with each row's field bytes.
func copyRows(ctx context.Context, conn *pgx.Conn, t *pb.Table, fn func(raw []byte) error) error {
	sel := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		sel[i] = ident(c.GetName())
		if c.GetPgEncoding() == pb.PgEncoding_PG_ENCODING_TEXT {
			sel[i] += "::text"
		}
	}
	q := fmt.Sprintf("COPY (SELECT %s FROM %s) TO STDOUT (FORMAT binary)", strings.Join(sel, ", "), qualified(t))
	p := &copyParser{maxFields: len(t.Columns), onRow: func(_ [][]byte, raw []byte) error { return fn(raw) }}
	if _, err := conn.PgConn().CopyTo(ctx, p, q); err != nil {
		return fmt.Errorf("read %s: %w", displayTable(t), pgErr(err))
	}
	return p.check()
}

// firstRowDiff finds the first row of table t in the snapshot that the
// database lacks, else a row of the database that the snapshot lacks.
func firstRowDiff(ctx context.Context, conn *pgx.Conn, f io.ReadSeeker, t *pb.Table, dbRows int64) (string, error) {
	if dbRows > dbsnap.MaxDetailRows {
		return "", nil
	}
	show := func(raw []byte) string { return renderRow(t, raw) }
	return dbsnap.FirstRowDiff(f, t, dbsnap.RowSides{
		Canon:    rowBytes,
		ShowSnap: show,
		ScanDB: func(each func([]byte)) error {
			return copyRows(ctx, conn, t, func(raw []byte) error { each(raw); return nil })
		},
		ShowDB: show,
		DBRows: dbRows,
	})
}

// renderRow prints a row's fields (binary COPY form) for a message.
func renderRow(t *pb.Table, raw []byte) string {
	var parts []string
	for _, c := range t.Columns {
		if len(raw) < 4 {
			break
		}
		l := int32(binary.BigEndian.Uint32(raw))
		raw = raw[4:]
		if l < 0 {
			parts = append(parts, c.GetName()+"=NULL")
			continue
		}
		if int(l) > len(raw) {
			break
		}
		parts = append(parts, c.GetName()+"="+renderValue(c, raw[:l]))
		raw = raw[l:]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func renderValue(c *pb.Column, b []byte) string {
	name := c.GetPgTypeName()
	if c.GetPgEncoding() == pb.PgEncoding_PG_ENCODING_NONE {
		name = map[pb.ColumnType]string{pb.ColumnType_COLUMN_TYPE_INT64: "int8", pb.ColumnType_COLUMN_TYPE_FLOAT64: "float8",
			pb.ColumnType_COLUMN_TYPE_TEXT: "text", pb.ColumnType_COLUMN_TYPE_BOOL: "bool"}[c.GetType()]
	}
	switch {
	case name == "int2" && len(b) == 2:
		return strconv.Itoa(int(int16(binary.BigEndian.Uint16(b))))
	case name == "int4" && len(b) == 4:
		return strconv.Itoa(int(int32(binary.BigEndian.Uint32(b))))
	case name == "int8" && len(b) == 8:
		return strconv.FormatInt(int64(binary.BigEndian.Uint64(b)), 10)
	case name == "float8" && len(b) == 8:
		return strconv.FormatFloat(math.Float64frombits(binary.BigEndian.Uint64(b)), 'g', -1, 64)
	case name == "bool" && len(b) == 1:
		return strconv.FormatBool(b[0] != 0)
	case (name == "text" || name == "varchar" || name == "bpchar" || c.GetType() == pb.ColumnType_COLUMN_TYPE_ENUM) && utf8.Valid(b):
		if len(b) > 64 {
			return strconv.Quote(string(b[:64])) + "…"
		}
		return strconv.Quote(string(b))
	}
	if len(b) > 32 {
		return `\x` + hex.EncodeToString(b[:32]) + "…"
	}
	return `\x` + hex.EncodeToString(b)
}
