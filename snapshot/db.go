package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/segmq/segmq/dbsnap"
	"github.com/segmq/segmq/dbsnap/pg"
	"github.com/segmq/segmq/dbsnap/sqlite"
	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/snapfile"
)

// The database subcommands: dump, restore, verify --db.

const (
	dumpUsage    = "snapshot dump [--db URL] --out FILE [--tables a,b | --schema s] [--workers K]"
	restoreUsage = "snapshot restore FILE [--db URL] [--workers K] [--clean] [-v]"
	verifyUsage  = "snapshot verify FILE [--db URL]"
	dbFlagHelp   = "database: postgres://user@host:port/db or sqlite:PATH (default $DATABASE_URL, else the PG* variables)"
)

// parseInterspersed parses flags that may come before or after the
// positional arguments (snapshot restore FILE --db URL) and returns the
// positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := cli.Parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// target is a resolved --db: a PostgreSQL URL or an SQLite file.
type target struct {
	url    string // PostgreSQL ("" means the PG* variables)
	sqlite string // SQLite file path, when the URL is sqlite:PATH
}

// parseDB resolves --db: the flag, else $DATABASE_URL, else "" when PG*
// variables name a server (pgx reads them as libpq does).
func parseDB(flagValue string) (target, error) {
	u := flagValue
	if u == "" {
		u = os.Getenv("DATABASE_URL")
	}
	if u == "" {
		for _, v := range []string{"PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT"} {
			if os.Getenv(v) != "" {
				return target{}, nil
			}
		}
		return target{}, cli.Usagef("--db is required (or set $DATABASE_URL or the PG* variables)")
	}
	switch {
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		return target{url: u}, nil
	case strings.HasPrefix(u, "sqlite:"):
		p := strings.TrimPrefix(strings.TrimPrefix(u, "sqlite:"), "//")
		if p == "" {
			return target{}, cli.Usagef("--db sqlite: needs a file path (sqlite:path/to.db)")
		}
		return target{sqlite: p}, nil
	case strings.Contains(u, "="):
		return target{url: u}, nil // a libpq keyword/value string: host=… dbname=…
	}
	return target{}, cli.Usagef("--db %q: want postgres://…, sqlite:PATH or host=… dbname=…", u)
}

func runDump(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("snapshot dump", dumpUsage, stderr)
	db := fs.String("db", "", dbFlagHelp)
	out := fs.String("out", "", "output file (required); written to FILE.tmp and renamed when complete, then its SHA-256 to FILE.sha256")
	tables := fs.String("tables", "", "comma-separated tables to dump (SQL names: orders, public.orders, \"My Table\"); default all")
	schema := fs.String("schema", "", "dump the tables of this schema only")
	workers := fs.Int("workers", 2, "PostgreSQL: connections reading in parallel, all in one snapshot; big tables are split by ctid ranges")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return cli.Usagef("unexpected argument %q", pos[0])
	case *out == "":
		return cli.Usagef("--out is required")
	case *workers < 1:
		return cli.Usagef("--workers must be >= 1, got %d", *workers)
	case *tables != "" && *schema != "":
		return cli.Usagef("give --tables or --schema, not both")
	}
	db0, err := parseDB(*db)
	if err != nil {
		return err
	}
	if db0.sqlite != "" && *schema != "" {
		return cli.Usagef("--schema is for PostgreSQL; SQLite has none")
	}
	o := pg.DumpOptions{URL: db0.url, Schema: *schema, Workers: *workers}
	if *tables != "" {
		o.Tables = splitNames(*tables)
	}
	log := cli.Logger(stderr, false)
	prog := cli.NewCountProgress(stderr, log, "dump", 0, "rows")
	o.Progress = prog.Set
	start := time.Now()
	var st pg.DumpStats
	err = snapfile.WriteWithSidecar(*out, func(f io.Writer) error {
		if db0.sqlite != "" {
			s, err := sqlite.Dump(ctx, f, sqlite.DumpOptions{Path: db0.sqlite, Tables: o.Tables, Progress: prog.Set})
			st = pg.DumpStats(s)
			return err
		}
		var err error
		st, err = pg.Dump(ctx, f, o)
		return err
	})
	prog.Done()
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if n := len(st.NotCarried); n > 0 {
		fmt.Fprintf(stderr, "snapshot: warning: %s holds tables, their keys, indexes, sequences and rows; it does NOT hold these %d objects of the source, and a restore will not recreate them:\n", *out, n)
		for _, o := range st.NotCarried {
			fmt.Fprintf(stderr, "snapshot: warning:   %s\n", o)
		}
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "dumped %d tables, %d rows to %s: %d records, %d bytes in %s (%.0f rows/s, %s)\n",
		st.Tables, st.Rows, *out, st.Records, st.Bytes, el.Round(time.Millisecond), float64(st.Rows)/el.Seconds(), cli.Rate(st.Bytes, el))
	return nil
}

