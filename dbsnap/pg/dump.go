package pg

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/segmq/segmq/dbsnap"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// DumpOptions configures Dump. Zero values are documented per field.
type DumpOptions struct {
	// URL is the database, postgres://… ("" means the PG* environment
	// variables, as libpq reads them).
	URL string
	// Tables to dump, as SQL names resolved on the search_path (orders,
	// public.orders, "My Table"). Empty means every ordinary table outside
	// the system schemas, or those of Schema.
	Tables []string
	Schema string
	// Workers is the number of connections that COPY in parallel, all in
	// the same snapshot; 0 means 1.
	Workers int
	// ChunkPages splits a table larger than this many 8 KiB pages into
	// ctid ranges of this size, so that one big table is read by all
	// workers; 0 means 16384 (128 MiB).
	ChunkPages int64
	// Generator goes into the Header; "" means "segmq snapshot dump".
	Generator string
	// Progress, if set, is called with the rows written so far.
	Progress func(rows int64)
	// Logger, nil means discard.
	Logger *slog.Logger
}

// Validate says what is wrong with o.
func (o DumpOptions) Validate() error {
	switch {
	case o.Workers < 0:
		return fmt.Errorf("pg: workers must be >= 0, got %d", o.Workers)
	case o.ChunkPages < 0:
		return fmt.Errorf("pg: chunk pages must be >= 0, got %d", o.ChunkPages)
	case len(o.Tables) > 0 && o.Schema != "":
		return fmt.Errorf("pg: give tables or a schema, not both")
	}
	return nil
}

// DumpStats is dbsnap's.
type DumpStats = dbsnap.DumpStats

// chunk is one unit of work: a table, or a ctid block range of one.
type chunk struct {
	ti       *tableInfo
	idx      int   // table index
	from, to int64 // block range [from, to); to < 0: to the end
}

const batchSize = 256 << 10

