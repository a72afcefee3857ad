package pg

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/segmq/segmq/internal/pgtest"
	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// stagingSchemas lists the staging schemas in the database at url.
func stagingSchemas(t *testing.T, url string) []string {
	t.Helper()
	rows, err := mustConn(t, url).Query(context.Background(),
		`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'segmq\_restore\_%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestRestoreWorkers restores the all-types database with one connection
// (one transaction) and with three (staging schemas), and each must be
// equal to the source, leave no staging schema, and continue the
// sequences.
func TestRestoreWorkers(t *testing.T) {
	src := pgtest.NewDB(t)
	mustExec(t, src, schemaSQL...)
	snap := dump(t, src, DumpOptions{Workers: 2})
	want := fingerprint(t, src)
	for _, w := range []int{1, 3} {
		dst := pgtest.NewDB(t)
		restore(t, snap, dst, RestoreOptions{Workers: w})
		if got := fingerprint(t, dst); got != want {
			t.Fatalf("--workers %d: restored database differs (-want +got):\n%s", w, lineDiff(want, got))
		}
		mustEqual(t, snap, dst)
		if s := stagingSchemas(t, dst); len(s) > 0 {
			t.Fatalf("--workers %d: staging schemas left after a good restore: %v", w, s)
		}
		var id int64
		if err := mustConn(t, dst).QueryRow(context.Background(), `INSERT INTO users (email) VALUES ('n@x') RETURNING id`).Scan(&id); err != nil || id != 101 {
			t.Fatalf("--workers %d: next users id %d, %v; want 101", w, id, err)
		}
	}
}

// TestRestoreRemovesStaging: a restore drops the staging schemas of a
// restore that is gone (no advisory lock), never those of one that runs;
// a dump never takes staging schemas for tables.
func TestRestoreRemovesStaging(t *testing.T) {
	snap := sourceSnapshot(t)
	url := pgtest.NewDB(t)
	mustExec(t, url,
		`CREATE SCHEMA segmq_restore_dead01_1`, `CREATE TABLE segmq_restore_dead01_1.bulk (id int)`,
		`CREATE SCHEMA segmq_restore_dead01_2`,
		`CREATE SCHEMA segmq_restore_live01_1`, `CREATE TABLE segmq_restore_live01_1.bulk (id int)`)
	live := mustConn(t, url)
	ctx := context.Background()
	if _, err := live.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('segmq_restore_live01', 0))`); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	st, err := Dump(ctx, &buf, DumpOptions{URL: url})
	if err != nil || st.Tables != 0 {
		t.Fatalf("dump of a database holding only staging schemas: %d tables, %v; want 0 tables", st.Tables, err)
	}
	// An empty snapshot restores as nothing, in both paths.
	for _, w := range []int{1, 2} {
		if st, err := Restore(ctx, bytes.NewReader(buf.Bytes()), RestoreOptions{URL: url, Workers: w}); err != nil || st.Tables != 0 {
			t.Fatalf("--workers %d: restore of an empty snapshot: %+v, %v", w, st, err)
		}
	}
	restore(t, snap, url, RestoreOptions{})
	mustEqual(t, snap, url)
	if got := stagingSchemas(t, url); !slices.Equal(got, []string{"segmq_restore_live01_1"}) {
		t.Fatalf("after a restore, staging schemas %v; want only the running one's", got)
	}
	if _, err := live.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveStaging(ctx, url)
	if err != nil || !slices.Equal(removed, []string{"segmq_restore_live01_1"}) {
		t.Fatalf("RemoveStaging: %v, %v; want [segmq_restore_live01_1]", removed, err)
	}
	if got := stagingSchemas(t, url); len(got) > 0 {
		t.Fatalf("staging schemas %v left", got)
	}
}

