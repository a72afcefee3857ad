package pg

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// A parallel restore cannot be one transaction: PostgreSQL has no
// transaction shared by several connections. It builds everything in
// private staging schemas instead, one per target schema, named
// StagingPrefix + run id + "_" + n, while its coordinating connection
// holds a session advisory lock on the run id:
//
//  1. check the target (existing tables and types, without --clean, are
//     an error before anything is created);
//  2. create the staging schemas, the enum types and the tables in them;
//  3. K connections load the rows with binary COPY, batch by batch, any
//     connection any table;
//  4. the same K connections build the keys, indexes and checks, table by
//     table (cast text-form columns first);
//  5. one short transaction drops the old objects (--clean), moves the
//     types and tables into their schemas (ALTER … SET SCHEMA carries
//     indexes, constraints and owned sequences), adds the foreign keys,
//     sets the sequences and drops the empty staging schemas.
//
// The target is unchanged until that last commit. A failure drops the
// staging schemas. A restore killed with SIGKILL leaves them behind; the
// next restore into the same database finds schemas whose run holds no
// advisory lock any more and drops them (RemoveStaging does it alone).

// StagingPrefix starts the name of every staging schema.
const StagingPrefix = "segmq_restore_"

// batchBytes is the size at which the reader hands a COPY batch to a
// connection: large enough that a COPY statement's overhead vanishes,
// small enough that K+2 of them stay a few tens of MiB.
const batchBytes = 4 << 20

type copyBatch struct {
	t     *pb.Table
	first uint64 // row number (within its table) of the batch's first row
	rows  int64
	buf   []byte
}

// querier is a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// stagingLockKey is the advisory lock of a run, computed by the server.
const stagingLockKey = "pg_catalog.hashtextextended($1, 0)"

// RemoveStaging drops the staging schemas of restores into url that are
// no longer running (killed, or their connection lost), and returns
// their names. A running restore's schemas are left alone: its
// coordinating connection holds the run's advisory lock.
func RemoveStaging(ctx context.Context, url string) ([]string, error) {
	conn, err := connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return removeStaging(ctx, conn)
}

