package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
)

// DumpOptions configures Dump. Zero values are documented per field.
type DumpOptions struct {
	Path string // the database file (required; must exist)
	// Tables to dump by name; empty means every table but sqlite_*.
	Tables []string
	// Generator goes into the Header; "" means "segmq snapshot dump".
	Generator string
	// Progress, if set, is called with the rows written so far.
	Progress func(rows int64)
}

// DumpStats is dbsnap's; NotCarried lists the views and triggers.
type DumpStats = dbsnap.DumpStats

// column is a column to dump and how its values convert.
type column struct {
	c    *pb.Column
	kind pb.ColumnType
}

// kindOf maps a declared type to the portable kind its values travel as.
func kindOf(decl string) pb.ColumnType {
	d := strings.ToUpper(decl)
	switch a := affinity(decl); {
	case strings.Contains(d, "BOOL"):
		return pb.ColumnType_COLUMN_TYPE_BOOL
	case a == "INTEGER":
		return pb.ColumnType_COLUMN_TYPE_INT64
	case a == "TEXT", a == "NUMERIC" && (strings.Contains(d, "DATE") || strings.Contains(d, "TIME")):
		return pb.ColumnType_COLUMN_TYPE_TEXT
	case a == "BLOB":
		return pb.ColumnType_COLUMN_TYPE_BYTES
	}
	return pb.ColumnType_COLUMN_TYPE_FLOAT64 // REAL, and NUMERIC/DECIMAL (SQLite holds them as integer or real)
}

// Dump writes a snapshot of an SQLite database to w, from one read
// transaction (one consistent snapshot of the file).
func Dump(ctx context.Context, w io.Writer, o DumpOptions) (DumpStats, error) {
	var st DumpStats
	if o.Generator == "" {
		o.Generator = "segmq snapshot dump"
	}
	db, err := open(o.Path, true)
	if err != nil {
		return st, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return st, fmt.Errorf("sqlite: %w", err)
	}
	defer tx.Rollback()
	var version string
	if err := tx.QueryRowContext(ctx, "SELECT sqlite_version()").Scan(&version); err != nil {
		return st, fmt.Errorf("sqlite: %w", err)
	}
	names, err := listTables(ctx, tx, o.Tables)
	if err != nil {
		return st, err
	}
	if st.NotCarried, err = notCarried(ctx, tx); err != nil {
		return st, err
	}
	var tables []*pb.Table
	var cols [][]column
	for i, name := range names {
		t, c, err := describe(ctx, tx, name)
		if err != nil {
			return st, err
		}
		t.Id = uint32(i + 1)
		tables = append(tables, t)
		cols = append(cols, c)
	}
	rw := recordio.NewWriter(w)
	write := func(r *pb.Record) error {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return err
		}
		return rw.Write(b)
	}
	db0 := strings.TrimSuffix(o.Path[strings.LastIndex(o.Path, "/")+1:], ".db")
	if err := write(&pb.Record{Kind: &pb.Record_Header{Header: &pb.Header{FormatVersion: 1, Database: db0,
		CreatedUnixMicros: time.Now().UnixMicro(), Generator: o.Generator, SourceEngine: "sqlite", SourceVersion: version}}}); err != nil {
		return st, err
	}
	for _, t := range tables {
		if err := write(&pb.Record{Kind: &pb.Record_Table{Table: t}}); err != nil {
			return st, err
		}
	}
	tr := &pb.Trailer{}
	for i, t := range tables {
		n, err := dumpRows(ctx, tx, t, cols[i], rw, func() {
			st.Rows++
			if o.Progress != nil && st.Rows%65536 == 0 {
				o.Progress(st.Rows)
			}
		})
		if err != nil {
			return st, err
		}
		tr.Tables = append(tr.Tables, &pb.TableCount{TableId: t.Id, Rows: n})
	}
	tr.TotalRows = uint64(st.Rows)
	if err := write(&pb.Record{Kind: &pb.Record_Trailer{Trailer: tr}}); err != nil {
		return st, err
	}
	if err := rw.Close(); err != nil {
		return st, err
	}
	st.Tables, st.Records, st.Bytes = len(tables), rw.Count(), rw.Offset()
	return st, tx.Commit()
}