// Dump writes a snapshot of the database to w: one consistent snapshot
// for all tables and workers (REPEATABLE READ, READ ONLY, exported with
// pg_export_snapshot and adopted by each worker with SET TRANSACTION
// SNAPSHOT, as pg_dump -j does). Rows stream through COPY … TO STDOUT
// (FORMAT binary); memory does not grow with the tables.
func Dump(ctx context.Context, w io.Writer, o DumpOptions) (DumpStats, error) {
	var st DumpStats
	if err := o.Validate(); err != nil {
		return st, err
	}
	if o.Workers == 0 {
		o.Workers = 1
	}
	if o.ChunkPages == 0 {
		o.ChunkPages = 16384
	}
	if o.Generator == "" {
		o.Generator = "segmq snapshot dump"
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := connect(ctx, o.URL)
	if err != nil {
		return st, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return st, pgErr(err)
	}
	defer tx.Rollback(context.Background())
	var oids []uint32
	if len(o.Tables) > 0 {
		if oids, err = resolveTables(ctx, tx, o.Tables); err != nil {
			return st, err
		}
	}
	var snapID, dbName, version string
	// Empty search_path: every name the catalog functions print
	// (format_type, pg_get_indexdef, …) comes out schema-qualified.
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.pg_export_snapshot(), pg_catalog.current_database(),
		pg_catalog.current_setting('server_version'), pg_catalog.set_config('search_path', '', true)`).
		Scan(&snapID, &dbName, &version, new(string)); err != nil {
		return st, pgErr(err)
	}
	tables, err := listTables(ctx, tx, oids, o.Schema)
	if err != nil {
		return st, err
	}
	if len(tables) > 0 {
		// Like pg_dump: no one drops or alters a table while we read it.
		lock := "LOCK TABLE "
		for i, ti := range tables {
			if i > 0 {
				lock += ", "
			}
			lock += ident(ti.t.Schema, ti.t.Relname)
		}
		if _, err := tx.Exec(ctx, lock+" IN ACCESS SHARE MODE"); err != nil {
			return st, fmt.Errorf("pg: lock tables: %w", pgErr(err))
		}
	}
	if st.NotCarried, err = notCarried(ctx, tx, tables); err != nil {
		return st, err
	}
	var enumOIDs []uint32
	for i, ti := range tables {
		ti.t.Id = uint32(i + 1)
		e, err := describe(ctx, tx, ti)
		if err != nil {
			return st, err
		}
		enumOIDs = append(enumOIDs, e...)
	}
	enums, err := describeEnums(ctx, tx, enumOIDs)
	if err != nil {
		return st, err
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	var frame []byte
	writeRec := func(r *pb.Record) error {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return err
		}
		frame = binary.LittleEndian.AppendUint32(frame[:0], uint32(len(b)))
		frame = append(frame, b...)
		st.Records++
		st.Bytes += int64(len(frame))
		_, err = bw.Write(frame)
		return err
	}
	hdr := &pb.Header{FormatVersion: 1, Database: dbName, CreatedUnixMicros: time.Now().UnixMicro(),
		Generator: o.Generator, SourceEngine: "postgres", SourceVersion: version, Enums: enums}
	if err := writeRec(&pb.Record{Kind: &pb.Record_Header{Header: hdr}}); err != nil {
		return st, err
	}
	for _, ti := range tables {
		if err := writeRec(&pb.Record{Kind: &pb.Record_Table{Table: ti.t}}); err != nil {
			return st, err
		}
	}

	counts := make([]atomic.Int64, len(tables))
	rowsDone, recs, bytes, err := dumpRows(ctx, bw, tables, counts, snapID, o, log)
	st.Rows, st.Records, st.Bytes = rowsDone, st.Records+recs, st.Bytes+bytes
	if err != nil {
		return st, err
	}
	tr := &pb.Trailer{TotalRows: uint64(st.Rows)}
	for i, ti := range tables {
		tr.Tables = append(tr.Tables, &pb.TableCount{TableId: ti.t.Id, Rows: uint64(counts[i].Load())})
	}
	if err := writeRec(&pb.Record{Kind: &pb.Record_Trailer{Trailer: tr}}); err != nil {
		return st, err
	}
	if err := bw.Flush(); err != nil {
		return st, err
	}
	if err := tx.Commit(ctx); err != nil {
		return st, pgErr(err)
	}
	st.Tables = len(tables)
	return st, nil
}

// dumpRows runs the workers and writes their batches of framed Row
// records to bw as they come.
func dumpRows(ctx context.Context, bw *bufio.Writer, tables []*tableInfo, counts []atomic.Int64,
	snapID string, o DumpOptions, log *slog.Logger) (rows, records, bytes int64, err error) {
	var chunks []chunk
	for i, ti := range tables {
		if ti.pages <= o.ChunkPages || o.Workers == 1 {
			chunks = append(chunks, chunk{ti: ti, idx: i, from: 0, to: -1})
			continue
		}
		for from := int64(0); from < ti.pages; from += o.ChunkPages {
			to := from + o.ChunkPages
			if to >= ti.pages {
				to = -1 // the last range is open: rows of the snapshot are in blocks that existed then
			}
			chunks = append(chunks, chunk{ti: ti, idx: i, from: from, to: to})
		}
	}
	// Biggest first, so the last chunks to finish are small ones.
	sort.SliceStable(chunks, func(i, j int) bool { return chunks[i].ti.pages > chunks[j].ti.pages })

	g, gctx := errgroup.WithContext(ctx)
	work := make(chan chunk)
	out := make(chan []byte, 2*o.Workers)
	free := make(chan []byte, 4*o.Workers)
	g.Go(func() error {
		defer close(work)
		for _, c := range chunks {
			select {
			case work <- c:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var nrows, nrecs atomic.Int64
	workers := errgroup.Group{}
	for range o.Workers {
		workers.Go(func() error {
			return dumpWorker(gctx, work, out, free, counts, &nrows, &nrecs, snapID, o)
		})
	}
	g.Go(func() error {
		err := workers.Wait()
		close(out)
		return err
	})
	g.Go(func() error {
		for b := range out {
			if _, err := bw.Write(b); err != nil {
				return err // cancels gctx: the workers stop sending
			}
			bytes += int64(len(b))
			select {
			case free <- b[:0]:
			default:
			}
			if o.Progress != nil {
				o.Progress(nrows.Load())
			}
		}
		return nil
	})
	err = g.Wait()
	log.Debug("dump rows done", "rows", nrows.Load(), "chunks", len(chunks))
	return nrows.Load(), nrecs.Load(), bytes, err
}

func dumpWorker(ctx context.Context, work <-chan chunk, out chan<- []byte, free chan []byte,
	counts []atomic.Int64, nrows, nrecs *atomic.Int64, snapID string, o DumpOptions) error {
	conn, err := connect(ctx, o.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return pgErr(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+literal(snapID)); err != nil {
		return fmt.Errorf("pg: adopt the dump's snapshot: %w", pgErr(err))
	}
	var buf []byte
	send := func() error {
		if len(buf) == 0 {
			return nil
		}
		select {
		case out <- buf:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case buf = <-free:
		default:
			buf = make([]byte, 0, batchSize+batchSize/4)
		}
		return nil
	}
	buf = make([]byte, 0, batchSize+batchSize/4)
	for c := range work {
		t := c.ti.t
		where := ""
		if c.from > 0 || c.to >= 0 {
			where = fmt.Sprintf(" WHERE ctid >= '(%d,0)'::pg_catalog.tid", c.from)
			if c.to >= 0 {
				where += fmt.Sprintf(" AND ctid < '(%d,0)'::pg_catalog.tid", c.to)
			}
		}
		q := fmt.Sprintf("COPY (SELECT %s FROM %s%s) TO STDOUT (FORMAT binary)", c.ti.cols, ident(t.Schema, t.Relname), where)
		var n int64
		p := &copyParser{maxFields: len(t.Columns)}
		p.onRow = func(fields [][]byte, _ []byte) error {
			at := len(buf)
			buf = append(buf, 0, 0, 0, 0)
			buf = dbsnap.AppendRowRecord(buf, t.Id, fields)
			binary.LittleEndian.PutUint32(buf[at:], uint32(len(buf)-at-4))
			n++
			if len(buf) >= batchSize {
				counts[c.idx].Add(n)
				nrows.Add(n)
				nrecs.Add(n)
				n = 0
				return send()
			}
			return nil
		}
		if len(t.Columns) == 0 {
			// COPY of a table with no columns has nothing to select.
			q = fmt.Sprintf("COPY (SELECT FROM %s%s) TO STDOUT (FORMAT binary)", ident(t.Schema, t.Relname), where)
		}
		if _, err := conn.PgConn().CopyTo(ctx, p, q); err != nil {
			return fmt.Errorf("pg: dump %s: %w", t.Name, pgErr(err))
		}
		if err := p.check(); err != nil {
			return fmt.Errorf("pg: dump %s: %w", t.Name, err)
		}
		counts[c.idx].Add(n)
		nrows.Add(n)
		nrecs.Add(n)
	}
	if err := send(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
