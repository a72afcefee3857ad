package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// RestoreOptions configures Restore.
type RestoreOptions struct {
	Path  string // the database file; created when missing
	Clean bool   // drop the snapshot's tables first
	// Progress, if set, is called with the rows loaded so far.
	Progress func(rows int64)
	// Warn, if set, is told what a restore into SQLite leaves out
	// (PostgreSQL CHECK constraints and expression indexes).
	Warn func(msg string)
}

// RestoreStats is dbsnap's.
type RestoreStats = dbsnap.RestoreStats

// ValueError is a value SQLite cannot hold.
type ValueError struct {
	Table  string
	Row    uint64
	Column string
	Reason string
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("table %s, row %d, column %s: %s", e.Table, e.Row, e.Column, e.Reason)
}

// tableName is the SQLite name of a snapshot table: its name without a
// "public" (or empty) schema, else "schema.name".
func tableName(t *pb.Table) string {
	if t.GetRelname() != "" {
		if s := t.GetSchema(); s != "" && s != "public" {
			return s + "." + t.GetRelname()
		}
		return t.GetRelname()
	}
	if s, r, ok := strings.Cut(t.GetName(), "."); ok && s == "public" {
		return r
	}
	return t.GetName()
}

func refName(schema, table string) string {
	if schema != "" && schema != "public" {
		return schema + "." + table
	}
	return table
}

// sqliteType is the declared type a restore gives a column.
func sqliteType(src string, c *pb.Column) string {
	if src == "sqlite" {
		return c.GetDeclaredType()
	}
	switch c.GetType() {
	case pb.ColumnType_COLUMN_TYPE_INT64:
		return "INTEGER"
	case pb.ColumnType_COLUMN_TYPE_FLOAT64:
		return "REAL"
	case pb.ColumnType_COLUMN_TYPE_BYTES:
		return "BLOB"
	case pb.ColumnType_COLUMN_TYPE_BOOL:
		return "BOOLEAN"
	}
	return "TEXT"
}

