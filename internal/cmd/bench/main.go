// Command bench is `make bench`: segmq end to end against what the broker
// itself allows, on the same broker in the same run.
//
//   - The baseline ("raw") is plain amqp091-go: one publisher with a
//     confirm window and one consumer with prefetch and batched acks, on a
//     fresh durable queue, both at once, persistent bodies of MSS+8 bytes,
//     as many as the snapshot has segments.
//   - "raw + write" is the same consumer also writing each body at its
//     offset and fsyncing before each ack, at every cadence of
//     -raw-cadences; the best median is the ceiling segmq is held to.
//   - segmq is the real producer and consumer binaries on a generated
//     snapshot of that byte size, consumer started first, timed from the
//     start of both until the consumer has verified and renamed the file.
//   - They alternate, run after run, so that machine noise hits them all.
//
// It also records peak RSS (VmHWM of each child) at several snapshot
// sizes, `snapshot gen` rows/s with 1 and 2 workers, an MSS sweep and each
// --compress mode against the raw broker. Results go to stdout, to
// -results (markdown) and, with -readme, between the bench markers of the
// README. Each part of the report is a section (sections.go); a file may
// add its own with register from an init func.
//
// The broker is $AMQP_URL, else a throwaway local rabbitmq-server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/segmq/segmq/internal/localbroker"
	"github.com/segmq/segmq/transfer"
)

type options struct {
	bin, dir, results, readme  string
	runs, quorumRuns           int
	mss                        int
	ratioSize, sweepSize       int64
	compressSize               int64
	rssSizes                   []int64
	sweep                      []int
	compress                   bool
	linkRate                   int
	sections                   string
	profile                    bool
	producerArgs, consumerArgs []string
	rawWindow, rawPrefetch     int
	rawAckEvery                int
	rawCadences                []int // raw + write: fsync and ack every N, each measured
	rawProcs                   int   // GOMAXPROCS while a raw baseline runs; 0: unchanged
	codecs                     []string
	compressRuns               int
	verifyBefore               string        // an older snapshot binary, or git:COMMIT, to time verify against
	stream                     streamOptions // stream.go
}

