// Command benchdb measures `snapshot dump` and `snapshot restore` against
// pg_dump and pg_restore on the same PostgreSQL cluster, database and
// disk (`make bench-db`).
//
// It starts a throwaway cluster with the bulk settings of POSTGRES.md
// (fsync, synchronous_commit and full_page_writes on), loads the
// three-table data set of issue 10 (users 20%, orders 50%, events 30% of
// -rows; numeric, text, bytea, timestamptz, a 30% NULL column, an index
// on orders.user_id), then times each tool, -runs times, and reports the
// median seconds, output size and peak RSS as a Markdown table.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/internal/pgtest"
)

func main() { cli.Main("benchdb", run) }

type result struct {
	what    string
	command string
	secs    []float64
	cpu     []float64 // CPU seconds of the tool and of the server backends it used
	bytes   int64
	rssKiB  int64
	load    []float64 // 1-minute load average after each run
}

// postmaster is the server's postmaster pid, or "".
func postmaster(srv *pgtest.Server) string {
	b, err := os.ReadFile(filepath.Join(srv.Dir, "data", "postmaster.pid"))
	if err != nil {
		return ""
	}
	return strings.SplitN(string(b), "\n", 2)[0]
}

// serverCPU is the CPU time, in seconds, of the server's backends that
// have exited: the postmaster's children's user + system time.
func serverCPU(srv *pgtest.Server) float64 {
	b, err := os.ReadFile("/proc/" + postmaster(srv) + "/stat")
	if err != nil {
		return 0
	}
	st := string(b)
	f := strings.Fields(st[strings.LastIndexByte(st, ')')+2:])
	var cu, cs float64
	fmt.Sscan(f[13], &cu) // fields 16 and 17 of stat: cutime, cstime
	fmt.Sscan(f[14], &cs)
	return (cu + cs) / 100 // USER_HZ
}

// serverChildren is the number of the postmaster's child processes.
func serverChildren(srv *pgtest.Server) int {
	pm := postmaster(srv)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	n := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		st := string(b)
		if f := strings.Fields(st[strings.LastIndexByte(st, ')')+2:]); len(f) > 1 && f[1] == pm {
			// Autovacuum workers come and go on their own.
			if cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline")); !strings.Contains(string(cmd), "autovacuum worker") {
				n++
			}
		}
	}
	return n
}

