package sqlite

import (
	"context"
	"crypto/sha256"
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
	sr, err := dbsnap.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	snap := map[uint32]*dbsnap.TableCompare{}
	var buf []byte
	for {
		row, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		buf = buf[:0]
		for i, v := range row.Values {
			x, bad := toSQLite(row.Table.Columns[i], v)
			if bad != "" {
				return nil, &ValueError{Table: tableName(row.Table), Row: row.N, Column: row.Table.Columns[i].GetName(), Reason: bad}
			}
			buf = canonical(buf, x)
		}
		tc := snap[row.Table.GetId()]
		if tc == nil {
			tc = &dbsnap.TableCompare{}
			snap[row.Table.GetId()] = tc
		}
		tc.SnapRows++
		tc.SnapDigest.AddRow(buf)
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
		tc := dbsnap.TableCompare{Name: tableName(t)}
		if s := snap[t.GetId()]; s != nil {
			tc.SnapRows, tc.SnapDigest = s.SnapRows, s.SnapDigest
		}
		tc.Problem, err = compareTable(ctx, tx, t, &tc)
		if err != nil {
			return nil, err
		}
		if tc.Problem == "" {
			switch {
			case tc.DBRows != tc.SnapRows:
				tc.Problem = fmt.Sprintf("%d rows in the snapshot, %d in the database", tc.SnapRows, tc.DBRows)
			case tc.DBDigest != tc.SnapDigest:
				tc.Problem = fmt.Sprintf("same row count, digests differ (snapshot %.16s…, database %.16s…)", tc.SnapDigest, tc.DBDigest)
			}
		}
		if tc.Problem != "" && res.FirstDifference == "" {
			res.FirstDifference = fmt.Sprintf("table %s: %s", tc.Name, tc.Problem)
			if tc.DBRows > 0 && tc.DBRows <= maxDetailRows {
				d, err := firstRowDiff(ctx, tx, f, t)
				if err != nil {
					return nil, err
				}
				if d != "" {
					res.FirstDifference += "; " + d
				}
			}
		}
		res.Tables = append(res.Tables, tc)
	}
	return res, nil
}

// maxDetailRows bounds the row-level search for the first difference,
// which keeps 16 bytes per database row in memory.
const maxDetailRows = 20_000_000

// firstRowDiff finds the first row of table t in the snapshot that the
// database lacks, else a row of the database that the snapshot lacks.
func firstRowDiff(ctx context.Context, tx *sql.Tx, f io.ReadSeeker, t *pb.Table) (string, error) {
	have := map[[16]byte]int32{}
	scan := func(fn func(vals []any, key [16]byte)) error {
		_, err := readTable(ctx, tx, t, fn)
		return err
	}
	if err := scan(func(_ []any, k [16]byte) { have[k]++ }); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	sr, err := dbsnap.NewReader(f)
	if err != nil {
		return "", err
	}
	var buf []byte
	vals := make([]any, len(t.Columns))
	for {
		row, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		if row.Table.GetId() != t.GetId() {
			continue
		}
		buf = buf[:0]
		for i, v := range row.Values {
			vals[i], _ = toSQLite(row.Table.Columns[i], v)
			buf = canonical(buf, vals[i])
		}
		k := rowKey(buf)
		if have[k] == 0 {
			return fmt.Sprintf("row %d of the snapshot is not in the database: %s", row.N, render(t, vals)), nil
		}
		have[k]--
	}
	var found string
	err = scan(func(vals []any, k [16]byte) {
		if have[k] > 0 && found == "" {
			found = "the database has a row the snapshot lacks: " + render(t, vals)
		}
	})
	return found, err
}

func rowKey(b []byte) [16]byte {
	h := sha256.Sum256(b)
	return [16]byte(h[:16])
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

// readTable calls fn with every row of t in the database, its values and
// the key of its canonical encoding.
func readTable(ctx context.Context, tx *sql.Tx, t *pb.Table, fn func(vals []any, key [16]byte)) (int64, error) {
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
		fn(vals, rowKey(buf))
	}
	return n, rows.Err()
}

func compareTable(ctx context.Context, tx *sql.Tx, t *pb.Table, tc *dbsnap.TableCompare) (string, error) {
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
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = "+" + quote(c) // the stored value, whatever the declared type
	}
	q := fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), quote(name))
	rows, err = tx.QueryContext(ctx, q)
	if err != nil {
		return "", fmt.Errorf("sqlite: read %s: %w", name, err)
	}
	defer rows.Close()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var buf []byte
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return "", err
		}
		buf = buf[:0]
		for _, v := range vals {
			buf = canonical(buf, v)
		}
		tc.DBRows++
		tc.DBDigest.AddRow(buf)
	}
	return "", rows.Err()
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
