// Command localpg starts and stops a throwaway PostgreSQL cluster (see
// package pgtest) for `make run` and `make bench-db`.
//
//	localpg start --dir D [--set name=value ...]   prints the server's URL (database postgres)
//	localpg stop --dir D
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/internal/pgtest"
)

func main() { cli.Main("localpg", run) }

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "start" && args[0] != "stop") {
		return cli.Usagef("usage: localpg start|stop --dir DIR [--set name=value]")
	}
	fs := flag.NewFlagSet("localpg "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "cluster directory (required; removed by stop)")
	var set multi
	fs.Var(&set, "set", "server setting name=value (repeatable), e.g. fsync=on")
	if err := cli.Parse(fs, args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return cli.Usagef("--dir is required")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if args[0] == "stop" {
		s, err := pgtest.Attach(*dir)
		if err != nil {
			return fmt.Errorf("no cluster recorded in %s: %w", *dir, err)
		}
		return s.Stop()
	}
	s, err := pgtest.StartDir(ctx, *dir, set)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, s.URL("postgres"))
	return nil
}