// splitNames splits a --tables list at commas outside double quotes.
func splitNames(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ',' && !quoted:
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// countingReader counts the bytes read, for progress.
type countingReader struct {
	r    io.Reader
	n    int64
	prog *cli.Progress
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.prog.Set(c.n)
	return n, err
}

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("snapshot restore", restoreUsage, stderr)
	db := fs.String("db", "", dbFlagHelp)
	clean := fs.Bool("clean", false, "drop the snapshot's tables (and enum types) in the target first")
	workers := fs.Int("workers", 0, "PostgreSQL: connections loading rows and building indexes (0 = 2); above 1 the tables are built in a staging schema and moved into place in one final transaction, 1 is one transaction on one connection")
	verbose := fs.Bool("v", false, "log each phase of the restore and how long it took")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("restore takes exactly one FILE, got %d arguments", len(pos))
	}
	if *workers < 0 {
		return cli.Usagef("--workers must be >= 0, got %d", *workers)
	}
	db0, err := parseDB(*db)
	if err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	prog := cli.NewProgress(stderr, cli.Logger(stderr, false), "restore", size)
	start := time.Now()
	var st pg.RestoreStats
	if db0.sqlite != "" && *workers > 1 {
		return cli.Usagef("--workers is for PostgreSQL; an SQLite restore is one writer")
	}
	if db0.sqlite != "" {
		var s sqlite.RestoreStats
		s, err = sqlite.Restore(ctx, &countingReader{r: f, prog: prog}, sqlite.RestoreOptions{Path: db0.sqlite, Clean: *clean,
			Warn: func(msg string) { fmt.Fprintf(stderr, "snapshot: warning: %s\n", msg) }})
		st = pg.RestoreStats(s)
	} else {
		st, err = pg.Restore(ctx, &countingReader{r: f, prog: prog}, pg.RestoreOptions{URL: db0.url, Clean: *clean, Workers: *workers, Logger: prog.Logger(*verbose)})
	}
	prog.Done()
	if err != nil {
		return fmt.Errorf("restore %s: %w; the target is unchanged", pos[0], err)
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "restored %s: %d tables, %d rows in %s (%.0f rows/s); keys, indexes and sequences rebuilt\n",
		pos[0], st.Tables, st.Rows, el.Round(time.Millisecond), float64(st.Rows)/el.Seconds())
	return nil
}

// runVerifyDB compares a database with a snapshot, table by table.
func runVerifyDB(ctx context.Context, path, db string, stdout io.Writer) error {
	db0, err := parseDB(db)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var c *dbsnap.Comparison
	if db0.sqlite != "" {
		c, err = sqlite.Compare(ctx, f, db0.sqlite)
	} else {
		c, err = pg.Compare(ctx, f, db0.url)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var rows int64
	for _, t := range c.Tables {
		rows += t.SnapRows
		if t.Problem == "" {
			fmt.Fprintf(stdout, "ok %s: %d rows, digest %.16s\n", t.Name, t.DBRows, t.DBDigest)
		} else {
			fmt.Fprintf(stdout, "DIFFERENT %s: %s\n", t.Name, t.Problem)
		}
	}
	if !c.Equal() {
		return fmt.Errorf("the database differs from %s: first difference: %s", path, c.FirstDifference)
	}
	fmt.Fprintf(stdout, "equal: the database holds exactly the %d tables, %d rows of %s\n", len(c.Tables), rows, path)
	return nil
}
