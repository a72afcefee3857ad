package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/transfer"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := cli.FlagSet("consumer", "consumer --out db.bin [--queue snapshots] [--url URL] [--window N] [--timeout D] [flags]", stderr)
	var bf cli.BrokerFlags
	bf.Register(fs)
	out := fs.String("out", "", "where the verified file goes (required); work happens in OUT.part")
	window := fs.Uint("window", 0, "reorder window in segments; 0 = the whole transfer, 1 = strict in-order")
	timeout := fs.Duration("timeout", 0, "give up when no segment arrives for this long (e.g. 30s); 0 = wait for ever")
	prefetch := fs.Int("prefetch", transfer.DefaultPrefetch, fmt.Sprintf("unacknowledged deliveries the broker may send ahead (1..%d)", transfer.MaxPrefetch))
	ackEvery := fs.Int("ack-every", transfer.DefaultAckEvery, "placed segments per batch: fsync the .part, journal them, then ack the batch (a batch also ends when the prefetch is full)")
	ackInterval := fs.Duration("ack-interval", transfer.DefaultAckInterval, "longest a placed segment waits for its batch's fsync and ack")
	maxMSS := fs.Int("max-mss", transfer.MaxMSS, "refuse (dead-letter) segments whose headers claim a larger MSS; bounds the memory one segment can claim")
	procs := fs.Int("procs", defaultProcs(), "CPUs running Go code (GOMAXPROCS; default 1 unless $GOMAXPROCS is set). One covers one queue's rate; more let the garbage collector's idle workers take CPU a co-located broker needs")
	id := fs.String("transfer", "", "take only this transfer id (default: the first that arrives)")
	restart := fs.Bool("restart", false, "discard OUT.part and its state instead of resuming")
	seedFormat := fs.Bool("seed-format", false, "also take seed-format segments (no segmq headers): such a transfer has no size or SHA-256 to verify, so by default they are moved aside")
	standby := fs.Bool("standby", false, "hot standby: while another consumer holds OUT's lock, wait, and take over from the .part it leaves when it stops (exit 0 if it restores the file)")
	noClaim := fs.Bool("no-claim", false, "do not claim the transfer in the stream QUEUE.claims before the first ack (for a broker without streams, or a user who may not use it): only when no other consumer can run on the queue, since two consumers with different --out could then split a transfer. A claim another owner made is still honoured where the stream can be read")
	list := fs.Bool("list", false, "with --queue-type stream: list the transfers in the stream (id, run, start, size, segments, state, sha256) and exit; restores nothing")
	verbose := fs.Bool("v", false, "debug logging")
	var prof cli.Profile
	prof.Register(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	case *out == "" && !*list:
		return cli.Usagef("--out is required")
	case *list && *out != "":
		return cli.Usagef("--list restores nothing: drop --out")
	case *prefetch < 1 || *prefetch > transfer.MaxPrefetch:
		return cli.Usagef("--prefetch must be between 1 and %d (AMQP's limit), got %d", transfer.MaxPrefetch, *prefetch)
	case *maxMSS < 1 || *maxMSS > transfer.MaxMSS:
		return cli.Usagef("--max-mss must be between 1 and %d, got %d", transfer.MaxMSS, *maxMSS)
	case *ackEvery < 1:
		return cli.Usagef("--ack-every must be >= 1, got %d", *ackEvery)
	case *ackInterval <= 0:
		return cli.Usagef("--ack-interval must be > 0, got %s", *ackInterval)
	case *procs < 1:
		return cli.Usagef("--procs must be >= 1, got %d", *procs)
	case *timeout < 0:
		return cli.Usagef("--timeout must be >= 0, got %s", *timeout)
	case *standby && *restart:
		return cli.Usagef("--standby takes over the .part another consumer leaves; --restart would discard it")
	case *window > 1<<32-1:
		return cli.Usagef("--window too large")
	}
	runtime.GOMAXPROCS(*procs)
	dial, topo, err := bf.Resolve("segmq consumer")
	if err != nil {
		return err
	}
	if *list {
		return listStream(ctx, stdout, dial, topo, *id)
	}
	stopProfile, err := prof.Start()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopProfile()) }()
	// On a terminal: the log says what we wait for (queue, broker, transfer)
	// once subscribed, the status line that the wait goes on, and the bar
	// (towards the transfer's size, from the resumed bytes) replaces it at
	// the first accepted segment.
	prog := cli.NewProgress(stderr, nil, "received", 0)
	log := prog.Logger(*verbose)
	prog.Waiting("waiting for the first segment")
	res, err := transfer.Receive(ctx, transfer.ReceiveConfig{
		Dial: dial, Topology: topo, Out: *out, ReorderWindow: uint32(*window), Prefetch: *prefetch, MaxMSS: *maxMSS, SeedFormat: *seedFormat,
		Timeout: *timeout, Transfer: *id, Standby: *standby, NoClaim: *noClaim, AckEvery: *ackEvery, AckInterval: *ackInterval, Restart: *restart, Log: log,
		Progress: func(n, total int64) { prog.SetTotal(total); prog.Set(n) },
	})
	prog.Done()
	if err != nil {
		return err
	}
	if res.ByOther {
		fmt.Fprintf(stdout, "nothing to do: the consumer this one stood by for restored %s\n", *out)
		return nil
	}
	check := "size and sha256 verified"
	if !res.Verified {
		check = "seed-format transfer, no digest to verify"
	}
	if topo.IsStream() {
		fmt.Fprintf(stdout, "received transfer %s (run %s) from stream %s: %d segments, %d bytes in %s (%s), %s; read %d messages (other transfers skipped %d, duplicates %d, malformed skipped %d), resumed %d, reconnects %d; sha256 %s -> %s\n",
			res.Transfer, res.Run, topo.Name(), res.Segments, res.Bytes, res.Elapsed.Round(1e6), cli.Rate(res.Bytes, res.Elapsed), check,
			res.Deliveries, res.Skipped, res.Duplicates, res.Corrupt, res.Resumed, res.Reconnects, res.SHA256, *out)
		return nil
	}
	fmt.Fprintf(stdout, "received transfer %s: %d segments, %d bytes in %s (%s), %s; duplicates %d, set aside %d, leftovers dropped %d, requeued %d, dead-lettered %d, resumed %d, reconnects %d; sha256 %s -> %s\n",
		res.Transfer, res.Segments, res.Bytes, res.Elapsed.Round(1e6), cli.Rate(res.Bytes, res.Elapsed), check,
		res.Duplicates, res.SetAside, res.Stale, res.Requeued, res.DeadLettered, res.Resumed, res.Reconnects, res.SHA256, *out)
	return nil
}

