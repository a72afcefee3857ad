package pg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/segmq/segmq/internal/pgtest"
	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
	"github.com/segmq/segmq/snapfile"
)

// target is a database with something in it that a failed restore must
// leave alone; state() is what "unchanged" compares.
type target struct {
	url  string
	want string
}

func newTarget(t *testing.T) *target {
	t.Helper()
	url := pgtest.NewDB(t)
	mustExec(t, url,
		`CREATE TABLE keep (id serial PRIMARY KEY, v text)`,
		`INSERT INTO keep (v) VALUES ('a'), ('b')`,
	)
	tg := &target{url: url}
	tg.want = tg.state(t)
	return tg
}

func (tg *target) state(t *testing.T) string {
	t.Helper()
	return tableNames(t, tg.url) + "\n" + fingerprint(t, tg.url)
}

func (tg *target) unchanged(t *testing.T) {
	t.Helper()
	if got := tg.state(t); got != tg.want {
		t.Fatalf("target changed by a failed restore (-before +after):\n%s", lineDiff(tg.want, got))
	}
}

// restoreErr restores and wants an error containing every one of want.
func restoreErr(t *testing.T, snap io.Reader, url string, o RestoreOptions, want ...string) error {
	t.Helper()
	o.URL = url
	_, err := Restore(context.Background(), snap, o)
	if err == nil {
		t.Fatalf("restore succeeded, want an error containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("restore error %q does not contain %q", err, w)
		}
	}
	t.Logf("error (as wanted): %v", err)
	return err
}

var (
	sourceOnce sync.Once
	sourceSnap []byte
)

// sourceSnapshot is a dump of schemaSQL plus a 20000-row table.
func sourceSnapshot(t *testing.T) []byte {
	t.Helper()
	sourceOnce.Do(func() {
		src := pgtest.NewDB(t)
		mustExec(t, src, schemaSQL...)
		mustExec(t, src, `CREATE TABLE bulk (id bigint PRIMARY KEY, v text)`,
			`INSERT INTO bulk SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g`)
		sourceSnap = dump(t, src, DumpOptions{})
	})
	if sourceSnap == nil {
		t.Fatal("no source snapshot")
	}
	return sourceSnap
}

// recordOffsets returns the byte offset of every record of snap.
func recordOffsets(t *testing.T, snap []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(snap); {
		offs = append(offs, off)
		off += 4 + int(binary.LittleEndian.Uint32(snap[off:]))
	}
	return offs
}

func TestRestoreRefusesCutSnapshot(t *testing.T) {
	snap := sourceSnapshot(t)
	tg := newTarget(t)
	offs := recordOffsets(t, snap)
	cuts := map[string]int{
		"last byte":            len(snap) - 1,
		"before the trailer":   offs[len(offs)-1],
		"inside a row":         offs[len(offs)/2] + 7,
		"at a row boundary":    offs[len(offs)/2],
		"after the tables":     offs[8],
		"inside the header":    10,
		"empty":                0,
		"inside a length":      offs[len(offs)/3] + 2,
		"first row of a table": offs[7] + 4,
	}
	for name, n := range cuts {
		t.Run(name, func(t *testing.T) {
			err := restoreErr(t, bytes.NewReader(snap[:n]), tg.url, RestoreOptions{})
			var se *snapfile.Error
			if !errors.As(err, &se) {
				t.Errorf("error %v is not a *snapfile.Error", err)
			}
			tg.unchanged(t)
		})
	}
}

