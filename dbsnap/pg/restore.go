package pg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// RestoreOptions configures Restore. Zero values are documented per field.
type RestoreOptions struct {
	// URL is the target database ("" means the PG* environment variables).
	URL string
	// Clean drops the snapshot's tables (and enum types) in the target
	// first; without it, a table that exists is an error that names it.
	Clean bool
	// Workers is the number of connections that load the rows and
	// build the keys and indexes (0 means 2). With more than one, the
	// restore builds in staging schemas and moves the tables into place
	// in one final transaction (see parallel.go); with 1 it is one
	// transaction on one connection, with COPY … FREEZE.
	Workers int
	// Progress, if set, is called with the rows loaded so far.
	Progress func(rows int64)
	// Logger, nil means discard.
	Logger *slog.Logger
}

// RestoreStats is dbsnap's.
type RestoreStats = dbsnap.RestoreStats

// ErrExists is a table or type of the snapshot that exists in the target.
var ErrExists = errors.New("pg: already exists in the target (use --clean to replace it)")

// Restore loads a snapshot into a PostgreSQL database: types and tables
// first, rows with COPY … FROM STDIN (FORMAT binary), then primary keys,
// unique constraints, indexes, checks and foreign keys, then the
// sequences. The target changes in one transaction only: with one worker
// the whole restore is that transaction; with more, the tables are built
// in staging schemas and one last transaction moves them into place. Any
// failure — a cut or corrupt file, a value the target refuses, a
// constraint violation, a lost connection — leaves the target as it was,
// and the error says what and where (table, row, column).
func Restore(ctx context.Context, r io.Reader, o RestoreOptions) (RestoreStats, error) {
	var st RestoreStats
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sr, err := dbsnap.NewReader(r)
	if err != nil {
		return st, fmt.Errorf("snapshot refused: %w", err)
	}
	// Refuse what cannot be created before touching the target.
	for _, t := range sr.Tables {
		for _, c := range t.Columns {
			if _, _, err := targetType(c); err != nil {
				return st, fmt.Errorf("table %s: %w", t.GetName(), err)
			}
			if c.GetPgEncoding() == pb.PgEncoding_PG_ENCODING_BINARY && c.GetDeclaredType() == "" {
				return st, fmt.Errorf("table %s: column %s has PostgreSQL values but no declared type", t.GetName(), c.GetName())
			}
		}
	}
	if o.Workers == 0 {
		o.Workers = 2
	}
	if o.Workers > 1 {
		return restoreParallel(ctx, sr, o, log)
	}
	conn, err := connect(ctx, o.URL)
	if err != nil {
		return st, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return st, pgErr(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('search_path', '', true)"); err != nil {
		return st, pgErr(err)
	}
	if err := prepareTarget(ctx, tx, sr, o.Clean); err != nil {
		return st, err
	}
	if err := createTables(ctx, tx, sr); err != nil {
		return st, err
	}
	log.Debug("tables created", "tables", len(sr.Tables))
	if st.Rows, err = loadRows(ctx, conn, sr, o.Progress); err != nil {
		return st, err
	}
	if err := finishTables(ctx, tx, sr); err != nil {
		return st, err
	}
	if err := tx.Commit(ctx); err != nil {
		return st, fmt.Errorf("commit: %w", pgErr(err))
	}
	st.Tables = len(sr.Tables)
	return st, nil
}

func schemaOf(s string) string {
	if s == "" {
		return "public"
	}
	return s
}

// prepareTarget refuses (or with clean, drops) the snapshot's tables and
// enum types that exist in the target, and creates missing schemas.
func prepareTarget(ctx context.Context, tx pgx.Tx, sr *dbsnap.Reader, clean bool) error {
	schemas := map[string]bool{}
	var drops []string
	for _, t := range sr.Tables {
		s, rel := tableParts(t)
		schemas[s] = true
		var kind *string
		if err := tx.QueryRow(ctx, `SELECT c.relkind::text FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, s, rel).Scan(&kind); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return pgErr(err)
		}
		if kind == nil {
			continue
		}
		if !clean || *kind != "r" {
			return fmt.Errorf("table %s: %w", display(s, rel), ErrExists)
		}
		drops = append(drops, ident(s, rel))
	}
	if len(drops) > 0 {
		if _, err := tx.Exec(ctx, "DROP TABLE "+strings.Join(drops, ", ")); err != nil {
			return fmt.Errorf("--clean: drop %s: %w", strings.Join(drops, ", "), pgErr(err))
		}
	}
	for _, e := range sr.Header.GetEnums() {
		s := schemaOf(e.GetSchema())
		schemas[s] = true
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_type t
			JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2)`, s, e.GetName()).Scan(&exists); err != nil {
			return pgErr(err)
		}
		if !exists {
			continue
		}
		if !clean {
			return fmt.Errorf("type %s: %w", display(s, e.GetName()), ErrExists)
		}
		if _, err := tx.Exec(ctx, "DROP TYPE "+ident(s, e.GetName())); err != nil {
			return fmt.Errorf("--clean: drop type %s: %w", ident(s, e.GetName()), pgErr(err))
		}
	}
	for s := range schemas {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+ident(s)); err != nil {
			return fmt.Errorf("create schema %s: %w", ident(s), pgErr(err))
		}
	}
	return nil
}