// TestRestoreTargetChangesDuringLoad: a table of the snapshot created in
// the target while the rows load is found by the final transaction; the
// restore fails, names it, and removes its staging schemas.
func TestRestoreTargetChangesDuringLoad(t *testing.T) {
	snap := sourceSnapshot(t)
	tg := newTarget(t)
	other := mustConn(t, tg.url)
	r := &killAfter{r: bytes.NewReader(snap), n: len(snap) / 2, kill: func() {
		if _, err := other.Exec(context.Background(), `CREATE TABLE public.bulk (x int)`); err != nil {
			t.Errorf("create: %v", err)
		}
	}}
	restoreErr(t, r, tg.url, RestoreOptions{}, "public.bulk", "already exists")
	if _, err := other.Exec(context.Background(), `DROP TABLE public.bulk`); err != nil {
		t.Fatal(err)
	}
	tg.unchanged(t)
	if s := stagingSchemas(t, tg.url); len(s) > 0 {
		t.Fatalf("staging schemas left after a failed restore: %v", s)
	}
}

func TestStagingIndexDef(t *testing.T) {
	sg := &staging{schema: map[string]string{"public": "segmq_restore_x_1", "My S": "segmq_restore_x_2"},
		quoted: map[string]string{"public": "public", "orders": "orders", "My S": `"My S"`, "My T": `"My T"`,
			"segmq_restore_x_1": "segmq_restore_x_1", "segmq_restore_x_2": "segmq_restore_x_2"}}
	orders := &pb.Table{Schema: "public", Relname: "orders"}
	myT := &pb.Table{Schema: "My S", Relname: "My T"}
	for _, c := range []struct {
		t        *pb.Table
		def, out string
	}{
		{orders, "CREATE INDEX orders_user_id_idx ON public.orders USING btree (user_id)",
			"CREATE INDEX orders_user_id_idx ON segmq_restore_x_1.orders USING btree (user_id)"},
		{orders, `CREATE UNIQUE INDEX "Odd ""ix"" ON public.orders USING" ON public.orders USING btree (lower(note)) WHERE (note IS NOT NULL)`,
			`CREATE UNIQUE INDEX "Odd ""ix"" ON public.orders USING" ON segmq_restore_x_1.orders USING btree (lower(note)) WHERE (note IS NOT NULL)`},
		{myT, `CREATE INDEX ix ON "My S"."My T" USING gin (doc)`, `CREATE INDEX ix ON segmq_restore_x_2."My T" USING gin (doc)`},
		{orders, "CREATE INDEX ix ON other.orders USING btree (id)", ""}, // not the table's: built after the move
		{orders, "something else", ""},
	} {
		if got := sg.index(c.t, c.def); got != c.out {
			t.Errorf("index(%q) = %q, want %q", c.def, got, c.out)
		}
	}
}

// TestDumpSaysWhatItLeavesBehind: a dump lists every view, function,
// trigger, … of the dumped schemas that the snapshot does not hold.
func TestDumpSaysWhatItLeavesBehind(t *testing.T) {
	url := pgtest.NewDB(t)
	mustExec(t, url,
		`CREATE TYPE mood AS ENUM ('sad', 'ok')`, `CREATE TYPE unused AS ENUM ('x')`,
		`CREATE DOMAIN posint AS integer CHECK (VALUE > 0)`,
		`CREATE TABLE t (id serial PRIMARY KEY, m mood, v text)`,
		`CREATE VIEW v AS SELECT id FROM t`,
		`CREATE MATERIALIZED VIEW mv AS SELECT id FROM t`,
		`CREATE SEQUENCE loose`,
		`CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a'`,
		`CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'`,
		`CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION trg()`,
		`CREATE RULE r AS ON DELETE TO t DO INSTEAD NOTHING`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
		`CREATE POLICY p ON t USING (id > 0)`,
		`CREATE SCHEMA elsewhere`, `CREATE VIEW elsewhere.ignored AS SELECT 1`,
	)
	var buf bytes.Buffer
	st, err := Dump(context.Background(), &buf, DumpOptions{URL: url, Schema: "public"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"domain public.posint",
		"enum type public.unused",
		"function public.f(a integer)",
		"function public.trg()",
		"materialized view public.mv",
		"policy p on public.t",
		"row level security on public.t",
		"rule r on public.t",
		"sequence public.loose",
		"trigger tr on public.t",
		"view public.v",
	}
	if !slices.Equal(st.NotCarried, want) {
		t.Fatalf("NotCarried:\n%s\nwant:\n%s", strings.Join(st.NotCarried, "\n"), strings.Join(want, "\n"))
	}
}
