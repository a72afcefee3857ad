package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/transfer"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := cli.FlagSet("producer", "producer [--in db.bin] [--mss 65528] [--queue snapshots] [--url URL] [flags]", stderr)
	var bf cli.BrokerFlags
	bf.Register(fs)
	in := fs.String("in", "db.bin", "snapshot file to send")
	mss := fs.Int("mss", transfer.DefaultMSS, "maximum segment payload in bytes (the body is MSS+8; the default makes it 64 KiB)")
	window := fs.Int("confirm-window", transfer.DefaultConfirmWindow, "publishes awaiting broker confirmation")
	compress := fs.String("compress", transfer.CompressNone, "pack payloads: none; s2 or zstd (each payload, when smaller); auto (s2 while it pays, by the observed ratio and publish rate). The consumer decodes; offsets, size and SHA-256 stay those of the file. Consumers older than s2 dead-letter s2 payloads")
	raw := fs.Bool("raw", false, "send any file, not only a complete snapshot")
	id := fs.String("transfer", "", "transfer id (default: a new random id)")
	resume := fs.Bool("resume", false, "continue the interrupted transfer recorded in the state file (same transfer id; only unconfirmed segments are sent)")
	state := fs.String("state", "", "progress file for --resume (default IN.segmq-send; - for none)")
	rehash := fs.Bool("rehash", false, "hash the file even when IN.sha256 (written by snapshot gen and dump) records its SHA-256 for the file's current size and mtime; by default that digest is sent and the file is not hashed again")
	timeout := fs.Duration("timeout", 0, "give up when no segment is confirmed for this long, e.g. while the broker is down (0 = retry for ever)")
	verbose := fs.Bool("v", false, "debug logging")
	var prof cli.Profile
	prof.Register(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if *mss < 1 || *mss > transfer.MaxMSS {
		return cli.Usagef("--mss must be between 1 and %d, got %d", transfer.MaxMSS, *mss)
	}
	if *timeout < 0 {
		return cli.Usagef("--timeout must be >= 0, got %s", *timeout)
	}
	if !slices.Contains(transfer.CompressModes, *compress) {
		return cli.Usagef("--compress must be none, s2, zstd or auto, got %q", *compress)
	}
	if *window < 1 {
		return cli.Usagef("--confirm-window must be >= 1, got %d", *window)
	}
	dial, topo, err := bf.Resolve("segmq producer")
	if err != nil {
		return err
	}
	stopProfile, err := prof.Start()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopProfile()) }()
	var size int64
	if fi, err := os.Stat(*in); err == nil {
		size = fi.Size()
	}
	prog := cli.NewProgress(stderr, nil, "published", size)
	log := prog.Logger(*verbose) // log lines go above the bar, not through it
	res, err := transfer.Send(ctx, *in, transfer.SendConfig{
		Dial: dial, Topology: topo, MSS: *mss, ConfirmWindow: *window, Transfer: *id, Raw: *raw, Compress: *compress,
		Resume: *resume, State: *state, Timeout: *timeout, Rehash: *rehash,
		Log: log, Progress: prog.Set,
	})
	prog.Done()
	if err != nil {
		return err
	}
	from := ""
	if res.DigestFrom != "" {
		from = " (from " + res.DigestFrom + ")"
	}
	fmt.Fprintf(stdout, "sent transfer %s: %d segments, %d bytes in %s (%s), wire bytes %d, republished %d, resumed %d, reconnects %d, sha256 %s%s\n",
		res.Transfer, res.Segments, res.Bytes, res.Elapsed.Round(1e6), cli.Rate(res.Bytes, res.Elapsed), res.WireBytes, res.Republished, res.Resumed, res.Reconnects, res.SHA256, from)
	return nil
}