// Restore loads a snapshot into an SQLite database in one transaction
// (batched prepared inserts); any failure rolls it back, and a file the
// restore created is removed.
func Restore(ctx context.Context, r io.Reader, o RestoreOptions) (st RestoreStats, err error) {
	sr, err := dbsnap.NewReader(r)
	if err != nil {
		return st, fmt.Errorf("snapshot refused: %w", err)
	}
	_, statErr := os.Stat(o.Path)
	created := errors.Is(statErr, os.ErrNotExist)
	db, err := open(o.Path, false)
	if err != nil {
		return st, err
	}
	defer func() {
		db.Close()
		if err != nil && created {
			for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
				os.Remove(o.Path + suffix)
			}
		}
	}()
	conn, err := db.Conn(ctx)
	if err != nil {
		return st, fmt.Errorf("sqlite: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return st, fmt.Errorf("sqlite: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	// Foreign keys are checked at commit, so tables load in any order.
	if _, err := conn.ExecContext(ctx, "PRAGMA defer_foreign_keys = ON"); err != nil {
		return st, fmt.Errorf("sqlite: %w", err)
	}
	src := sr.Header.GetSourceEngine()
	if err := createTables(ctx, conn, sr, src, o); err != nil {
		return st, err
	}
	if st.Rows, err = loadRows(ctx, conn, sr, o.Progress); err != nil {
		return st, err
	}
	if err := finish(ctx, conn, sr, o.Warn); err != nil {
		return st, err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return st, fmt.Errorf("sqlite: commit (foreign keys are checked here): %w", err)
	}
	committed = true
	st.Tables = len(sr.Tables)
	return st, nil
}

func createTables(ctx context.Context, conn *sql.Conn, sr *dbsnap.Reader, src string, o RestoreOptions) error {
	for _, t := range sr.Tables {
		name := tableName(t)
		var exists bool
		if err := conn.QueryRowContext(ctx, `SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?`, name).Scan(&exists); err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
		if exists && !o.Clean {
			return fmt.Errorf("table %s: %w", name, ErrExists)
		}
		if exists {
			if _, err := conn.ExecContext(ctx, "DROP TABLE "+quote(name)); err != nil {
				return fmt.Errorf("--clean: drop %s: %w", name, err)
			}
		}
	}
	for _, t := range sr.Tables {
		name := tableName(t)
		if len(t.Columns) == 0 {
			return fmt.Errorf("sqlite: table %s has no columns, which SQLite cannot hold", name)
		}
		var defs []string
		rowid := ""
		if pk := t.GetPrimaryKey(); len(pk) == 1 {
			for _, c := range t.Columns {
				if c.GetName() == pk[0] && c.GetType() == pb.ColumnType_COLUMN_TYPE_INT64 {
					rowid = pk[0]
				}
			}
		}
		for _, c := range t.Columns {
			d := quote(c.GetName()) + " " + sqliteType(src, c)
			if c.GetName() == rowid {
				// The rowid: fast, and new rows get the next id.
				d = quote(c.GetName()) + " INTEGER PRIMARY KEY"
				if c.GetSequence() != nil {
					d += " AUTOINCREMENT"
				}
			}
			if !c.GetNullable() {
				d += " NOT NULL"
			}
			if g := c.GetGeneratedExpr(); g != "" && o.Warn != nil {
				o.Warn(fmt.Sprintf("table %s: column %s is generated in PostgreSQL (%s); restored as a plain column with its values", name, c.GetName(), g))
			}
			defs = append(defs, d)
		}
		for _, k := range t.GetConstraints() {
			switch k.GetKind() {
			case pb.ConstraintKind_CONSTRAINT_KIND_PRIMARY_KEY:
				if rowid == "" {
					defs = append(defs, fmt.Sprintf("CONSTRAINT %s PRIMARY KEY (%s)", quote(k.GetName()), quoteList(k.GetColumns())))
				}
			case pb.ConstraintKind_CONSTRAINT_KIND_UNIQUE:
				defs = append(defs, fmt.Sprintf("CONSTRAINT %s UNIQUE (%s)", quote(k.GetName()), quoteList(k.GetColumns())))
			case pb.ConstraintKind_CONSTRAINT_KIND_FOREIGN_KEY:
				defs = append(defs, fmt.Sprintf("CONSTRAINT %s FOREIGN KEY (%s) REFERENCES %s (%s)", quote(k.GetName()),
					quoteList(k.GetColumns()), quote(refName(k.GetRefSchema(), k.GetRefTable())), quoteList(k.GetRefColumns())))
			default:
				if o.Warn != nil {
					o.Warn(fmt.Sprintf("table %s: constraint %s (%s) is PostgreSQL SQL; not restored into SQLite", name, k.GetName(), k.GetPgDefinition()))
				}
			}
		}
		if len(t.GetConstraints()) == 0 && len(t.GetPrimaryKey()) > 0 && rowid == "" {
			defs = append(defs, fmt.Sprintf("PRIMARY KEY (%s)", quoteList(t.GetPrimaryKey())))
		}
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("CREATE TABLE %s (%s)", quote(name), strings.Join(defs, ", "))); err != nil {
			return fmt.Errorf("sqlite: create table %s: %w", name, err)
		}
	}
	return nil
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = quote(n)
	}
	return strings.Join(q, ", ")
}

// batchRows is the number of rows per multi-row INSERT.
const batchRows = 64

func loadRows(ctx context.Context, conn *sql.Conn, sr *dbsnap.Reader, progress func(int64)) (int64, error) {
	type ins struct {
		one, many *sql.Stmt
		args      []any
		rows      int
		t         *pb.Table
	}
	stmts := map[uint32]*ins{}
	defer func() {
		for _, s := range stmts {
			s.one.Close()
			s.many.Close()
		}
	}()
	flush := func(s *ins) error {
		if s.rows == 0 {
			return nil
		}
		var err error
		if s.rows == batchRows {
			_, err = s.many.ExecContext(ctx, s.args...)
		} else {
			n := len(s.t.Columns)
			for i := 0; i < s.rows && err == nil; i++ {
				_, err = s.one.ExecContext(ctx, s.args[i*n:(i+1)*n]...)
			}
		}
		s.args, s.rows = s.args[:0], 0
		if err != nil {
			return fmt.Errorf("sqlite: insert into %s: %w", tableName(s.t), err)
		}
		return nil
	}
	var total int64
	for {
		row, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, fmt.Errorf("snapshot refused, nothing restored: %w", err)
		}
		s := stmts[row.Table.GetId()]
		if s == nil {
			s = &ins{t: row.Table}
			n := len(row.Table.Columns)
			cols := make([]string, n)
			for i, c := range row.Table.Columns {
				cols[i] = quote(c.GetName())
			}
			tuple := "(" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
			q := fmt.Sprintf("INSERT INTO %s (%s) VALUES ", quote(tableName(row.Table)), strings.Join(cols, ", "))
			if n == 0 {
				q, tuple = fmt.Sprintf("INSERT INTO %s DEFAULT VALUES", quote(tableName(row.Table))), ""
			}
			if s.one, err = conn.PrepareContext(ctx, q+tuple); err != nil {
				return total, fmt.Errorf("sqlite: %w", err)
			}
			many := q + tuple
			if n > 0 {
				many = q + strings.TrimSuffix(strings.Repeat(tuple+", ", batchRows), ", ")
			}
			if s.many, err = conn.PrepareContext(ctx, many); err != nil {
				return total, fmt.Errorf("sqlite: %w", err)
			}
			stmts[row.Table.GetId()] = s
		}
		for i, v := range row.Values {
			x, bad := toSQLite(row.Table.Columns[i], v)
			if bad != "" {
				return total, &ValueError{Table: tableName(row.Table), Row: row.N, Column: row.Table.Columns[i].GetName(), Reason: bad}
			}
			s.args = append(s.args, x)
		}
		s.rows++
		total++
		if s.rows == batchRows || len(row.Table.Columns) == 0 {
			if err := flush(s); err != nil {
				return total, fmt.Errorf("%w (rows %d..%d)", err, row.N-uint64(batchRows)+1, row.N)
			}
		}
		if total%65536 == 0 {
			if progress != nil {
				progress(total)
			}
			if err := ctx.Err(); err != nil {
				return total, err
			}
		}
	}
	for _, s := range stmts {
		if err := flush(s); err != nil {
			return total, err
		}
	}
	return total, nil
}