func removeStaging(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname LIKE $1 ORDER BY 1`,
		strings.ReplaceAll(StagingPrefix, "_", `\_`)+"%")
	if err != nil {
		return nil, pgErr(err)
	}
	byRun := map[string][]string{}
	var runs []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		id, _, ok := strings.Cut(strings.TrimPrefix(n, StagingPrefix), "_")
		if !ok {
			continue
		}
		if byRun[id] == nil {
			runs = append(runs, id)
		}
		byRun[id] = append(byRun[id], n)
	}
	if err := rows.Err(); err != nil {
		return nil, pgErr(err)
	}
	var removed []string
	for _, id := range runs {
		key := StagingPrefix + id
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_try_advisory_lock("+stagingLockKey+")", key).Scan(&got); err != nil {
			return removed, pgErr(err)
		}
		if !got {
			continue // that restore is still running
		}
		q := "DROP SCHEMA IF EXISTS " + identList(byRun[id]) + " CASCADE"
		_, err := conn.Exec(ctx, q)
		conn.Exec(ctx, "SELECT pg_catalog.pg_advisory_unlock("+stagingLockKey+")", key)
		if err != nil {
			return removed, fmt.Errorf("remove staging schemas %s: %w", strings.Join(byRun[id], ", "), pgErr(err))
		}
		removed = append(removed, byRun[id]...)
	}
	return removed, nil
}

// targetPlan is what the final transaction drops and creates.
type targetPlan struct {
	dropTables []string
	dropTypes  []string
	schemas    []string
}

// checkTarget refuses the snapshot's tables and enum types that exist in
// the target (or with clean, plans their drop). It changes nothing.
func checkTarget(ctx context.Context, q querier, sr *dbsnap.Reader, clean bool) (*targetPlan, error) {
	p := &targetPlan{}
	seen := map[string]bool{}
	addSchema := func(s string) {
		if !seen[s] {
			seen[s] = true
			p.schemas = append(p.schemas, s)
		}
	}
	for _, t := range sr.Tables {
		s, rel := tableParts(t)
		addSchema(s)
		for _, c := range t.Columns {
			if sq := c.GetSequence(); sq != nil {
				addSchema(schemaOf(sq.GetSchema()))
			}
		}
		var kind *string
		if err := q.QueryRow(ctx, `SELECT c.relkind::text FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, s, rel).Scan(&kind); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, pgErr(err)
		}
		if kind == nil {
			continue
		}
		if !clean || *kind != "r" {
			return nil, fmt.Errorf("table %s: %w", display(s, rel), ErrExists)
		}
		p.dropTables = append(p.dropTables, ident(s, rel))
	}
	for _, e := range sr.Header.GetEnums() {
		s := schemaOf(e.GetSchema())
		addSchema(s)
		var exists bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_type t
			JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2)`, s, e.GetName()).Scan(&exists); err != nil {
			return nil, pgErr(err)
		}
		if !exists {
			continue
		}
		if !clean {
			return nil, fmt.Errorf("type %s: %w", display(s, e.GetName()), ErrExists)
		}
		p.dropTypes = append(p.dropTypes, ident(s, e.GetName()))
	}
	return p, nil
}

// staging maps target schemas to this run's staging schemas, and
// rewrites the names in definitions taken from the source.
type staging struct {
	run    string
	schema map[string]string // target schema → staging schema
	names  []string
	quoted map[string]string // name → the server's quote_ident(name)
	enums  [][2]string       // server-quoted "schema.name" of each enum: target, staging
}

func (sg *staging) table(t *pb.Table) string {
	s, rel := tableParts(t)
	return ident(sg.schema[s], rel)
}

// typ rewrites a declared type that names one of the snapshot's enum
// types (or an array of one) to the staging copy of that type.
func (sg *staging) typ(declared string) string {
	for _, e := range sg.enums {
		if declared == e[0] || strings.HasPrefix(declared, e[0]+"[") {
			return e[1] + declared[len(e[0]):]
		}
	}
	return declared
}

// expr rewrites casts to the snapshot's enum types in a default.
func (sg *staging) expr(x string) string {
	for _, e := range sg.enums {
		x = strings.ReplaceAll(x, "::"+e[0], "::"+e[1])
	}
	return x
}

var indexDefRE = regexp.MustCompile(`^CREATE (?:UNIQUE )?INDEX (?:[^ "]+|"(?:[^"]|"")+") ON (?:ONLY )?`)

// index rewrites pg_get_indexdef's output to build the index on the
// staging table, or returns "" when the definition is not in the form
// expected (the index is then built after the move).
func (sg *staging) index(t *pb.Table, def string) string {
	s, rel := tableParts(t)
	loc := indexDefRE.FindStringIndex(def)
	if loc == nil {
		return ""
	}
	on := sg.quoted[s] + "." + sg.quoted[rel] + " USING "
	if !strings.HasPrefix(def[loc[1]:], on) {
		return ""
	}
	return def[:loc[1]] + sg.quoted[sg.schema[s]] + "." + def[loc[1]+len(sg.quoted[s])+1:]
}

func newRunID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// restoreParallel is Restore with o.Workers connections; see the comment
// at the top of this file.
func restoreParallel(ctx context.Context, sr *dbsnap.Reader, o RestoreOptions, log *slog.Logger) (RestoreStats, error) {
	var st RestoreStats
	conn, err := connect(ctx, o.URL)
	if err != nil {
		return st, err
	}
	defer func() { conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.set_config('search_path', '', false)"); err != nil {
		return st, pgErr(err)
	}
	removed, err := removeStaging(ctx, conn)
	if err != nil {
		return st, err
	}
	if len(removed) > 0 {
		log.Info("removed the staging schemas of an interrupted restore", "schemas", strings.Join(removed, ", "))
	}
	plan, err := checkTarget(ctx, conn, sr, o.Clean)
	if err != nil {
		return st, err
	}

	sg := &staging{run: newRunID(), schema: map[string]string{}, quoted: map[string]string{}}
	for i, s := range plan.schemas {
		n := fmt.Sprintf("%s%s_%d", StagingPrefix, sg.run, i+1)
		sg.schema[s] = n
		sg.names = append(sg.names, n)
	}
	var toQuote []string
	for s, n := range sg.schema {
		toQuote = append(toQuote, s, n)
	}
	for _, t := range sr.Tables {
		_, rel := tableParts(t)
		toQuote = append(toQuote, rel)
	}
	for _, e := range sr.Header.GetEnums() {
		toQuote = append(toQuote, e.GetName())
	}
	rows, err := conn.Query(ctx, "SELECT x, pg_catalog.quote_ident(x) FROM unnest($1::text[]) x", toQuote)
	if err != nil {
		return st, pgErr(err)
	}
	for rows.Next() {
		var a, b string
		if err := rows.Scan(&a, &b); err != nil {
			return st, err
		}
		sg.quoted[a] = b
	}
	if err := rows.Err(); err != nil {
		return st, pgErr(err)
	}
	for _, e := range sr.Header.GetEnums() {
		s := schemaOf(e.GetSchema())
		sg.enums = append(sg.enums, [2]string{sg.quoted[s] + "." + sg.quoted[e.GetName()], sg.quoted[sg.schema[s]] + "." + sg.quoted[e.GetName()]})
	}

	// From here on the database holds staging schemas: remove them on
	// any failure, on a fresh connection if this one is gone.
	runKey := StagingPrefix + sg.run
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_advisory_lock("+stagingLockKey+")", runKey); err != nil {
		return st, pgErr(err)
	}
	committed := false
	var workers []*pgx.Conn
	defer func() {
		for _, w := range workers {
			w.Close(context.Background())
		}
		if committed || len(sg.names) == 0 {
			conn.Exec(context.Background(), "SELECT pg_catalog.pg_advisory_unlock("+stagingLockKey+")", runKey)
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		q := "DROP SCHEMA IF EXISTS " + identList(sg.names) + " CASCADE"
		if _, err := conn.Exec(cctx, q); err == nil {
			conn.Exec(cctx, "SELECT pg_catalog.pg_advisory_unlock("+stagingLockKey+")", runKey)
			return
		}
		c2, err := connect(cctx, o.URL)
		if err != nil {
			log.Warn("could not remove the staging schemas; the next restore removes them", "schemas", strings.Join(sg.names, ", "), "err", err)
			return
		}
		defer c2.Close(context.Background())
		if _, err := c2.Exec(cctx, q); err != nil {
			log.Warn("could not remove the staging schemas; the next restore removes them", "schemas", strings.Join(sg.names, ", "), "err", pgErr(err))
		}
	}()
	if err := createStaging(ctx, conn, sr, sg); err != nil {
		return st, err
	}
	log.Debug("staging tables created", "tables", len(sr.Tables), "schemas", strings.Join(sg.names, ", "))

	for range o.Workers {
		w, err := connect(ctx, o.URL)
		if err != nil {
			return st, err
		}
		workers = append(workers, w)
		// The final commit flushes the WAL of everything before it, so the
		// workers need not wait for theirs.
		if _, err := w.Exec(ctx, "SELECT pg_catalog.set_config('search_path', '', false), pg_catalog.set_config('synchronous_commit', 'off', false)"); err != nil {
			return st, pgErr(err)
		}
	}
	t0 := time.Now()
	counts, total, err := loadParallel(ctx, sr, sg, workers, o.Progress)
	st.Rows = total
	if err != nil {
		return st, err
	}
	log.Debug("rows loaded", "rows", total, "connections", len(workers), "took", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	b, err := buildParallel(ctx, sr, sg, workers, counts)
	if err != nil {
		return st, err
	}
	log.Debug("keys and indexes built", "took", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	if err := finishParallel(ctx, conn, sr, sg, o.Clean, b); err != nil {
		return st, err
	}
	committed = true
	log.Debug("tables moved into place, foreign keys added", "took", time.Since(t0).Round(time.Millisecond))
	st.Tables = len(sr.Tables)
	return st, nil
}

// createStaging creates the staging schemas, the enum types and the
// tables (no keys, autovacuum off until the move) in one transaction.
func createStaging(ctx context.Context, conn *pgx.Conn, sr *dbsnap.Reader, sg *staging) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return pgErr(err)
	}
	defer tx.Rollback(context.Background())
	exec := func(what, q string) error {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", what, pgErr(err))
		}
		return nil
	}
	for _, n := range sg.names {
		if err := exec("create staging schema "+n, "CREATE SCHEMA "+ident(n)); err != nil {
			return err
		}
	}
	for _, e := range sr.Header.GetEnums() {
		labels := make([]string, len(e.GetLabels()))
		for i, l := range e.GetLabels() {
			labels[i] = literal(l)
		}
		q := fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", ident(sg.schema[schemaOf(e.GetSchema())], e.GetName()), strings.Join(labels, ", "))
		if err := exec("create type "+e.GetName(), q); err != nil {
			return err
		}
	}
	for _, t := range sr.Tables {
		ts, _ := tableParts(t)
		stg := sg.schema[ts]
		var defs []string
		var serials []*pb.Column
		for _, c := range t.Columns {
			var seq string
			if s := c.GetSequence(); s != nil {
				seq = ident(stg, s.GetName())
			}
			d, serial := columnDef(c, sg.typ, sg.expr, seq)
			if serial {
				serials = append(serials, c)
			}
			defs = append(defs, d)
		}
		q := fmt.Sprintf("CREATE TABLE %s (%s) WITH (autovacuum_enabled = false, toast.autovacuum_enabled = false)", sg.table(t), strings.Join(defs, ", "))
		if err := exec("create table "+displayTable(t), q); err != nil {
			return err
		}
		for _, c := range serials {
			s := c.GetSequence()
			seq := ident(stg, s.GetName())
			q := fmt.Sprintf("CREATE SEQUENCE %s AS %s %s OWNED BY %s.%s", seq, s.GetDataType(), seqOptions(s), sg.table(t), ident(c.GetName()))
			if err := exec("create sequence "+display(schemaOf(s.GetSchema()), s.GetName()), q); err != nil {
				return err
			}
			q = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT pg_catalog.nextval(%s::pg_catalog.regclass)", sg.table(t), ident(c.GetName()), literal(seq))
			if err := exec(fmt.Sprintf("default of %s.%s", displayTable(t), ident(c.GetName())), q); err != nil {
				return err
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create staging tables: %w", pgErr(err))
	}
	return nil
}

// loadParallel reads the snapshot on one goroutine, encodes its rows as
// binary COPY batches, and lets the connections load them as they come.
// It returns the rows per table id and in all.
func loadParallel(ctx context.Context, sr *dbsnap.Reader, sg *staging, conns []*pgx.Conn, progress func(int64)) (map[uint32]int64, int64, error) {
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan *copyBatch, len(conns))
	free := make(chan *copyBatch, len(conns)+2)
	for range cap(free) {
		free <- &copyBatch{buf: make([]byte, 0, batchBytes+64<<10)}
	}
	var total atomic.Int64
	var progMu sync.Mutex
	g.Go(func() error {
		defer close(work)
		return readBatches(gctx, sr, work, free)
	})
	for _, c := range conns {
		g.Go(func() error {
			// One transaction per connection: no commit per batch.
			tx, err := c.Begin(gctx)
			if err != nil {
				return pgErr(err)
			}
			defer tx.Rollback(context.Background())
			for b := range work {
				if err := copyBatchTo(gctx, c, sg, b); err != nil {
					return err
				}
				n := total.Add(b.rows)
				free <- b
				if progress != nil {
					progMu.Lock()
					progress(n)
					progMu.Unlock()
				}
			}
			if err := tx.Commit(gctx); err != nil {
				return fmt.Errorf("commit the load: %w", pgErr(err))
			}
			return nil
		})
	}
	err := g.Wait()
	counts := map[uint32]int64{}
	for _, t := range sr.Tables {
		counts[t.GetId()] = int64(sr.Count(t.GetId()))
	}
	return counts, total.Load(), err
}

// readBatches fills batches from the snapshot: each one holds rows of one
// table as a whole binary COPY stream.
func readBatches(ctx context.Context, sr *dbsnap.Reader, work chan<- *copyBatch, free <-chan *copyBatch) error {
	var b *copyBatch
	send := func() error {
		b.buf = appendCopyTrailer(b.buf)
		select {
		case work <- b:
			b = nil
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		row, err := sr.Next()
		if err == io.EOF {
			if b != nil {
				return send()
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("snapshot refused, nothing restored: %w", err)
		}
		t := row.Table
		if b != nil && (b.t != t || len(b.buf) >= batchBytes) {
			if err := send(); err != nil {
				return err
			}
		}
		if b == nil {
			select {
			case b = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			b.t, b.first, b.rows = t, row.N, 0
			b.buf = appendCopyHeader(b.buf[:0])
		}
		b.buf = binary.BigEndian.AppendUint16(b.buf, uint16(len(row.Values)-generated(t)))
		for i, v := range row.Values {
			if t.Columns[i].GetGeneratedExpr() != "" {
				continue
			}
			var bad string
			if b.buf, bad = appendValue(b.buf, t.Columns[i], v); bad != "" {
				return fmt.Errorf("%w: %w", errValue, &ValueError{Table: displayTable(t), Row: row.N, Column: t.Columns[i].GetName(), Reason: bad})
			}
		}
		b.rows++
	}
}

func copyBatchTo(ctx context.Context, c *pgx.Conn, sg *staging, b *copyBatch) error {
	t := b.t
	var cols []string
	for _, c := range t.Columns {
		if c.GetGeneratedExpr() == "" { // the server computes generated columns
			cols = append(cols, ident(c.GetName()))
		}
	}
	q := fmt.Sprintf("COPY %s (%s) FROM STDIN (FORMAT binary)", sg.table(t), strings.Join(cols, ", "))
	if len(cols) == 0 {
		q = fmt.Sprintf("COPY %s FROM STDIN (FORMAT binary)", sg.table(t))
	}
	if _, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(b.buf), q); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		src := copySource{first: b.first}
		return fmt.Errorf("load %s: %s%w", displayTable(t), src.where(err), pgErr(err))
	}
	return nil
}

// laterIndex is an index whose definition could not be pointed at the
// staging table; it is built after the move.
type laterIndex struct {
	t   *pb.Table
	ix  *pb.Index
	def string
}

// attach is a primary key or unique constraint built as a unique index
// on the staging table; the final transaction makes it the constraint
// (ADD CONSTRAINT … USING INDEX, no scan).
type attach struct {
	t    *pb.Table
	name string
	kind string // PRIMARY KEY or UNIQUE
}

// built is what the build phase leaves to the final transaction.
type built struct {
	later  []laterIndex
	attach []attach
}

// plainKeyRE matches a primary key or unique constraint with nothing but
// a column list: those are built as plain unique indexes, in parallel
// even on one table (ADD CONSTRAINT would lock the table exclusively).
var plainKeyRE = regexp.MustCompile(`^(PRIMARY KEY|UNIQUE) (\([^()]*\))$`)

type buildTask struct {
	what, sql string
}

// buildParallel casts text-form columns, then builds the primary keys,
// unique and check constraints and indexes on the staging tables: one
// statement per connection at a time, biggest table first, several
// indexes of one table at once.
func buildParallel(ctx context.Context, sr *dbsnap.Reader, sg *staging, conns []*pgx.Conn, counts map[uint32]int64) (*built, error) {
	tables := append([]*pb.Table(nil), sr.Tables...)
	sort.SliceStable(tables, func(i, j int) bool { return counts[tables[i].GetId()] > counts[tables[j].GetId()] })
	var casts, tasks []buildTask
	b := &built{}
	for _, t := range tables {
		if q := castColumns(t, sg.table(t), sg.typ, sg.expr); q != "" {
			casts = append(casts, buildTask{"cast columns of " + displayTable(t), q})
		}
		for _, con := range t.GetConstraints() {
			if con.GetKind() == pb.ConstraintKind_CONSTRAINT_KIND_FOREIGN_KEY {
				continue
			}
			def, err := constraintDef(t, con)
			if err != nil {
				return nil, err
			}
			what := fmt.Sprintf("constraint %s on %s", con.GetName(), displayTable(t))
			if m := plainKeyRE.FindStringSubmatch(def); m != nil {
				tasks = append(tasks, buildTask{what, fmt.Sprintf("CREATE UNIQUE INDEX %s ON %s %s", ident(con.GetName()), sg.table(t), m[2])})
				b.attach = append(b.attach, attach{t, con.GetName(), m[1]})
				continue
			}
			tasks = append(tasks, buildTask{what, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", sg.table(t), ident(con.GetName()), def)})
		}
		if len(t.GetConstraints()) == 0 && len(t.GetPrimaryKey()) > 0 {
			// Synthetic snapshots carry only the key's columns.
			tasks = append(tasks, buildTask{"primary key of " + displayTable(t), fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (%s)", sg.table(t), identList(t.GetPrimaryKey()))})
		}
		for _, ix := range t.GetIndexes() {
			def, own, err := indexDef(t, ix, sg.table(t))
			if err != nil {
				return nil, err
			}
			if own {
				// PostgreSQL's definition names the final table: moved to
				// the staging one, or built after the move.
				if d := sg.index(t, def); d != "" {
					def = d
				} else {
					b.later = append(b.later, laterIndex{t, ix, def})
					continue
				}
			}
			tasks = append(tasks, buildTask{fmt.Sprintf("index %s on %s", ix.GetName(), displayTable(t)), def})
		}
	}
	// Casts rewrite their tables: all of them before any index.
	for _, phase := range [][]buildTask{casts, tasks} {
		if err := runTasks(ctx, conns, phase); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// runTasks runs the statements on the connections, in order, each one on
// the first connection free.
func runTasks(ctx context.Context, conns []*pgx.Conn, tasks []buildTask) error {
	queue := make(chan buildTask, len(tasks))
	for _, t := range tasks {
		queue <- t
	}
	close(queue)
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range conns {
		g.Go(func() error {
			for t := range queue {
				if _, err := c.Exec(gctx, t.sql); err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					return fmt.Errorf("%s: %w", t.what, pgErr(err))
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// finishParallel is the one transaction that changes the target.
func finishParallel(ctx context.Context, conn *pgx.Conn, sr *dbsnap.Reader, sg *staging, clean bool, b *built) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return pgErr(err)
	}
	defer tx.Rollback(context.Background())
	exec := func(what, q string, args ...any) error {
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: %w", what, pgErr(err))
		}
		return nil
	}
	// Check again, in this transaction: the target may have changed
	// while the rows loaded.
	plan, err := checkTarget(ctx, tx, sr, clean)
	if err != nil {
		return err
	}
	if len(plan.dropTables) > 0 {
		if err := exec("--clean: drop "+strings.Join(plan.dropTables, ", "), "DROP TABLE IF EXISTS "+strings.Join(plan.dropTables, ", ")); err != nil {
			return err
		}
	}
	for _, ty := range plan.dropTypes {
		if err := exec("--clean: drop type "+ty, "DROP TYPE IF EXISTS "+ty); err != nil {
			return err
		}
	}
	for _, s := range plan.schemas {
		if err := exec("create schema "+ident(s), "CREATE SCHEMA IF NOT EXISTS "+ident(s)); err != nil {
			return err
		}
	}
	for _, e := range sr.Header.GetEnums() {
		s := schemaOf(e.GetSchema())
		if err := exec("type "+display(s, e.GetName()), fmt.Sprintf("ALTER TYPE %s SET SCHEMA %s", ident(sg.schema[s], e.GetName()), ident(s))); err != nil {
			return err
		}
	}
	for _, t := range sr.Tables {
		s, rel := tableParts(t)
		if err := exec("move table "+displayTable(t), fmt.Sprintf("ALTER TABLE %s SET SCHEMA %s", sg.table(t), ident(s))); err != nil {
			return err
		}
		if err := exec("table "+displayTable(t), fmt.Sprintf("ALTER TABLE %s RESET (autovacuum_enabled, toast.autovacuum_enabled)", ident(s, rel))); err != nil {
			return err
		}
	}
	for _, a := range b.attach {
		if err := exec(fmt.Sprintf("constraint %s on %s", a.name, displayTable(a.t)),
			fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s USING INDEX %s", qualified(a.t), ident(a.name), a.kind, ident(a.name))); err != nil {
			return err
		}
	}
	for _, l := range b.later {
		if err := exec(fmt.Sprintf("index %s on %s", l.ix.GetName(), displayTable(l.t)), l.def); err != nil {
			return err
		}
	}
	if err := addForeignKeys(sr.Tables, exec); err != nil {
		return err
	}
	if err := setSequences(sr.Tables, exec); err != nil {
		return err
	}
	if len(sg.names) > 0 {
		if err := exec("drop staging schemas", "DROP SCHEMA "+identList(sg.names)); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", pgErr(err))
	}
	return nil
}