// createTables creates the enum types and the tables, with NOT NULL,
// defaults, identity columns and serial sequences, but no keys or indexes.
func createTables(ctx context.Context, tx pgx.Tx, sr *dbsnap.Reader) error {
	for _, e := range sr.Header.GetEnums() {
		labels := make([]string, len(e.GetLabels()))
		for i, l := range e.GetLabels() {
			labels[i] = literal(l)
		}
		q := fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", ident(schemaOf(e.GetSchema()), e.GetName()), strings.Join(labels, ", "))
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create type %s: %w", e.GetName(), pgErr(err))
		}
	}
	for _, t := range sr.Tables {
		var defs []string
		var serials []*pb.Column
		same := func(s string) string { return s }
		for _, c := range t.Columns {
			var seq string
			if s := c.GetSequence(); s != nil {
				seq = ident(schemaOf(s.GetSchema()), s.GetName())
			}
			d, serial := columnDef(c, same, same, seq)
			if serial {
				serials = append(serials, c)
			}
			defs = append(defs, d)
		}
		q := fmt.Sprintf("CREATE TABLE %s (%s)", qualified(t), strings.Join(defs, ", "))
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create table %s: %w", displayTable(t), pgErr(err))
		}
		for _, c := range serials {
			s := c.GetSequence()
			seq := ident(schemaOf(s.GetSchema()), s.GetName())
			q := fmt.Sprintf("CREATE SEQUENCE %s AS %s %s OWNED BY %s.%s", seq, s.GetDataType(), seqOptions(s), qualified(t), ident(c.GetName()))
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("create sequence %s: %w", seq, pgErr(err))
			}
			q = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT pg_catalog.nextval(%s::pg_catalog.regclass)", qualified(t), ident(c.GetName()), literal(seq))
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("default of %s.%s: %w", displayTable(t), ident(c.GetName()), pgErr(err))
			}
		}
	}
	return nil
}

func seqOptions(s *pb.Sequence) string {
	cycle := "NO CYCLE"
	if s.GetCycle() {
		cycle = "CYCLE"
	}
	return fmt.Sprintf("START WITH %d INCREMENT BY %d MINVALUE %d MAXVALUE %d CACHE %d %s",
		s.GetStart(), s.GetIncrement(), s.GetMinValue(), s.GetMaxValue(), max(s.GetCache(), 1), cycle)
}

// loadRows streams the snapshot's rows into the tables, one COPY per run
// of consecutive rows of the same table, and checks the trailer.
func loadRows(ctx context.Context, conn *pgx.Conn, sr *dbsnap.Reader, progress func(int64)) (int64, error) {
	var total int64
	src := &copySource{sr: sr}
	for {
		row, err := sr.Next()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("snapshot refused, nothing restored: %w", err)
		}
		sr.Unread()
		t := row.Table
		src.reset(t, row.N)
		var cols []string
		for _, c := range t.Columns {
			if c.GetGeneratedExpr() == "" { // the server computes generated columns
				cols = append(cols, ident(c.GetName()))
			}
		}
		q := fmt.Sprintf("COPY %s (%s) FROM STDIN (FORMAT binary, FREEZE)", qualified(t), strings.Join(cols, ", "))
		if len(cols) == 0 {
			q = fmt.Sprintf("COPY %s FROM STDIN (FORMAT binary, FREEZE)", qualified(t))
		}
		_, err = conn.PgConn().CopyFrom(ctx, src, q)
		// On some errors pgconn returns before its reading goroutine is
		// done: take the source's state under its lock, and on error
		// touch the reader no more.
		rows, srcErr := src.result()
		total += rows
		if srcErr != nil {
			if errors.Is(srcErr, errValue) {
				return total, srcErr
			}
			return total, fmt.Errorf("snapshot refused, nothing restored: %w", srcErr)
		}
		if err != nil {
			return total, fmt.Errorf("load %s: %s%w", displayTable(t), src.where(err), pgErr(err))
		}
		if progress != nil {
			progress(total)
		}
	}
}

var errValue = errors.New("value cannot be restored")

// copySource is the io.Reader a COPY FROM reads: a binary COPY stream of
// the snapshot's rows of one table, ending at the first row of another
// table or at the trailer.
type copySource struct {
	mu    sync.Mutex
	sr    *dbsnap.Reader
	t     *pb.Table
	first uint64 // row number (within its table) of the first row of this COPY
	rows  int64
	buf   []byte
	pos   int
	end   bool
	err   error
}