func listTables(ctx context.Context, tx *sql.Tx, want []string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name, coalesce(sql, '') FROM sqlite_schema
		WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list tables: %w", err)
	}
	defer rows.Close()
	all := map[string]bool{}
	var names []string
	for rows.Next() {
		var n, def string
		if err := rows.Scan(&n, &def); err != nil {
			return nil, err
		}
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(def)), "CREATE VIRTUAL") {
			if len(want) == 0 {
				return nil, fmt.Errorf("sqlite: %s is a virtual table: not supported (use --tables)", n)
			}
			continue
		}
		all[n] = true
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(want) == 0 {
		return names, nil
	}
	for _, n := range want {
		if !all[n] {
			return nil, fmt.Errorf("sqlite: table %q does not exist", n)
		}
	}
	return want, nil
}

func describe(ctx context.Context, tx *sql.Tx, name string) (*pb.Table, []column, error) {
	t := &pb.Table{Name: name, Relname: name}
	rows, err := tx.QueryContext(ctx, `SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid`, name)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlite: columns of %s: %w", name, err)
	}
	var cols []column
	pk := map[int]string{}
	var pkDecl string
	for rows.Next() {
		var cn, decl string
		var notNull bool
		var pkPos int
		if err := rows.Scan(&cn, &decl, &notNull, &pkPos); err != nil {
			rows.Close()
			return nil, nil, err
		}
		c := &pb.Column{Name: cn, DeclaredType: decl, Nullable: !notNull, Type: kindOf(decl)}
		if pkPos > 0 {
			pk[pkPos] = cn
			pkDecl = decl
		}
		t.Columns = append(t.Columns, c)
		cols = append(cols, column{c: c, kind: c.Type})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	for i := 1; i <= len(pk); i++ {
		t.PrimaryKey = append(t.PrimaryKey, pk[i])
	}
	if len(t.PrimaryKey) > 0 {
		t.Constraints = append(t.Constraints, &pb.Constraint{Name: name + "_pkey", Kind: pb.ConstraintKind_CONSTRAINT_KIND_PRIMARY_KEY, Columns: t.PrimaryKey})
	}
	// An INTEGER PRIMARY KEY is the rowid: new rows get the next id. Carry
	// that as an identity column with its sequence state.
	if len(t.PrimaryKey) == 1 && strings.EqualFold(pkDecl, "INTEGER") {
		if err := rowidSequence(ctx, tx, t); err != nil {
			return nil, nil, err
		}
	}
	if err := describeIndexes(ctx, tx, t); err != nil {
		return nil, nil, err
	}
	if err := describeForeignKeys(ctx, tx, t); err != nil {
		return nil, nil, err
	}
	return t, cols, nil
}

