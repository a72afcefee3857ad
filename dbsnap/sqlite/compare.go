package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// Compare compares an SQLite database with a snapshot, table by table:
// each snapshot value is converted as Restore converts it, each database
// value read as SQLite stores it, and both sides reduce to a row count
// and an order-independent digest. SQLite's own equality holds: an
// integral real equals the integer.
func Compare(ctx context.Context, f io.ReadSeeker, path string) (*Comparison, error) {
	sr, snap, err := dbsnap.DigestSnapshot(f, func(dst []byte, row *dbsnap.Row) ([]byte, error) {
		return canonRow(dst, row, nil)
	})
	if err != nil {
		return nil, err
	}
	db, err := open(path, true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	defer tx.Rollback()
	res := &Comparison{}
	for _, t := range sr.Tables {
		tc := snap[t.GetId()]
		tc.Name = tableName(t)
		if tc.Problem, err = checkColumns(ctx, tx, t); err != nil {
			return nil, err
		}
		if tc.Problem == "" {
			if _, err := readTable(ctx, tx, t, func(_ []any, canon []byte) {
				tc.DBRows++
				tc.DBDigest.AddRow(canon)
			}); err != nil {
				return nil, err
			}
		}
		var detail func() (string, error)
		if tc.DBRows > 0 && tc.DBRows <= dbsnap.MaxDetailRows {
			detail = func() (string, error) { return firstRowDiff(ctx, tx, f, t, tc.DBRows) }
		}
		if err := res.Add(tc, detail); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// canonRow appends the canonical bytes of a snapshot row, each value
// converted as Restore converts it. When vals is not nil it receives the
// converted values.
func canonRow(dst []byte, row *dbsnap.Row, vals []any) ([]byte, error) {
	for i, v := range row.Values {
		x, bad := toSQLite(row.Table.Columns[i], v)
		if bad != "" {
			return dst, &ValueError{Table: tableName(row.Table), Row: row.N, Column: row.Table.Columns[i].GetName(), Reason: bad}
		}
		if vals != nil {
			vals[i] = x
		}
		dst = canonical(dst, x)
	}
	return dst, nil
}

// firstRowDiff finds the first row of table t in the snapshot that the
// database lacks, else a row of the database that the snapshot lacks.
func firstRowDiff(ctx context.Context, tx *sql.Tx, f io.ReadSeeker, t *pb.Table, dbRows int64) (string, error) {
	snapVals := make([]any, len(t.Columns))
	var dbVals []any // the row readTable is passing on
	return dbsnap.FirstRowDiff(f, t, dbsnap.RowSides{
		Canon: func(dst []byte, row *dbsnap.Row) ([]byte, error) {
			return canonRow(dst, row, snapVals)
		},
		ShowSnap: func([]byte) string { return render(t, snapVals) },
		ScanDB: func(each func([]byte)) error {
			_, err := readTable(ctx, tx, t, func(vals []any, canon []byte) {
				dbVals = vals
				each(canon)
			})
			return err
		},
		ShowDB: func([]byte) string { return render(t, dbVals) },
		DBRows: dbRows,
	})
}

func render(t *pb.Table, vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		s := fmt.Sprintf("%v", v)
		switch x := v.(type) {
		case nil:
			s = "NULL"
		case string:
			s = fmt.Sprintf("%q", x)
		case []byte:
			s = fmt.Sprintf("x'%x'", x)
		}
		if len(s) > 64 {
			s = s[:64] + "…"
		}
		parts[i] = t.Columns[i].GetName() + "=" + s
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// readTable calls fn with every row of t in the database: its values and
// its canonical bytes, both valid during the call.
func readTable(ctx context.Context, tx *sql.Tx, t *pb.Table, fn func(vals []any, canon []byte)) (int64, error) {
	sel := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		sel[i] = "+" + quote(c.GetName())
	}
	rows, err := tx.QueryContext(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), quote(tableName(t))))
	if err != nil {
		return 0, fmt.Errorf("sqlite: read %s: %w", tableName(t), err)
	}
	defer rows.Close()
	vals := make([]any, len(t.Columns))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	var buf []byte
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		buf = buf[:0]
		for _, v := range vals {
			buf = canonical(buf, v)
		}
		n++
		fn(vals, buf)
	}
	return n, rows.Err()
}

// checkColumns says how the database's table differs from the
// snapshot's in shape, or "".
func checkColumns(ctx context.Context, tx *sql.Tx, t *pb.Table) (string, error) {
	name := tableName(t)
	rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, name)
	if err != nil {
		return "", fmt.Errorf("sqlite: %w", err)
	}
	var cols []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		cols = append(cols, n)
	}
	rows.Close()
	if len(cols) == 0 {
		return "the table does not exist in the database", nil
	}
	if len(cols) != len(t.Columns) {
		return fmt.Sprintf("%d columns in the snapshot, %d in the database", len(t.Columns), len(cols)), nil
	}
	for i, c := range t.Columns {
		if cols[i] != c.GetName() {
			return fmt.Sprintf("column %d is %q in the snapshot, %q in the database", i+1, c.GetName(), cols[i]), nil
		}
	}
	return "", nil
}

// canonical appends a typed encoding of an SQLite value.
func canonical(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, 'n')
	case int64:
		dst = append(dst, 'i')
		return binary.BigEndian.AppendUint64(dst, uint64(x))
	case float64:
		if x == math.Trunc(x) && math.Abs(x) <= 1<<53 && !(x == 0 && math.Signbit(x)) {
			return canonical(dst, int64(x))
		}
		dst = append(dst, 'f')
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(x))
	case string:
		dst = append(dst, 's')
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(x)))
		return append(dst, x...)
	case []byte:
		dst = append(dst, 'b')
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(x)))
		return append(dst, x...)
	case bool:
		if x {
			return canonical(dst, int64(1))
		}
		return canonical(dst, int64(0))
	}
	return append(dst, fmt.Sprintf("?%T:%v", v, v)...)
}
