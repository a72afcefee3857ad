package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/transfer"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := cli.FlagSet("consumer", "consumer --out db.bin [--queue snapshots] [--url URL] [--window N] [--timeout D] [flags]", stderr)
	var bf cli.BrokerFlags
	bf.Register(fs)
	out := fs.String("out", "", "where the verified file goes (required); work happens in OUT.part")
	window := fs.Uint("window", 0, "reorder window in segments; 0 = the whole transfer, 1 = strict in-order")
	timeout := fs.Duration("timeout", 0, "give up when no segment arrives for this long (e.g. 30s); 0 = wait for ever")
	prefetch := fs.Int("prefetch", transfer.DefaultPrefetch, "unacknowledged deliveries the broker may send ahead")
	id := fs.String("transfer", "", "take only this transfer id (default: the first that arrives)")
	restart := fs.Bool("restart", false, "discard OUT.part and its state instead of resuming")
	verbose := fs.Bool("v", false, "debug logging")
	var prof cli.Profile
	prof.Register(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	case *out == "":
		return cli.Usagef("--out is required")
	case *prefetch < 1:
		return cli.Usagef("--prefetch must be >= 1, got %d", *prefetch)
	case *timeout < 0:
		return cli.Usagef("--timeout must be >= 0, got %s", *timeout)
	case *window > 1<<32-1:
		return cli.Usagef("--window too large")
	}
	dial, err := bf.Dial("segmq consumer")
	if err != nil {
		return err
	}
	topo, err := bf.Topology()
	if err != nil {
		return err
	}
	stopProfile, err := prof.Start()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopProfile()) }()
	log := cli.Logger(stderr, *verbose)
	prog := cli.NewProgress(stderr, log, "received", 0)
	res, err := transfer.Receive(ctx, transfer.ReceiveConfig{
		Dial: dial, Topology: topo, Out: *out, Window: uint32(*window), Prefetch: *prefetch,
		Timeout: *timeout, Transfer: *id, Restart: *restart, Log: log,
		Progress: func(n, total int64) { prog.Set(n) },
	})
	prog.Done()
	if err != nil {
		return err
	}
	check := "size and sha256 verified"
	if !res.Verified {
		check = "seed-format transfer, no digest to verify"
	}
	fmt.Fprintf(stdout, "received transfer %s: %d segments, %d bytes in %s (%s), %s; duplicates %d, requeued %d, dead-lettered %d, resumed %d, reconnects %d; sha256 %s -> %s\n",
		res.Transfer, res.Segments, res.Bytes, res.Elapsed.Round(1e6), cli.Rate(res.Bytes, res.Elapsed), check,
		res.Duplicates, res.Requeued, res.DeadLettered, res.Resumed, res.Reconnects, res.SHA256, *out)
	return nil
}