func rowidSequence(ctx context.Context, tx *sql.Tx, t *pb.Table) error {
	col := t.PrimaryKey[0]
	var last sql.NullInt64
	if err := tx.QueryRowContext(ctx, fmt.Sprintf("SELECT max(%s) FROM %s", quote(col), quote(t.Name))).Scan(&last); err != nil {
		return fmt.Errorf("sqlite: %s: %w", t.Name, err)
	}
	var hasSeq bool
	tx.QueryRowContext(ctx, `SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'`).Scan(&hasSeq)
	if hasSeq {
		var seq sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = ?`, t.Name).Scan(&seq); err == nil && seq.Int64 > last.Int64 {
			last = seq
		}
	}
	s := &pb.Sequence{Name: t.Name + "_" + col + "_seq", DataType: "bigint", Start: 1, Increment: 1, MinValue: 1,
		MaxValue: math.MaxInt64, Cache: 1, LastValue: last.Int64, IsCalled: last.Int64 > 0}
	if s.LastValue < 1 {
		s.LastValue = 1
	}
	for _, c := range t.Columns {
		if c.Name == col {
			c.Identity, c.Sequence = "d", s
		}
	}
	return nil
}

func describeIndexes(ctx context.Context, tx *sql.Tx, t *pb.Table) error {
	rows, err := tx.QueryContext(ctx, `SELECT name, "unique", origin, partial FROM pragma_index_list(?) ORDER BY name`, t.Name)
	if err != nil {
		return fmt.Errorf("sqlite: indexes of %s: %w", t.Name, err)
	}
	type ix struct {
		name, origin string
		unique, part bool
	}
	var list []ix
	for rows.Next() {
		var x ix
		if err := rows.Scan(&x.name, &x.unique, &x.origin, &x.part); err != nil {
			rows.Close()
			return err
		}
		list = append(list, x)
	}
	rows.Close()
	for _, x := range list {
		if x.origin == "pk" {
			continue
		}
		r, err := tx.QueryContext(ctx, `SELECT cid, coalesce(name, '') FROM pragma_index_info(?) ORDER BY seqno`, x.name)
		if err != nil {
			return err
		}
		var cols []string
		expr := x.part
		for r.Next() {
			var cid int
			var n string
			if err := r.Scan(&cid, &n); err != nil {
				r.Close()
				return err
			}
			if cid < 0 {
				expr = true
			}
			cols = append(cols, n)
		}
		r.Close()
		if expr {
			return fmt.Errorf("sqlite: index %s on %s has expressions or a WHERE clause: not supported", x.name, t.Name)
		}
		if x.origin == "u" {
			t.Constraints = append(t.Constraints, &pb.Constraint{Name: x.name, Kind: pb.ConstraintKind_CONSTRAINT_KIND_UNIQUE, Columns: cols})
		} else {
			t.Indexes = append(t.Indexes, &pb.Index{Name: x.name, Unique: x.unique, Columns: cols})
		}
	}
	return nil
}

func describeForeignKeys(ctx context.Context, tx *sql.Tx, t *pb.Table) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, "table", "from", coalesce("to", '') FROM pragma_foreign_key_list(?) ORDER BY id, seq`, t.Name)
	if err != nil {
		return fmt.Errorf("sqlite: foreign keys of %s: %w", t.Name, err)
	}
	defer rows.Close()
	byID := map[int]*pb.Constraint{}
	var ids []int
	for rows.Next() {
		var id int
		var ref, from, to string
		if err := rows.Scan(&id, &ref, &from, &to); err != nil {
			return err
		}
		c := byID[id]
		if c == nil {
			c = &pb.Constraint{Name: fmt.Sprintf("%s_fkey%d", t.Name, id), Kind: pb.ConstraintKind_CONSTRAINT_KIND_FOREIGN_KEY, RefTable: ref}
			byID[id] = c
			ids = append(ids, id)
		}
		c.Columns = append(c.Columns, from)
		c.RefColumns = append(c.RefColumns, to)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	sort.Ints(ids)
	for _, id := range ids {
		c := byID[id]
		if c.RefColumns[0] == "" { // REFERENCES parent: the parent's primary key
			r, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk`, c.RefTable)
			if err != nil {
				return err
			}
			c.RefColumns = c.RefColumns[:0]
			for r.Next() {
				var n string
				r.Scan(&n)
				c.RefColumns = append(c.RefColumns, n)
			}
			r.Close()
		}
		t.Constraints = append(t.Constraints, c)
	}
	return nil
}

// dumpRows writes the rows of one table.
func dumpRows(ctx context.Context, tx *sql.Tx, t *pb.Table, cols []column, rw *recordio.Writer, tick func()) (uint64, error) {
	sel := make([]string, len(cols))
	for i, c := range cols {
		// Unary + is a no-op that drops the declared type, so the driver
		// hands over the stored value (not a time.Time for DATETIME).
		sel[i] = "+" + quote(c.c.Name)
	}
	q := fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), quote(t.Name))
	if len(cols) == 0 {
		q = "SELECT 1 FROM " + quote(t.Name)
	}
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return 0, fmt.Errorf("sqlite: read %s: %w", t.Name, err)
	}
	defer rows.Close()
	vals := make([]any, max(len(cols), 1))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	out := make([]dbsnap.Value, len(cols))
	var buf []byte
	var n uint64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, fmt.Errorf("sqlite: read %s: %w", t.Name, err)
		}
		n++
		for i, c := range cols {
			v, bad := portable(vals[i], c.kind)
			if bad != "" {
				return n, fmt.Errorf("sqlite: table %s, row %d, column %s (declared %q): %s", t.Name, n, c.c.Name, c.c.DeclaredType, bad)
			}
			out[i] = v
		}
		buf = dbsnap.AppendRow(buf[:0], t.Id, out)
		if err := rw.Write(buf); err != nil {
			return n, err
		}
		tick()
		if n%4096 == 0 && ctx.Err() != nil {
			return n, ctx.Err()
		}
	}
	return n, rows.Err()
}

// portable converts an SQLite value to a Value of the column's kind.
func portable(v any, kind pb.ColumnType) (dbsnap.Value, string) {
	if v == nil {
		return dbsnap.Value{Kind: dbsnap.KindNull}, ""
	}
	switch kind {
	case pb.ColumnType_COLUMN_TYPE_INT64:
		if x, ok := v.(int64); ok {
			return dbsnap.Value{Kind: dbsnap.KindInt64, Int: x}, ""
		}
	case pb.ColumnType_COLUMN_TYPE_BOOL:
		if x, ok := v.(int64); ok && (x == 0 || x == 1) {
			return dbsnap.Value{Kind: dbsnap.KindBool, Int: x}, ""
		}
	case pb.ColumnType_COLUMN_TYPE_FLOAT64:
		switch x := v.(type) {
		case float64:
			return dbsnap.Value{Kind: dbsnap.KindFloat64, F: x}, ""
		case int64:
			if f := float64(x); int64(f) == x && math.Abs(f) <= 1<<53 {
				return dbsnap.Value{Kind: dbsnap.KindFloat64, F: f}, ""
			}
		}
	case pb.ColumnType_COLUMN_TYPE_TEXT:
		if x, ok := v.(string); ok {
			if !utf8.ValidString(x) {
				return dbsnap.Value{}, "holds text that is not valid UTF-8 (a snapshot's text is UTF-8; declare the column BLOB)"
			}
			return dbsnap.Value{Kind: dbsnap.KindText, B: []byte(x)}, ""
		}
	case pb.ColumnType_COLUMN_TYPE_BYTES:
		if x, ok := v.([]byte); ok {
			return dbsnap.Value{Kind: dbsnap.KindBytes, B: x}, ""
		}
	}
	return dbsnap.Value{}, fmt.Sprintf("holds %s %.40v, which does not fit its %s kind", sqliteClass(v), v,
		strings.ToLower(strings.TrimPrefix(kind.String(), "COLUMN_TYPE_")))
}

func sqliteClass(v any) string {
	switch v.(type) {
	case int64:
		return "integer"
	case float64:
		return "real"
	case string:
		return "text"
	case []byte:
		return "blob"
	}
	return fmt.Sprintf("%T", v)
}

// notCarried lists the views and triggers of the database: a snapshot
// holds tables, their indexes and rows only.
func notCarried(ctx context.Context, tx *sql.Tx) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT type || ' ' || name FROM sqlite_schema WHERE type IN ('view', 'trigger') ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list views and triggers: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