func (s *copySource) reset(t *pb.Table, first uint64) {
	s.t, s.first, s.rows = t, first, 0
	s.buf = appendCopyHeader(s.buf[:0])
	s.pos, s.end, s.err = 0, false, nil
}

func (s *copySource) result() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows, s.err
}

func (s *copySource) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if s.pos > 0 {
		// Keep only what is not handed out yet: the buffer stays about
		// one COPY message long, whatever the table's size.
		s.buf, s.pos = s.buf[:copy(s.buf, s.buf[s.pos:])], 0
	}
	for len(s.buf) < len(p) && !s.end {
		row, err := s.sr.Next()
		if err != nil && err != io.EOF {
			s.err = err
			return 0, err
		}
		if err == io.EOF || row.Table != s.t {
			if err == nil {
				s.sr.Unread()
			}
			s.buf = appendCopyTrailer(s.buf)
			s.end = true
			break
		}
		s.buf = binary.BigEndian.AppendUint16(s.buf, uint16(len(row.Values)-generated(s.t)))
		for i, v := range row.Values {
			if s.t.Columns[i].GetGeneratedExpr() != "" {
				continue
			}
			var bad string
			if s.buf, bad = appendValue(s.buf, s.t.Columns[i], v); bad != "" {
				s.err = fmt.Errorf("%w: %w", errValue, &ValueError{Table: displayTable(s.t), Row: row.N, Column: s.t.Columns[i].GetName(), Reason: bad})
				return 0, s.err
			}
		}
		s.rows++
	}
	n := copy(p, s.buf[s.pos:])
	s.pos += n
	if n == 0 && s.end {
		return 0, io.EOF
	}
	return n, nil
}

// generated is the number of generated columns of t.
func generated(t *pb.Table) int {
	n := 0
	for _, c := range t.Columns {
		if c.GetGeneratedExpr() != "" {
			n++
		}
	}
	return n
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// where turns the "COPY t, line N" of a server error into the row's
// number within its table.
func (s *copySource) where(err error) string {
	m := lineRE.FindStringSubmatch(pgWhere(err))
	if m == nil {
		return ""
	}
	line, _ := strconv.ParseUint(m[1], 10, 64)
	return fmt.Sprintf("row %d: ", s.first+line-1)
}

// finishTables casts text-form columns to their types, then builds the
// keys, indexes, checks and foreign keys, and sets the sequences.
func finishTables(ctx context.Context, tx pgx.Tx, sr *dbsnap.Reader) error {
	exec := func(what, q string, args ...any) error {
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: %w", what, pgErr(err))
		}
		return nil
	}
	same := func(s string) string { return s }
	for _, t := range sr.Tables {
		if q := castColumns(t, qualified(t), same, same); q != "" {
			if err := exec("cast columns of "+displayTable(t), q); err != nil {
				return err
			}
		}
	}
	// Keys and indexes first, foreign keys last: they need the
	// referenced keys.
	for _, t := range sr.Tables {
		for _, c := range t.GetConstraints() {
			if c.GetKind() == pb.ConstraintKind_CONSTRAINT_KIND_FOREIGN_KEY {
				continue
			}
			if err := addConstraint(t, c, exec); err != nil {
				return err
			}
		}
		if len(t.GetConstraints()) == 0 && len(t.GetPrimaryKey()) > 0 {
			// Synthetic snapshots carry only the key's columns.
			if err := exec("primary key of "+displayTable(t), fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (%s)", qualified(t), identList(t.GetPrimaryKey()))); err != nil {
				return err
			}
		}
		for _, ix := range t.GetIndexes() {
			def, _, err := indexDef(t, ix, qualified(t))
			if err != nil {
				return err
			}
			if err := exec(fmt.Sprintf("index %s on %s", ix.GetName(), displayTable(t)), def); err != nil {
				return err
			}
		}
	}
	if err := addForeignKeys(sr.Tables, exec); err != nil {
		return err
	}
	return setSequences(sr.Tables, exec)
}

func portableConstraint(c *pb.Constraint) string {
	switch c.GetKind() {
	case pb.ConstraintKind_CONSTRAINT_KIND_PRIMARY_KEY:
		return "PRIMARY KEY (" + identList(c.GetColumns()) + ")"
	case pb.ConstraintKind_CONSTRAINT_KIND_UNIQUE:
		return "UNIQUE (" + identList(c.GetColumns()) + ")"
	case pb.ConstraintKind_CONSTRAINT_KIND_FOREIGN_KEY:
		return fmt.Sprintf("FOREIGN KEY (%s) REFERENCES %s (%s)", identList(c.GetColumns()),
			ident(schemaOf(c.GetRefSchema()), c.GetRefTable()), identList(c.GetRefColumns()))
	}
	return ""
}

func identList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = ident(n)
	}
	return strings.Join(q, ", ")
}