// verifyBeforeCommit is the last commit whose snapshot verify decoded on
// one goroutine with proto.Unmarshal: the verify section's "before".
const verifyBeforeCommit = "77ce015"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	url := os.Getenv("AMQP_URL")
	if url == "" {
		b, err := localbroker.Start(ctx, localbroker.Options{Root: localbroker.RootFromEnv()})
		if err != nil {
			return fmt.Errorf("start a local broker: %w", err)
		}
		defer b.Close()
		url = b.URL
	}
	b := &bench{o: o, url: url, log: os.Stderr}
	return b.all(ctx)
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "bin", "directory holding the snapshot, producer and consumer binaries")
	fs.StringVar(&o.dir, "dir", "bench/out", "work directory: snapshots, outputs, logs, profiles")
	fs.StringVar(&o.results, "results", "bench/results.md", "markdown results file")
	fs.StringVar(&o.readme, "readme", "", "README to update between the bench markers (empty: leave it)")
	fs.IntVar(&o.runs, "runs", 3, "alternating raw/segmq pairs on a classic queue")
	fs.IntVar(&o.quorumRuns, "quorum-runs", 2, "alternating pairs on a quorum queue (0: skip)")
	fs.IntVar(&o.mss, "mss", transfer.DefaultMSS, "MSS for everything but the sweep (the default is the producer's; the raw baselines send bodies of MSS+8 bytes, as segmq does)")
	ratio := fs.String("ratio-size", "1GiB", "snapshot size for the raw/segmq ratio")
	rss := fs.String("rss-sizes", "256MiB,1GiB,4GiB", "snapshot sizes for peak RSS")
	sweepSize := fs.String("sweep-size", "256MiB", "snapshot size for the MSS sweep")
	compressSize := fs.String("compress-size", "256MiB", "snapshot size for the compression section")
	sweep := fs.String("sweep", "4KiB,16KiB,64KiB,128KiB,256KiB,1MiB", "MSS values to sweep (empty: skip)")
	fs.BoolVar(&o.compress, "compress", true, "measure the --compress modes on generated and low-entropy snapshots")
	codecs := fs.String("codecs", "none,s2,zstd,auto", "--compress modes the compression section measures")
	fs.IntVar(&o.compressRuns, "compress-runs", 3, "alternating runs per mode on loopback in the compression section (the shaped link: 1)")
	fs.IntVar(&o.linkRate, "link-rate", 50e6, "bytes/s per direction of the shaped link in the compression section")
	fs.StringVar(&o.verifyBefore, "verify-before", "git:"+verifyBeforeCommit, "an older snapshot binary, or git:COMMIT to build one, whose verify the verify section also times (empty: skip)")
	fs.StringVar(&o.sections, "only", "", "comma-separated sections to run: gen,verify,ratio,rss,sweep,compress,stream,cluster (default all); raw alone runs only the baselines once, to watch the broker; rawwrite only the raw + write ones")
	fs.BoolVar(&o.profile, "profile", false, "one extra segmq run at -ratio-size with CPU and allocation profiles in -dir")
	pa := fs.String("producer-args", "", "extra producer flags (space-separated), for tuning")
	ca := fs.String("consumer-args", "", "extra consumer flags (space-separated), for tuning")
	fs.IntVar(&o.rawWindow, "raw-window", 256, "baseline publisher confirm window")
	fs.IntVar(&o.rawPrefetch, "raw-prefetch", 256, "baseline consumer prefetch")
	fs.IntVar(&o.rawAckEvery, "raw-ack-every", 64, "raw baseline (no write): the consumer acks every N deliveries (multiple)")
	fs.IntVar(&o.rawProcs, "raw-procs", 0, "GOMAXPROCS while a raw baseline runs in this process (segmq's consumer runs with 1; 0: leave it)")
	cadences := fs.String("raw-cadences", "16,64,256", "raw + write baselines: fsync then ack every N deliveries, one baseline per N; the best is the ceiling")
	streamOpts := streamFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.stream, err = streamOpts(); err != nil {
		return o, err
	}
	parseSizes := func(s string) []int64 {
		var out []int64
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			n, perr := parseSize(f)
			if perr != nil && err == nil {
				err = perr
			}
			out = append(out, n)
		}
		return out
	}
	o.ratioSize = single(parseSizes(*ratio))
	o.sweepSize = single(parseSizes(*sweepSize))
	o.compressSize = single(parseSizes(*compressSize))
	o.rssSizes = parseSizes(*rss)
	for _, n := range parseSizes(*sweep) {
		o.sweep = append(o.sweep, int(n))
	}
	o.producerArgs, o.consumerArgs = strings.Fields(*pa), strings.Fields(*ca)
	o.codecs = strings.FieldsFunc(*codecs, func(r rune) bool { return r == ',' || r == ' ' })
	for f := range strings.SplitSeq(*cadences, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, perr := strconv.Atoi(f)
		if perr != nil || n < 1 {
			if err == nil {
				err = fmt.Errorf("-raw-cadences: bad cadence %q", f)
			}
			continue
		}
		o.rawCadences = append(o.rawCadences, n)
	}
	if err == nil && len(o.rawCadences) == 0 {
		err = errors.New("-raw-cadences needs at least one cadence")
	}
	if err == nil && (o.ratioSize <= 0 || o.sweepSize <= 0 || o.compressSize <= 0) {
		err = errors.New("-ratio-size, -sweep-size and -compress-size must be positive")
	}
	return o, err
}

func single(v []int64) int64 {
	if len(v) != 1 {
		return 0
	}
	return v[0]
}

// parseSize reads 4096, 64KiB, 256MiB, 1GiB.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 65536, 64KiB, 1GiB)", s)
	}
	return n * mult, nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

func (o options) want(section string) bool {
	return o.sections == "" || slices.Contains(strings.Split(o.sections, ","), section)
}

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / 1e6 / d.Seconds() }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// logf prints progress to the bench log (stderr).
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

type bench struct {
	o       options
	url     string
	log     io.Writer
	started time.Time
	seq     int // queue names
	rep     report
}

func (b *bench) path(name string) string { return filepath.Join(b.o.dir, name) }
