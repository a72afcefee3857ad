package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segmq/segmq/internal/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv("SEGMQ_SNAPSHOT_MAIN") == "1" {
		main() // the test binary as the snapshot command, for TestRestoreKilledProcess
	}
	os.Exit(pgtest.Main(m))
}

// TestRestoreKilledProcess SIGKILLs a restore in the middle of its COPY:
// the target is unchanged, the staging schema left behind is removed by
// the next restore, which succeeds.
func TestRestoreKilledProcess(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	dir := t.TempDir()
	gen := genFile(t, dir, "400000", "2")
	url := pgtest.NewDB(t)
	execSQL(t, url, `CREATE TABLE keep (x int)`, `INSERT INTO keep VALUES (1)`)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	cmd := exec.Command(os.Args[0], "restore", gen, "--db", url)
	cmd.Env = append(os.Environ(), "SEGMQ_SNAPSHOT_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	others := func(pattern string) int {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND pid <> pg_backend_pid() AND query LIKE $1`, pattern).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for others("COPY%") == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the restore never reached its COPY")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("restore process: %v, want killed", err)
	}
	for others("%") > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the killed restore's backend is still there")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var tables string
	if err := conn.QueryRow(ctx, `SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != "keep" {
		t.Fatalf("after a killed restore the target has %s, want only keep", tables)
	}
	staging := func() string {
		var s string
		if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(nspname, ','), '') FROM pg_namespace WHERE nspname LIKE 'segmq\_restore\_%'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if staging() == "" {
		t.Fatal("a restore killed in its COPY left no staging schema: was it the parallel restore?")
	}
	wantRun(t, 0, "restored", "removed the staging schemas of an interrupted restore", "restore", gen, "--db", url)
	if s := staging(); s != "" {
		t.Fatalf("staging schemas %s left after the next restore", s)
	}
	wantRun(t, 0, "equal", "", "verify", gen, "--db", url)
}

func execSQL(t *testing.T, url string, sql ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func wantRun(t *testing.T, code int, inStdout, inStderr string, args ...string) string {
	t.Helper()
	stdout, stderr, got := runCLI(t, args...)
	if got != code || !strings.Contains(stdout, inStdout) || !strings.Contains(stderr, inStderr) {
		t.Fatalf("snapshot %s: exit %d, want %d with %q on stdout and %q on stderr\nstdout: %s\nstderr: %s",
			strings.Join(args, " "), got, code, inStdout, inStderr, stdout, stderr)
	}
	return stdout
}

// TestDatabaseCommands runs the database story through the CLI: a
// synthetic snapshot into PostgreSQL, a dump of that, a restore of the
// dump elsewhere, and verify --db at each step.
func TestDatabaseCommands(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	dir := t.TempDir()
	gen := genFile(t, dir, "3000", "2")
	a, b := pgtest.NewDB(t), pgtest.NewDB(t)

	wantRun(t, 0, "restored", "", "restore", gen, "--db", a)
	wantRun(t, 0, "equal: the database holds exactly the 3 tables, 3000 rows", "", "verify", gen, "--db", a)
	dumped := filepath.Join(dir, "a.bin")
	wantRun(t, 0, "dumped 3 tables, 3000 rows", "", "dump", "--db", a, "--out", dumped, "--workers", "3")
	wantRun(t, 0, "ok "+dumped, "", "verify", dumped)
	wantRun(t, 0, "equal", "", "verify", dumped, "--db", a)
	wantRun(t, 0, "restored", "", "restore", "--db", b, dumped, "--workers", "2")
	wantRun(t, 0, "equal", "", "verify", "--db", b, dumped)
	wantRun(t, 0, `"table":`, "", "cat", dumped)

	// Restoring again: the tables exist.
	wantRun(t, 1, "", "table public.customers: pg: already exists in the target (use --clean to replace it); the target is unchanged", "restore", dumped, "--db", b)
	wantRun(t, 0, "restored", "", "restore", dumped, "--db", b, "--clean")

	// A changed row is found and shown.
	execSQL(t, b, `UPDATE public.orders SET status = 'tampered' WHERE id = (SELECT min(id) FROM public.orders)`)
	out := wantRun(t, 1, "DIFFERENT public.orders: same row count, digests differ", "first difference: table public.orders", "verify", dumped, "--db", b)
	if !strings.Contains(out, "ok public.customers") {
		t.Errorf("verify output lacks the equal tables:\n%s", out)
	}
	_, stderr, _ := runCLI(t, "verify", dumped, "--db", b)
	if !strings.Contains(stderr, "is not in the database: (id=") {
		t.Errorf("verify does not show the differing row: %s", stderr)
	}
	execSQL(t, b, `DELETE FROM public.events WHERE id IN (SELECT id FROM public.events LIMIT 2)`)
	wantRun(t, 1, "", "first difference: table public.events", "verify", dumped, "--db", b)

	execSQL(t, b, `DROP TABLE public.events`)
	wantRun(t, 1, "DIFFERENT public.events: the table does not exist in the database", "first difference: table public.events", "verify", dumped, "--db", b)
	execSQL(t, b, `ALTER TABLE public.orders ADD COLUMN extra int`)
	wantRun(t, 1, "DIFFERENT public.orders: 6 columns in the snapshot, 7 in the database", "", "verify", dumped, "--db", b)

	// --tables and --schema.
	one := filepath.Join(dir, "one.bin")
	wantRun(t, 0, "dumped 2 tables", "", "dump", "--db", a, "--out", one, "--tables", "orders,public.events,public.orders")
	execSQL(t, a, `CREATE SCHEMA "Side"`, `CREATE TABLE "Side"."T 1" (x int)`, `INSERT INTO "Side"."T 1" VALUES (1)`)
	wantRun(t, 0, "dumped 1 tables, 1 rows", "", "dump", "--db", a, "--out", one, "--schema", "Side")
	wantRun(t, 0, "dumped 1 tables, 1 rows", "", "dump", "--db", a, "--out", one, "--tables", `"Side"."T 1"`)
	wantRun(t, 1, "", `table "nope" does not exist`, "dump", "--db", a, "--out", one, "--tables", "nope")

	// What a dump leaves behind, it says.
	execSQL(t, a, `CREATE VIEW public.big_orders AS SELECT * FROM public.orders WHERE id > 10`)
	wantRun(t, 0, "dumped 3 tables", "it does NOT hold these 1 objects of the source, and a restore will not recreate them:\nsnapshot: warning:   view public.big_orders\n",
		"dump", "--db", a, "--out", one, "--schema", "public")
}

// TestCrossEngine: PostgreSQL -> SQLite -> PostgreSQL through the CLI.
func TestCrossEngine(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	dir := t.TempDir()
	gen := genFile(t, dir, "2000", "2")
	a, b := pgtest.NewDB(t), pgtest.NewDB(t)
	lite := "sqlite:" + filepath.Join(dir, "x.db")
	wantRun(t, 0, "restored", "", "restore", gen, "--db", a)
	fromPG := filepath.Join(dir, "pg.bin")
	wantRun(t, 0, "dumped 3 tables, 2000 rows", "", "dump", "--db", a, "--out", fromPG)
	wantRun(t, 0, "restored", "", "restore", fromPG, "--db", lite)
	wantRun(t, 0, "equal: the database holds exactly the 3 tables, 2000 rows", "", "verify", fromPG, "--db", lite)
	fromLite := filepath.Join(dir, "lite.bin")
	wantRun(t, 0, "dumped 3 tables, 2000 rows", "", "dump", "--db", lite, "--out", fromLite)
	wantRun(t, 0, "ok", "", "verify", fromLite)
	wantRun(t, 0, "restored", "", "restore", fromLite, "--db", b)
	wantRun(t, 0, "equal", "", "verify", fromLite, "--db", b)
	wantRun(t, 1, "", "already exists", "restore", fromPG, "--db", lite)
	wantRun(t, 0, "restored", "", "restore", fromPG, "--db", lite, "--clean")
}

func TestDatabaseUsage(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	for _, v := range []string{"PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT"} {
		t.Setenv(v, "")
	}
	dir := t.TempDir()
	gen := genFile(t, dir, "10", "1")
	for _, c := range []struct {
		code int
		err  string
		args []string
	}{
		{2, "--db is required", []string{"restore", gen}},
		{2, "--out is required", []string{"dump", "--db", "postgres://x/y"}},
		{2, "exactly one FILE", []string{"restore", "--db", "postgres://x/y"}},
		{2, "--tables or --schema", []string{"dump", "--db", "postgres://x/y", "--out", "x", "--tables", "a", "--schema", "b"}},
		{2, "needs a file path", []string{"restore", gen, "--db", "sqlite:"}},
		{2, "--workers is for PostgreSQL", []string{"restore", gen, "--db", "sqlite:x.db", "--workers", "2"}},
		{2, "--workers must be >= 0", []string{"restore", gen, "--db", "postgres://x/y", "--workers", "-1"}},
		{1, "no such file", []string{"dump", "--db", "sqlite:" + filepath.Join(dir, "missing.db"), "--out", filepath.Join(dir, "x.bin")}},
		{2, "--schema is for PostgreSQL", []string{"dump", "--db", "sqlite:x.db", "--out", "x", "--schema", "s"}},
		{2, "want postgres://", []string{"restore", gen, "--db", "mysql://x"}},
		{1, "connection refused", []string{"restore", gen, "--db", "postgres://postgres@127.0.0.1:1/x?connect_timeout=5"}},
		{1, "no such file", []string{"restore", filepath.Join(dir, "missing"), "--db", "postgres://x/y"}},
	} {
		wantRun(t, c.code, "", c.err, c.args...)
	}
}