// toSQLite converts a snapshot value to what SQLite stores for it.
func toSQLite(c *pb.Column, v dbsnap.Value) (any, string) {
	switch v.Kind {
	case dbsnap.KindNull:
		return nil, ""
	case dbsnap.KindInt64:
		return v.Int, ""
	case dbsnap.KindBool:
		return v.Int, ""
	case dbsnap.KindFloat64:
		if math.IsNaN(v.F) {
			return nil, "NaN cannot be stored in SQLite (it would read back as NULL)"
		}
		return v.F, ""
	case dbsnap.KindText:
		return string(v.B), ""
	case dbsnap.KindBytes:
		return append([]byte{}, v.B...), ""
	case dbsnap.KindTimestamp:
		return formatTime(time.UnixMicro(v.Int).UTC(), true), ""
	case dbsnap.KindPg:
		return fromPg(c, v.B)
	}
	return nil, fmt.Sprintf("%v value", v.Kind)
}

// pgEpochMicros is 2000-01-01 UTC in micros since the Unix epoch.
const pgEpochMicros = 946684800000000

// fromPg converts a PostgreSQL value (binary COPY form, or text form) to
// an SQLite value. Only types with an exact conversion are accepted.
func fromPg(c *pb.Column, b []byte) (any, string) {
	if c.GetPgEncoding() == pb.PgEncoding_PG_ENCODING_TEXT || c.GetType() == pb.ColumnType_COLUMN_TYPE_ENUM {
		return string(b), "" // the text form; an enum's binary form is its label
	}
	name := c.GetPgTypeName()
	bad := func(err error) (any, string) {
		return nil, fmt.Sprintf("%s value does not decode: %v", c.GetDeclaredType(), err)
	}
	fixed := func(n int) bool { return len(b) == n }
	switch name {
	case "int2", "int4", "int8":
		switch {
		case fixed(2):
			return int64(int16(binary.BigEndian.Uint16(b))), ""
		case fixed(4):
			return int64(int32(binary.BigEndian.Uint32(b))), ""
		case fixed(8):
			return int64(binary.BigEndian.Uint64(b)), ""
		}
		return bad(fmt.Errorf("%d bytes", len(b)))
	case "float4", "float8":
		var f float64
		switch {
		case fixed(4):
			f = float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
		case fixed(8):
			f = math.Float64frombits(binary.BigEndian.Uint64(b))
		default:
			return bad(fmt.Errorf("%d bytes", len(b)))
		}
		if math.IsNaN(f) {
			return nil, "NaN cannot be stored in SQLite (it would read back as NULL)"
		}
		return f, ""
	case "bool":
		if !fixed(1) {
			return bad(fmt.Errorf("%d bytes", len(b)))
		}
		return int64(b[0] & 1), ""
	case "text", "varchar", "bpchar", "name", "char", "xml":
		return string(b), "" // their binary form is the text
	case "bytea":
		return append([]byte{}, b...), ""
	case "json":
		return string(b), "" // binary json is its text
	case "jsonb":
		if len(b) > 0 && b[0] == 1 {
			return string(b[1:]), "" // version 1: PostgreSQL's text output
		}
		return nil, "jsonb value of an unknown binary version"
	case "numeric":
		s, err := numericText(b)
		if err != nil {
			return bad(err)
		}
		return s, ""
	case "interval":
		s, err := intervalText(b)
		if err != nil {
			return bad(err)
		}
		return s, ""
	case "inet", "cidr":
		s, err := inetText(b)
		if err != nil {
			return bad(err)
		}
		return s, ""
	case "uuid":
		s, _, err := elemText("uuid", b)
		if err != nil {
			return bad(err)
		}
		return s, ""
	case "date":
		if !fixed(4) {
			return bad(fmt.Errorf("%d bytes", len(b)))
		}
		switch d := int32(binary.BigEndian.Uint32(b)); d {
		case math.MaxInt32:
			return "infinity", ""
		case math.MinInt32:
			return "-infinity", ""
		default:
			return time.UnixMicro(pgEpochMicros).UTC().AddDate(0, 0, int(d)).Format("2006-01-02"), ""
		}
	case "time":
		if !fixed(8) {
			return bad(fmt.Errorf("%d bytes", len(b)))
		}
		return formatTimeOfDay(int64(binary.BigEndian.Uint64(b))), ""
	case "timestamp", "timestamptz":
		if !fixed(8) {
			return bad(fmt.Errorf("%d bytes", len(b)))
		}
		switch us := int64(binary.BigEndian.Uint64(b)); us {
		case math.MaxInt64:
			return "infinity", ""
		case math.MinInt64:
			return "-infinity", ""
		default:
			return formatTime(time.UnixMicro(us+pgEpochMicros).UTC(), name == "timestamptz"), ""
		}
	}
	if elem, ok := strings.CutPrefix(name, "_"); ok {
		s, known, err := arrayText(elem, b)
		if err != nil {
			return bad(err)
		}
		if known {
			return s, ""
		}
	}
	return nil, fmt.Sprintf("PostgreSQL type %s has no exact SQLite form here (restore it into PostgreSQL, or leave the table out with --tables)", c.GetDeclaredType())
}

