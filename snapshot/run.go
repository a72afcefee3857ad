package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/snapfile"
)

var usage = (`snapshot gen --records N [--workers K] [--seed S] [--profile low-entropy] --out FILE
       snapshot verify FILE
       snapshot cat FILE
       ` + dumpUsage + `
       ` + restoreUsage + `
       ` + verifyUsage)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "usage: %s\n", usage)
		return cli.Usagef("a subcommand is required: gen, verify, cat, dump or restore")
	}
	switch args[0] {
	case "gen":
		return runGen(ctx, args[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "cat":
		return runCat(ctx, args[1:], stdout, stderr)
	case "dump":
		return runDump(ctx, args[1:], stdout, stderr)
	case "restore":
		return runRestore(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stdout, "usage: %s\n", usage)
		return nil
	}
	return cli.Usagef("unknown subcommand %q (want gen, verify, cat, dump or restore)", args[0])
}

func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("snapshot gen", "snapshot gen --records N [--workers K] [--seed S] [--profile low-entropy] --out FILE", stderr)
	records := fs.Int64("records", -1, "number of rows to generate (required)")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "encoder goroutines; the bytes do not depend on it")
	seed := fs.Uint64("seed", 1, "seed; the same seed gives the same bytes")
	out := fs.String("out", "", "output file (required); written to a temporary file beside it and renamed when complete, then its SHA-256 to FILE.sha256")
	profile := fs.String("profile", "default", "row contents: default, or low-entropy (repetitive rows, for measuring compression)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	switch {
	case *profile != "default" && *profile != "low-entropy":
		return cli.Usagef("--profile must be default or low-entropy, got %q", *profile)
	case fs.NArg() > 0:
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	case *records < 0:
		return cli.Usagef("--records is required and must be >= 0")
	case *out == "":
		return cli.Usagef("--out is required")
	case *workers < 1:
		return cli.Usagef("--workers must be >= 1, got %d", *workers)
	}
	start := time.Now()
	prog := cli.NewCountProgress(stderr, nil, "gen", *records, "rows")
	var st snapfile.Stats
	err := snapfile.WriteWithSidecar(*out, func(f io.Writer) error {
		var err error
		st, err = snapfile.Gen(ctx, f, snapfile.GenOptions{Rows: *records, Workers: *workers, Seed: *seed, LowEntropy: *profile == "low-entropy", Progress: prog.Set})
		return err
	})
	prog.Done()
	if err != nil {
		return fmt.Errorf("gen %s: %w", *out, err)
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "wrote %s: %d records (%d rows), %d bytes in %s (%.0f rows/s, %s)\n",
		*out, st.Records, st.Rows, st.Bytes, el.Round(time.Millisecond), float64(st.Rows)/el.Seconds(), cli.Rate(st.Bytes, el))
	return nil
}

// openOne parses a subcommand that takes exactly one FILE and opens it.
func openOne(name string, args []string, stderr io.Writer) (*os.File, error) {
	fs := cli.FlagSet("snapshot "+name, "snapshot "+name+" FILE", stderr)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != 1 {
		return nil, cli.Usagef("%s takes exactly one FILE, got %d arguments", name, fs.NArg())
	}
	return os.Open(fs.Arg(0))
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("snapshot verify", "snapshot verify FILE [--db URL]", stderr)
	db := fs.String("db", "", "compare the snapshot with this database (postgres://…) instead of checking the file alone")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("verify takes exactly one FILE, got %d arguments", len(pos))
	}
	if *db != "" {
		return runVerifyDB(ctx, pos[0], *db, stdout)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	path := f.Name()
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	prog := cli.NewProgress(stderr, nil, "verify", size)
	sum, err := snapfile.Verify(ctx, f, prog.Set)
	prog.Done()
	if err != nil {
		var se *snapfile.Error
		if errors.As(err, &se) {
			return fmt.Errorf("%s: invalid snapshot at %w", path, err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(stdout, "ok %s: records %d, rows %d, tables %d, bytes %d, sha256 %s\n",
		path, sum.Records, sum.Rows, sum.Tables, sum.Bytes, sum.SHA256)
	return nil
}

func runCat(_ context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := openOne("cat", args, stderr)
	if err != nil {
		return err
	}
	defer f.Close()
	path := f.Name()
	// Progress only when the JSON goes to a file: on a terminal or into a
	// pipe (| jq) the bar would mix with what is printed.
	var in io.Reader = f
	var prog *cli.Progress
	if toFile(stdout) {
		var size int64
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		prog = cli.NewProgress(stderr, nil, "cat", size)
		in = &progressReader{r: f, p: prog}
	}
	bw := bufio.NewWriterSize(stdout, 256<<10)
	_, err = snapfile.Cat(in, bw)
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	prog.Done()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// toFile reports whether w is a regular file.
func toFile(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r io.Reader
	p *cli.Progress
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Add(int64(n))
	return n, err
}