func TestRestoreRefusesGarbage(t *testing.T) {
	snap := sourceSnapshot(t)
	tg := newTarget(t)
	offs := recordOffsets(t, snap)
	mid := offs[len(offs)/2]
	t.Run("garbage record", func(t *testing.T) {
		bad := bytes.Clone(snap)
		n := int(binary.LittleEndian.Uint32(bad[mid:]))
		for i := range n {
			bad[mid+4+i] = 0xff
		}
		restoreErr(t, bytes.NewReader(bad), tg.url, RestoreOptions{}, "does not decode", "offset")
		tg.unchanged(t)
	})
	t.Run("huge length", func(t *testing.T) {
		bad := bytes.Clone(snap)
		binary.LittleEndian.PutUint32(bad[mid:], 0xfffffff0)
		restoreErr(t, bytes.NewReader(bad), tg.url, RestoreOptions{}, "larger than the limit")
		tg.unchanged(t)
	})
	t.Run("trailer count", func(t *testing.T) {
		// Drop one row record: the trailer's counts no longer match.
		n := 4 + int(binary.LittleEndian.Uint32(snap[mid:]))
		bad := append(bytes.Clone(snap[:mid]), snap[mid+n:]...)
		restoreErr(t, bytes.NewReader(bad), tg.url, RestoreOptions{}, "trailer")
		tg.unchanged(t)
	})
	t.Run("not a snapshot", func(t *testing.T) {
		restoreErr(t, strings.NewReader("hello, world, this is not a snapshot"), tg.url, RestoreOptions{})
		tg.unchanged(t)
	})
}

func TestRestoreExistingTable(t *testing.T) {
	snap := sourceSnapshot(t)
	url := pgtest.NewDB(t)
	mustExec(t, url, `CREATE TABLE bulk (x int)`, `INSERT INTO bulk VALUES (1)`)
	tg := &target{url: url}
	tg.want = tg.state(t)
	err := restoreErr(t, bytes.NewReader(snap), url, RestoreOptions{}, "public.bulk", "--clean")
	if !errors.Is(err, ErrExists) {
		t.Errorf("error %v is not ErrExists", err)
	}
	tg.unchanged(t)

	restore(t, snap, url, RestoreOptions{Clean: true})
	mustEqual(t, snap, url)
	// --clean twice: everything the snapshot made is replaced again.
	restore(t, snap, url, RestoreOptions{Clean: true})
	mustEqual(t, snap, url)
}

func TestRestoreWrongDB(t *testing.T) {
	snap := sourceSnapshot(t)
	for name, url := range map[string]string{
		"no server":    "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=5",
		"no database":  strings.Replace(pgtest.NewDB(t), "/t_", "/nosuchdb_", 1),
		"not a URL":    "postgres://[::1",
		"unknown user": strings.Replace(pgtest.NewDB(t), "postgres@", "nobody@", 1),
	} {
		t.Run(name, func(t *testing.T) {
			restoreErr(t, bytes.NewReader(snap), url, RestoreOptions{}, "pg:")
		})
	}
}