// defaultProcs is 1 unless $GOMAXPROCS says otherwise. amqp091-go
// allocates two buffers per delivery, so the consumer's heap turns over
// about twice per byte received; with more than one P the collector's
// idle mark workers then run on every otherwise idle CPU. On the 2-core
// bench machine, where the broker needs that CPU, GOMAXPROCS=1 cut the
// consumer's CPU per GiB from about 5 s to about 2.8 s and raised the
// end-to-end rate by a fifth (see README, Performance).
func defaultProcs() int {
	if n, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); err == nil && n > 0 {
		return n
	}
	return 1
}

// listStream prints the transfers in a stream, oldest first, from its
// index (no segment is read); with want, only that transfer id's runs.
func listStream(ctx context.Context, stdout io.Writer, dial rabbit.DialConfig, topo rabbit.Topology, want string) error {
	list, err := transfer.ListStream(ctx, dial, topo)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TRANSFER\tRUN\tSTARTED\tBYTES\tSEGMENTS\tSTATE\tSHA256")
	n := 0
	for _, e := range list {
		if want != "" && e.Transfer != want {
			continue
		}
		n++
		state := "complete"
		switch {
		case e.Expired:
			state = "expired"
		case !e.Complete:
			state = "incomplete"
		}
		sha := e.SHA256
		if sha == "" {
			sha = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", e.Transfer, e.Run, e.Started.UTC().Format(time.RFC3339), e.Size, e.Segments, state, sha)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d transfers in stream %s\n", n, topo.Name())
	return nil
}