// settle waits (up to 30 s) until the server has no more child
// processes than base: a tool's backends have exited, and their CPU time
// is in serverCPU.
func settle(srv *pgtest.Server, base int) {
	for deadline := time.Now().Add(30 * time.Second); serverChildren(srv) > base && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// loadAvg is the 1-minute load average: the machine may be shared, and
// a figure taken under load says so next to it.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchdb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rows := fs.Int64("rows", 1_000_000, "rows in all (users 20%, orders 50%, events 30%)")
	bin := fs.String("bin", "bin", "directory holding the snapshot binary")
	dir := fs.String("dir", "bench/db", "work directory (cluster, dumps); on the disk to measure")
	runs := fs.Int("runs", 3, "runs of each tool; the median is reported")
	pair := fs.Bool("restore-pair", false, "only the pair the issue compares: pg_dump -Fd and snapshot dump once, then pg_restore -j and snapshot restore alternated -runs times")
	dumpRuns := fs.Int("dump-runs", 0, "runs of each dump (0 = -runs); the restores and verify run -runs times")
	workers := fs.Int("workers", 2, "--workers for snapshot dump, -j for pg_dump -Fd and pg_restore")
	out := fs.String("results", "", "append the Markdown table to this file too")
	var extra multi
	fs.Var(&extra, "set", "extra server setting name=value for the cluster (repeatable), e.g. wal_level=minimal; every tool runs against the same cluster")
	readme := fs.String("readme", "", "also write the table into this file between the bench-db markers")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	snapshot, err := filepath.Abs(filepath.Join(*bin, "snapshot"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(snapshot); err != nil {
		return fmt.Errorf("%s: build it first (make build): %w", snapshot, err)
	}
	// pg_ctl runs as the postgres user in another directory: the
	// cluster's path must be absolute.
	if *dir, err = filepath.Abs(*dir); err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(*dir, "run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	os.Chmod(work, 0o755)
	srv, err := pgtest.StartDir(ctx, filepath.Join(work, "pg"), append([]string{
		"fsync=on", "synchronous_commit=on", "full_page_writes=on",
		"shared_buffers=1GB", "max_wal_size=8GB", "checkpoint_timeout=30min", "maintenance_work_mem=1GB",
	}, extra...))
	if err != nil {
		return err
	}
	defer srv.Stop()
	pgbin := filepath.Dir(mustLook("pg_dump", srv))
	fmt.Fprintf(stderr, "benchdb: cluster on port %d, loading %d rows\n", srv.Port, *rows)
	t0 := time.Now()
	if err := load(ctx, srv.URL("postgres"), *rows); err != nil {
		return err
	}
	var dbBytes int64
	conn, err := pgx.Connect(ctx, srv.URL("src"))
	if err != nil {
		return err
	}
	conn.QueryRow(ctx, "SELECT pg_database_size('src')").Scan(&dbBytes)
	conn.Close(ctx)
	fmt.Fprintf(stderr, "benchdb: loaded in %s, database %d MB\n", time.Since(t0).Round(time.Second), dbBytes/1e6)

	pgArgs := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(srv.Port), "-U", "postgres"}
	url := func(db string) string { return srv.URL(db) }
	j := fmt.Sprint(*workers)
	dumpFc, dumpFd, snapFile := filepath.Join(work, "db.dump"), filepath.Join(work, "db.dir"), filepath.Join(work, "db.bin")
	type step struct {
		what, shown string
		before      func() error
		argv        []string
		size        func() int64
	}
	createDB := func(name string) func() error {
		return func() error {
			return sql(ctx, url("postgres"), "DROP DATABASE IF EXISTS "+name, "CREATE DATABASE "+name, "CHECKPOINT")
		}
	}
	rmAll := func(p string) func() error {
		return func() error { os.RemoveAll(p); return sql(ctx, url("postgres"), "CHECKPOINT") }
	}
	steps := []step{
		{"pg_dump -Fc", "pg_dump -Fc -f db.dump src", rmAll(dumpFc),
			append([]string{filepath.Join(pgbin, "pg_dump"), "-Fc", "-f", dumpFc}, append(pgArgs, "src")...), func() int64 { return size(dumpFc) }},
		{"pg_dump -Fd -j " + j, "pg_dump -Fd -j " + j + " -f db.dir src", rmAll(dumpFd),
			append([]string{filepath.Join(pgbin, "pg_dump"), "-Fd", "-j", j, "-f", dumpFd}, append(pgArgs, "src")...), func() int64 { return size(dumpFd) }},
		{"snapshot dump --workers " + j, "snapshot dump --db postgres://…/src --out db.bin --workers " + j, rmAll(snapFile),
			[]string{snapshot, "dump", "--db", url("src"), "--out", snapFile, "--workers", j}, func() int64 { return size(snapFile) }},
		{"pg_restore (from -Fc)", "pg_restore -d r1 db.dump", createDB("r1"),
			append([]string{filepath.Join(pgbin, "pg_restore"), "-d", "r1"}, append(pgArgs, dumpFc)...), nil},
		{"pg_restore -j " + j + " (from -Fd)", "pg_restore -j " + j + " -d r2 db.dir", createDB("r2"),
			append([]string{filepath.Join(pgbin, "pg_restore"), "-j", j, "-d", "r2"}, append(pgArgs, dumpFd)...), nil},
		{"snapshot restore --workers " + j, "snapshot restore db.bin --db postgres://…/r3 --workers " + j, createDB("r3"),
			[]string{snapshot, "restore", snapFile, "--db", url("r3"), "--workers", j}, nil},
		{"snapshot verify --db (restored)", "snapshot verify db.bin --db postgres://…/r3", nil,
			[]string{snapshot, "verify", snapFile, "--db", url("r3")}, nil},
	}
	// Runs alternate: run 1 of every dump, then run 2 of every dump, …;
	// then the restores the same way, then verify. Noise from other work on
	// the machine then falls on every tool alike.
	time.Sleep(time.Second)
	base := serverChildren(srv) // checkpointer, walwriter, …
	results := make([]*result, len(steps))
	for i, s := range steps {
		results[i] = &result{what: s.what, command: s.shown}
	}
	if *dumpRuns == 0 {
		*dumpRuns = *runs
	}
	for _, phase := range [][3]int{{0, 3, *dumpRuns}, {3, 6, *runs}, {6, 7, *runs}} {
		for i := range phase[2] {
			for k := phase[0]; k < phase[1]; k++ {
				s, r := steps[k], results[k]
				if *pair && k != 1 && k != 2 && k != 4 && k != 5 {
					continue
				}
				if s.before != nil {
					if err := s.before(); err != nil {
						return fmt.Errorf("%s: prepare: %w", s.what, err)
					}
				}
				settle(srv, base)
				cpu0 := serverCPU(srv)
				secs, cpu, rss, err := timeCmd(ctx, s.argv, stderr)
				if err != nil {
					return fmt.Errorf("%s: %w", s.what, err)
				}
				settle(srv, base) // the tool's backends exit
				cpu += serverCPU(srv) - cpu0
				r.load = append(r.load, loadAvg())
				fmt.Fprintf(stderr, "benchdb: %s run %d: %.2f s, CPU %.1f s, peak RSS %d MiB, load average %.1f\n", s.what, i+1, secs, cpu, rss/1024, r.load[len(r.load)-1])
				r.secs = append(r.secs, secs)
				r.cpu = append(r.cpu, cpu)
				r.rssKiB = max(r.rssKiB, rss)
				if s.size != nil {
					r.bytes = s.size()
				}
			}
		}
	}
	if *pair {
		results = []*result{results[1], results[2], results[4], results[5]}
	}
	table := render(results, *rows, dbBytes)
	fmt.Fprint(stdout, table)
	if *readme != "" {
		cmd := fmt.Sprintf("bin/benchdb -rows %d -runs %d -workers %d", *rows, *runs, *workers)
		for _, e := range extra {
			cmd += " -set " + e
		}
		if err := writeReadme(*readme, cmd, table); err != nil {
			return err
		}
	}
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteString(table); err != nil {
			return err
		}
	}
	return nil
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func mustLook(name string, srv *pgtest.Server) string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	sort.Strings(dirs)
	if len(dirs) > 0 {
		return dirs[len(dirs)-1]
	}
	p, _ := exec.LookPath(name)
	return p
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func render(rs []*result, rows, dbBytes int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n#### %d rows (database %d MB), %s\n\n", rows, dbBytes/1e6, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "%d cores; the load column is the 1-minute load average after each run (above the core count, other work shared the machine).\n\n", runtime.NumCPU())
	b.WriteString("| what | median seconds (runs) | CPU s (tool + server) | output | peak RSS | load | command |\n|---|---|---|---|---|---|---|\n")
	get := map[string]float64{}
	for _, r := range rs {
		m := median(r.secs)
		get[r.what] = m
		out := ""
		if r.bytes > 0 {
			out = fmt.Sprintf("%d MB", r.bytes/1e6)
		}
		loads := make([]string, len(r.load))
		for i, l := range r.load {
			loads[i] = fmt.Sprintf("%.1f", l)
		}
		all := make([]string, len(r.secs))
		for i, x := range r.secs {
			all[i] = fmt.Sprintf("%.2f", x)
		}
		fmt.Fprintf(&b, "| %s | %.2f (%s) | %.1f | %s | %d MiB | %s | `%s` |\n", r.what, m, strings.Join(all, ", "), median(r.cpu), out, r.rssKiB/1024, strings.Join(loads, " "), r.command)
	}
	var ours, theirs float64
	for k, v := range get {
		switch {
		case strings.HasPrefix(k, "snapshot dump"), strings.HasPrefix(k, "snapshot restore"):
			ours += v
		case k == "pg_dump -Fc", k == "pg_restore (from -Fc)":
			theirs += v
		}
	}
	if theirs > 0 {
		fmt.Fprintf(&b, "| whole path: snapshot dump + restore | %.2f | | | | | |\n| whole path: pg_dump -Fc + pg_restore | %.2f | | | | | |\n", ours, theirs)
	}
	return b.String()
}

// timeCmd runs argv and returns its wall time, CPU time and peak RSS
// (KiB).
func timeCmd(ctx context.Context, argv []string, stderr io.Writer) (float64, float64, int64, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var errb strings.Builder
	cmd.Stderr = &errb
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, errb.String())
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return secs, cpu, rss, nil
}

func size(p string) int64 {
	var n int64
	filepath.Walk(p, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func sql(ctx context.Context, url string, qs ...string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, q := range qs {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// load creates database src with the data set.
func load(ctx context.Context, url string, rows int64) error {
	nu, no := rows*2/10, rows/2
	ne := rows - nu - no
	if err := sql(ctx, url, "CREATE DATABASE src"); err != nil {
		return err
	}
	src := strings.Replace(url, "/postgres?", "/src?", 1)
	return sql(ctx, src,
		`CREATE TABLE users (id bigint NOT NULL, name text NOT NULL, email text NOT NULL, created timestamptz NOT NULL,
			active boolean NOT NULL, balance numeric(12,2) NOT NULL)`,
		fmt.Sprintf(`INSERT INTO users SELECT g, 'user ' || g, 'user' || g || '@example.com',
			timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second', g %% 3 <> 0, (g %% 1000000) / 100.0
			FROM generate_series(1::bigint, %d) g`, nu),
		`CREATE TABLE orders (id bigint NOT NULL, user_id bigint NOT NULL, amount double precision NOT NULL,
			status text NOT NULL, note text, created timestamptz NOT NULL)`,
		fmt.Sprintf(`INSERT INTO orders SELECT g, 1 + (g * 7919) %% %d, (g %% 100000) / 7.0,
			(ARRAY['new','paid','shipped','done'])[1 + g %% 4],
			CASE WHEN g %% 10 < 3 THEN NULL ELSE 'note for order ' || g END,
			timestamptz '2021-01-01 00:00:00+00' + g * interval '1 second'
			FROM generate_series(1::bigint, %d) g`, max(nu, 1), no),
		`CREATE TABLE events (id bigint NOT NULL, order_id bigint NOT NULL, kind integer NOT NULL, payload bytea NOT NULL,
			at timestamptz NOT NULL)`,
		fmt.Sprintf(`INSERT INTO events SELECT g, 1 + (g * 104729) %% %d, g %% 17,
			substr(sha256(int8send(g)) || sha256(int8send(-g)) || sha256(int8send(g + 1000000000000)) ||
			       sha256(int8send(g + 2000000000000)) || sha256(int8send(g + 3000000000000)) ||
			       sha256(int8send(g + 4000000000000)) || sha256(int8send(g + 5000000000000)), 1, 40 + (g %% 161)::int),
			timestamptz '2022-01-01 00:00:00+00' + g * interval '1 second'
			FROM generate_series(1::bigint, %d) g`, max(no, 1), ne),
		`ALTER TABLE users ADD PRIMARY KEY (id)`,
		`ALTER TABLE orders ADD PRIMARY KEY (id)`,
		`CREATE INDEX orders_user_id_idx ON orders (user_id)`,
		`ALTER TABLE events ADD PRIMARY KEY (id)`,
		`VACUUM ANALYZE`,
		`CHECKPOINT`,
	)
}

const (
	readmeBegin = "<!-- bench-db:begin (written by make bench) -->"
	readmeEnd   = "<!-- bench-db:end -->"
)

// writeReadme replaces what lies between the bench-db markers of path
// with table.
func writeReadme(path, cmd, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, readmeBegin), strings.Index(s, readmeEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q … %q markers", path, readmeBegin, readmeEnd)
	}
	s = s[:i+len(readmeBegin)] + "\nMeasured with `" + cmd + "`, the last step of `make bench` (runs alternate between the tools; CPU is the tool's plus the server backends'):\n" + table + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