// formatTimeOfDay prints micros since midnight as PostgreSQL does:
// HH:MM:SS, then the fraction without trailing zeros.
func formatTimeOfDay(us int64) string {
	s := fmt.Sprintf("%02d:%02d:%02d", us/3600e6, us/60e6%60, us/1e6%60)
	if f := us % 1e6; f != 0 {
		s += strings.TrimRight(fmt.Sprintf(".%06d", f), "0")
	}
	return s
}

// formatTime is ISO 8601 as SQLite's date functions read it.
func formatTime(t time.Time, zone bool) string {
	if zone {
		return t.Format("2006-01-02 15:04:05.999999-07:00")
	}
	return t.Format("2006-01-02 15:04:05.999999")
}

// finish creates the indexes and sets AUTOINCREMENT counters.
func finish(ctx context.Context, conn *sql.Conn, sr *dbsnap.Reader, warn func(string)) error {
	for _, t := range sr.Tables {
		name := tableName(t)
		for _, ix := range t.GetIndexes() {
			if len(ix.GetColumns()) == 0 {
				if warn != nil {
					warn(fmt.Sprintf("table %s: index %s is on expressions (%s); not restored into SQLite", name, ix.GetName(), ix.GetPgDefinition()))
				}
				continue
			}
			u := ""
			if ix.GetUnique() {
				u = "UNIQUE "
			}
			q := fmt.Sprintf("CREATE %sINDEX %s ON %s (%s)", u, quote(ix.GetName()), quote(name), quoteList(ix.GetColumns()))
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("sqlite: index %s on %s: %w", ix.GetName(), name, err)
			}
		}
		for _, c := range t.Columns {
			s := c.GetSequence()
			if s == nil || len(t.GetPrimaryKey()) != 1 || t.GetPrimaryKey()[0] != c.GetName() {
				continue
			}
			last := s.GetLastValue()
			if !s.GetIsCalled() {
				last--
			}
			// AUTOINCREMENT's counter: the next id is last+1, as the
			// source's sequence would give.
			if _, err := conn.ExecContext(ctx, `DELETE FROM sqlite_sequence WHERE name = ?`, name); err != nil {
				return fmt.Errorf("sqlite: sequence of %s: %w", name, err)
			}
			if _, err := conn.ExecContext(ctx, fmt.Sprintf(`INSERT INTO sqlite_sequence (name, seq) SELECT ?, max(?, coalesce(max(%s), 0)) FROM %s`, quote(c.GetName()), quote(name)), name, last); err != nil {
				return fmt.Errorf("sqlite: sequence of %s: %w", name, err)
			}
		}
	}
	return nil
}
