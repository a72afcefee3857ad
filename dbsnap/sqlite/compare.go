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
		}
		res.Tables = append(res.Tables, tc)
	}
	return res, nil
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