// portableSnapshot writes a snapshot with portable values, as gen does.
func portableSnapshot(t *testing.T, tables []*pb.Table, rows []*pb.Row) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := recordio.NewWriter(&buf)
	write := func(r *pb.Record) {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	write(&pb.Record{Kind: &pb.Record_Header{Header: &pb.Header{FormatVersion: 1, Database: "test"}}})
	counts := map[uint32]uint64{}
	for _, tb := range tables {
		write(&pb.Record{Kind: &pb.Record_Table{Table: tb}})
	}
	for _, r := range rows {
		write(&pb.Record{Kind: &pb.Record_Row{Row: r}})
		counts[r.TableId]++
	}
	tr := &pb.Trailer{TotalRows: uint64(len(rows))}
	for _, tb := range tables {
		tr.Tables = append(tr.Tables, &pb.TableCount{TableId: tb.Id, Rows: counts[tb.Id]})
	}
	write(&pb.Record{Kind: &pb.Record_Trailer{Trailer: tr}})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func intV(i int64) *pb.Value   { return &pb.Value{Kind: &pb.Value_Int64{Int64: i}} }
func textV(s string) *pb.Value { return &pb.Value{Kind: &pb.Value_Text{Text: s}} }

var kvTable = &pb.Table{Id: 1, Name: "public.kv", PrimaryKey: []string{"k"}, Columns: []*pb.Column{
	{Name: "k", Type: pb.ColumnType_COLUMN_TYPE_INT64},
	{Name: "v", Type: pb.ColumnType_COLUMN_TYPE_TEXT, Nullable: true},
}}

func TestRestoreUnrestorableValue(t *testing.T) {
	tg := newTarget(t)
	snap := portableSnapshot(t, []*pb.Table{kvTable}, []*pb.Row{
		{TableId: 1, Values: []*pb.Value{intV(1), textV("fine")}},
		{TableId: 1, Values: []*pb.Value{intV(2), textV("nul \x00 inside")}},
	})
	err := restoreErr(t, bytes.NewReader(snap), tg.url, RestoreOptions{}, "public.kv", "row 2", "column v", "NUL")
	var ve *ValueError
	if !errors.As(err, &ve) || ve.Row != 2 || ve.Column != "v" {
		t.Errorf("error %v: want a *ValueError for row 2, column v", err)
	}
	tg.unchanged(t)

	// A value of the wrong kind for its column.
	snap = portableSnapshot(t, []*pb.Table{kvTable}, []*pb.Row{
		{TableId: 1, Values: []*pb.Value{textV("one"), textV("x")}},
	})
	restoreErr(t, bytes.NewReader(snap), tg.url, RestoreOptions{}, "public.kv", "row 1", "column k")
	tg.unchanged(t)
}

func TestRestoreConstraintViolation(t *testing.T) {
	tg := newTarget(t)
	snap := portableSnapshot(t, []*pb.Table{kvTable}, []*pb.Row{
		{TableId: 1, Values: []*pb.Value{intV(1), textV("a")}},
		{TableId: 1, Values: []*pb.Value{intV(1), textV("b")}},
	})
	restoreErr(t, bytes.NewReader(snap), tg.url, RestoreOptions{}, "primary key of public.kv", "(k)=(1)")
	tg.unchanged(t)
	// NOT NULL is checked by COPY, with the row.
	notNull := portableSnapshot(t, []*pb.Table{kvTable}, []*pb.Row{
		{TableId: 1, Values: []*pb.Value{intV(1), textV("a")}},
		{TableId: 1, Values: []*pb.Value{intV(2), textV("a")}},
		{TableId: 1, Values: []*pb.Value{{Kind: &pb.Value_Null{}}, textV("b")}},
	})
	restoreErr(t, bytes.NewReader(notNull), tg.url, RestoreOptions{}, "public.kv", "row 3", "not-null", `column "k"`)
	tg.unchanged(t)
}

func TestRestoreUnknownType(t *testing.T) {
	src := pgtest.NewDB(t)
	mustExec(t, src, `CREATE DOMAIN public.posint AS integer CHECK (VALUE > 0)`,
		`CREATE TABLE d (x public.posint)`, `INSERT INTO d VALUES (1), (2)`)
	snap := dump(t, src, DumpOptions{})
	tg := newTarget(t)
	restoreErr(t, bytes.NewReader(snap), tg.url, RestoreOptions{}, "public.d", "public.posint", "does not exist")
	tg.unchanged(t)
	// Where the type exists, the text form is cast back to it.
	mustExec(t, tg.url, `CREATE DOMAIN public.posint AS integer CHECK (VALUE > 0)`)
	restore(t, snap, tg.url, RestoreOptions{})
	mustEqual(t, snap, tg.url)
}

// killAfter is a reader that calls kill once, after n bytes.
type killAfter struct {
	r    io.Reader
	n    int
	kill func()
	once sync.Once
}

func (k *killAfter) Read(p []byte) (int, error) {
	if k.n <= 0 {
		k.once.Do(k.kill)
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	n, err := k.r.Read(p)
	k.n -= n
	return n, err
}

func TestRestoreKilled(t *testing.T) {
	snap := sourceSnapshot(t)
	t.Run("context cancelled", func(t *testing.T) {
		tg := newTarget(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := &killAfter{r: bytes.NewReader(snap), n: len(snap) / 2, kill: cancel}
		_, err := Restore(ctx, r, RestoreOptions{URL: tg.url})
		if err == nil {
			t.Fatal("restore succeeded after its context was cancelled")
		}
		t.Logf("error (as wanted): %v", err)
		tg.unchanged(t)
	})
	t.Run("connection terminated", func(t *testing.T) {
		tg := newTarget(t)
		admin := mustConn(t, tg.url)
		r := &killAfter{r: bytes.NewReader(snap), n: len(snap) / 2, kill: func() {
			if _, err := admin.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
				t.Errorf("terminate: %v", err)
			}
		}}
		restoreErr(t, r, tg.url, RestoreOptions{})
		tg.unchanged(t)
	})
}
