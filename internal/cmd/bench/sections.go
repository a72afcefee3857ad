package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/segmq/segmq/internal/tcpproxy"
)

// all runs every wanted section and writes the report.
func (b *bench) all(ctx context.Context) error {
	b.started = time.Now()
	o := b.o
	b.logf("broker %s; work in %s", b.brokerVersion(), o.dir)
	if o.sections == "raw" { // the baseline alone, e.g. to watch the broker's CPU
		n := int((o.ratioSize + int64(o.mss) - 1) / int64(o.mss))
		for _, out := range []string{"", b.path("raw.out")} {
			d, err := b.raw(ctx, "classic", o.mss+8, n, out)
			if err != nil {
				return err
			}
			b.logf("raw (write %q): %d bodies of %d bytes in %s, %.1f MB/s", out, n, o.mss+8, d.Round(time.Millisecond), mbps(o.ratioSize, d))
		}
		return nil
	}
	bpr, err := b.bytesPerRow(ctx, "")
	if err != nil {
		return err
	}
	ratioRows := int64(float64(o.ratioSize) / bpr)

	// gen: the ratio snapshot, written with 1 worker and then with 2.
	var main snapshot
	if o.want("gen") {
		t := table{cols: []string{"workers", "rows", "bytes", "rows/s", "MB/s"}}
		for _, w := range []int{1, 2} {
			b.logf("snapshot gen %d rows, %d worker(s)", ratioRows, w)
			s, d, err := b.gen(ctx, "main.snap", ratioRows, w, "")
			if err != nil {
				return err
			}
			if main.path != "" && s.bytes != main.bytes {
				return fmt.Errorf("gen with %d workers wrote %d bytes, with 1 worker %d", w, s.bytes, main.bytes)
			}
			main = s
			t.add(fmt.Sprint(w), fmt.Sprint(s.rows), fmt.Sprint(s.bytes), fmt.Sprintf("%.0f", float64(s.rows)/d.Seconds()), fmt.Sprintf("%.1f", mbps(s.bytes, d)))
		}
		b.section("snapshot gen", "`snapshot gen --records N --workers W` to disk; the bytes are identical for any W.", t)
	} else {
		if main, err = b.sized(ctx, "main.snap", o.ratioSize, bpr, ""); err != nil {
			return err
		}
	}
	defer os.Remove(main.path)
	segs := func(size int64, mss int) int { return int((size + int64(mss) - 1) / int64(mss)) }

	// verify: snapshot verify of the ratio snapshot, on one core and on
	// all, and with -verify-before's binary when given.
	if o.want("verify") {
		if err := b.verifySection(ctx, main); err != nil {
			return err
		}
	}

	// ratio: alternate raw and segmq.
	var rssAtRatio [2]int64
	if o.want("ratio") {
		t := table{cols: []string{"queue", "raw MB/s", "raw + write MB/s", "segmq MB/s", "segmq / raw", "segmq / (raw + write)", "runs (raw / raw + write / segmq)"}}
		for _, qt := range []struct {
			name string
			runs int
		}{{"classic", o.runs}, {"quorum", o.quorumRuns}} {
			if qt.runs == 0 {
				continue
			}
			var raws, writes, segs2 []float64
			var runs []string
			n := segs(main.bytes, o.mss)
			for i := range qt.runs {
				d, err := b.raw(ctx, qt.name, o.mss+8, n, "")
				if err != nil {
					return fmt.Errorf("raw %s: %w", qt.name, err)
				}
				dw, err := b.raw(ctx, qt.name, o.mss+8, n, b.path("raw.out"))
				if err != nil {
					return fmt.Errorf("raw + write %s: %w", qt.name, err)
				}
				r, err := b.e2e(ctx, main, qt.name, o.mss, nil, nil)
				if err != nil {
					return fmt.Errorf("segmq %s: %w", qt.name, err)
				}
				rw, ww, sg := mbps(main.bytes, d), mbps(main.bytes, dw), mbps(main.bytes, r.elapsed)
				b.logf("%s run %d: raw %.1f, raw + write %.1f, segmq %.1f MB/s (producer %d KiB, consumer %d KiB peak RSS)", qt.name, i+1, rw, ww, sg, r.producerRSS, r.consumerRSS)
				raws, writes, segs2 = append(raws, rw), append(writes, ww), append(segs2, sg)
				runs = append(runs, fmt.Sprintf("%.0f / %.0f / %.0f", rw, ww, sg))
				if qt.name == "classic" {
					rssAtRatio[0], rssAtRatio[1] = max(rssAtRatio[0], r.producerRSS), max(rssAtRatio[1], r.consumerRSS)
				}
			}
			t.add(qt.name, fmt.Sprintf("%.1f", median(raws)), fmt.Sprintf("%.1f", median(writes)), fmt.Sprintf("%.1f", median(segs2)),
				fmt.Sprintf("**%.2f**", median(segs2)/median(raws)), fmt.Sprintf("%.2f", median(segs2)/median(writes)), strings.Join(runs, "; "))
		}
		b.section("End to end against the broker's own limit",
			fmt.Sprintf("%s snapshot (%d bytes), MSS %d, medians of %d alternating runs (quorum: %d). **raw**: one amqp091-go publisher (confirm window %d) and one consumer (prefetch %d, multiple ack every %d), %d persistent bodies of %d bytes on a fresh durable queue, both at once. **raw + write**: the same, but the consumer also writes each body to a file at its offset and, every 256 deliveries, fsyncs and then acks (what any restore must do; here the broker's message store and the file share one disk). **segmq**: the producer and consumer binaries with their defaults, from the start of both until the consumer has verified the SHA-256 and renamed the file.",
				human(o.ratioSize), main.bytes, o.mss, o.runs, o.quorumRuns, o.rawWindow, o.rawPrefetch, o.rawAckEvery, segs(main.bytes, o.mss), o.mss+8), t)
	}

	if o.profile {
		dir := o.dir
		b.logf("profiling one segmq run into %s/{producer,consumer}.{cpu,allocs}.pprof", dir)
		if _, err := b.e2e(ctx, main, "classic", o.mss,
			[]string{"--cpuprofile", b.path("producer.cpu.pprof"), "--memprofile", b.path("producer.allocs.pprof")},
			[]string{"--cpuprofile", b.path("consumer.cpu.pprof"), "--memprofile", b.path("consumer.allocs.pprof")}); err != nil {
			return err
		}
	}

	// rss: peak RSS at each size, classic queue.
	if o.want("rss") && len(o.rssSizes) > 0 {
		t := table{cols: []string{"snapshot", "bytes", "segmq MB/s", "producer peak RSS", "consumer peak RSS"}}
		for _, size := range o.rssSizes {
			s, err := b.sized(ctx, "rss.snap", size, bpr, "")
			if err != nil {
				return err
			}
			r, err := b.e2e(ctx, s, "classic", o.mss, nil, nil)
			os.Remove(s.path)
			if err != nil {
				return err
			}
			b.logf("rss %s: %.1f MB/s, producer %d KiB, consumer %d KiB", human(size), mbps(s.bytes, r.elapsed), r.producerRSS, r.consumerRSS)
			t.add(human(size), fmt.Sprint(s.bytes), fmt.Sprintf("%.1f", mbps(s.bytes, r.elapsed)), mib(r.producerRSS), mib(r.consumerRSS))
		}
		note := "Producer and consumer running together, classic queue, MSS 65536; peak RSS is VmHWM of each process, sampled every 10 ms."
		if rssAtRatio[0] > 0 {
			note += fmt.Sprintf(" Over the %d classic ratio runs above, the highest peaks were %s (producer) and %s (consumer).", o.runs, mib(rssAtRatio[0]), mib(rssAtRatio[1]))
		}
		b.section("Memory does not grow with the snapshot", note, t)
	}

	// sweep: MSS against throughput.
	if o.want("sweep") && len(o.sweep) > 0 {
		s, err := b.sized(ctx, "sweep.snap", o.sweepSize, bpr, "")
		if err != nil {
			return err
		}
		t := table{cols: []string{"MSS", "segments", "raw MB/s", "segmq MB/s", "segmq / raw"}}
		for _, mss := range o.sweep {
			d, err := b.raw(ctx, "classic", mss+8, segs(s.bytes, mss), "")
			if err != nil {
				os.Remove(s.path)
				return err
			}
			r, err := b.e2e(ctx, s, "classic", mss, nil, nil)
			if err != nil {
				os.Remove(s.path)
				return err
			}
			rw, sg := mbps(s.bytes, d), mbps(s.bytes, r.elapsed)
			b.logf("mss %s: raw %.1f MB/s, segmq %.1f MB/s", human(int64(mss)), rw, sg)
			t.add(human(int64(mss)), fmt.Sprint(segs(s.bytes, mss)), fmt.Sprintf("%.1f", rw), fmt.Sprintf("%.1f", sg), fmt.Sprintf("%.2f", sg/rw))
		}
		os.Remove(s.path)
		b.section("MSS sweep", fmt.Sprintf("%s snapshot, classic queue, one run each. The broker's frame_max is 128 KiB: larger bodies travel as several frames. Its max_message_size (16 MiB on 4.x, 128 MiB on 3.x) bounds --mss.", human(o.sweepSize)), t)
	}

	// compress: effective (uncompressed) MB/s with and without zstd, on
	// loopback and through a link shaped by a proxy.
	if o.want("compress") && o.compress {
		t := table{cols: []string{"link", "snapshot", "--compress", "bytes on the wire", "wire / file", "effective MB/s", "raw broker MB/s on this link"}}
		gen, err := b.sized(ctx, "compress.snap", o.compressSize, bpr, "")
		if err != nil {
			return err
		}
		defer os.Remove(gen.path)
		lowBPR, err := b.bytesPerRow(ctx, "low-entropy")
		if err != nil {
			return err
		}
		low, err := b.sized(ctx, "low.snap", o.compressSize, lowBPR, "low-entropy")
		if err != nil {
			return err
		}
		defer os.Remove(low.path)
		n := segs(gen.bytes, o.mss)
		for _, link := range []int{0, o.linkRate} {
			name := "loopback"
			if link > 0 {
				name = fmt.Sprintf("shaped, nominal %d MB/s", link/1e6)
			}
			err := b.viaLink(link, func() error {
				d, err := b.raw(ctx, "classic", o.mss+8, n, "")
				if err != nil {
					return err
				}
				rawRate := mbps(gen.bytes, d)
				for _, in := range []struct {
					name string
					s    snapshot
				}{{"generated", gen}, {"low-entropy", low}} {
					for _, c := range []string{"none", "zstd"} {
						r, err := b.e2e(ctx, in.s, "classic", o.mss, []string{"--compress", c}, nil)
						if err != nil {
							return err
						}
						eff := mbps(in.s.bytes, r.elapsed)
						b.logf("compress %s %s %s: %.1f MB/s effective, %d wire bytes; raw %.1f MB/s", name, in.name, c, eff, r.wireBytes, rawRate)
						t.add(name, fmt.Sprintf("%s, %s", in.name, human(o.compressSize)), c, fmt.Sprint(r.wireBytes),
							fmt.Sprintf("%.2f", float64(r.wireBytes)/float64(in.s.bytes)), fmt.Sprintf("%.1f", eff), fmt.Sprintf("%.1f", rawRate))
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		b.section("Compression", "`producer --compress zstd` (fastest level, one frame per payload), classic queue, MSS 65536, one run each. Effective MB/s is snapshot bytes over wall time. Bytes on the wire are payloads as published. The shaped link is our TCP proxy between each client and the broker, limiting each direction of each connection as a slow network between the hosts would (it sleeps after each 32 KiB, so the real rate is below the nominal one: the raw column is the measured ceiling); the raw baseline runs through the same link.", t)
	}
	if o.want("stream") {
		if err := b.streamSection(ctx, bpr); err != nil {
			return err
		}
	}
	return b.write()
}

// viaLink runs f with the clients connected through a proxy that limits
// each direction of each connection to rate bytes/s (0: direct).
func (b *bench) viaLink(rate int, f func() error) error {
	if rate == 0 {
		return f()
	}
	u, err := url.Parse(b.url)
	if err != nil {
		return err
	}
	p, err := tcpproxy.New(u.Host)
	if err != nil {
		return err
	}
	defer p.Close()
	p.SetRate(rate)
	orig := b.url
	u.Host = p.Addr
	b.url = u.String()
	defer func() { b.url = orig }()
	return f()
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// table is a markdown table.
type table struct {
	cols []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t table) String() string {
	var sb strings.Builder
	line := func(cells []string) { sb.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	line(t.cols)
	sep := make([]string, len(t.cols))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range t.rows {
		line(r)
	}
	return sb.String()
}

type report struct{ sections []string }

func (b *bench) section(title, note string, t table) {
	md := fmt.Sprintf("#### %s\n\n%s\n\n%s", title, note, t)
	b.rep.sections = append(b.rep.sections, md)
	fmt.Println(md)
}

// machine describes where the figures come from.
func (b *bench) machine() string {
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(raw)) {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(raw), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	commit := "unknown commit"
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		commit = "commit " + strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s, %s (%d cores%s), %s, %s, %s", time.Now().Format("2006-01-02"), cpu, runtime.NumCPU(), mem,
		b.brokerVersion(), runtime.Version(), commit)
}

const (
	beginMark = "<!-- bench:begin (written by make bench) -->"
	endMark   = "<!-- bench:end -->"
)

// write puts the report in -results and, with -readme, in the README.
func (b *bench) write() error {
	md := fmt.Sprintf("Measured by `make bench` on %s; the run took %s.\n\n%s",
		b.machine(), time.Since(b.started).Round(time.Second), strings.Join(b.rep.sections, "\n"))
	if b.o.results != "" {
		if err := os.WriteFile(b.o.results, []byte("# segmq benchmark results\n\n"+md), 0o644); err != nil {
			return err
		}
		b.logf("results in %s", b.o.results)
	}
	if b.o.readme == "" {
		return nil
	}
	raw, err := os.ReadFile(b.o.readme)
	if err != nil {
		return err
	}
	before, rest, ok1 := strings.Cut(string(raw), beginMark)
	_, after, ok2 := strings.Cut(rest, endMark)
	if !ok1 || !ok2 {
		return fmt.Errorf("%s has no %q ... %q markers", b.o.readme, beginMark, endMark)
	}
	out := before + beginMark + "\n" + md + endMark + after
	b.logf("updated %s", b.o.readme)
	return os.WriteFile(b.o.readme, []byte(out), 0o644)
}

// verifySection times `snapshot verify` on s: this build with GOMAXPROCS
// 1 and the machine's CPUs, and the -verify-before binary (the version
// before parallel decoding) when given. Medians of -runs.
func (b *bench) verifySection(ctx context.Context, s snapshot) error {
	type variant struct{ name, bin, procs string }
	var vs []variant
	if before := b.o.verifyBefore; before != "" {
		name := "before: " + before
		if commit, ok := strings.CutPrefix(before, "git:"); ok {
			bin, err := b.buildAt(ctx, commit)
			if err != nil {
				return fmt.Errorf("-verify-before %s: %w", before, err)
			}
			before, name = bin, "before: commit "+commit
		}
		vs = append(vs, variant{name, before, ""})
	}
	self := filepath.Join(b.o.bin, "snapshot")
	vs = append(vs, variant{"this build", self, "1"}, variant{"this build", self, ""})
	t := table{cols: []string{"snapshot verify", "GOMAXPROCS", "MB/s", "runs"}}
	rates, runs := make([][]float64, len(vs)), make([][]string, len(vs))
	for range max(b.o.runs, 1) { // the variants alternate, run after run
		for i, v := range vs {
			cmd := exec.CommandContext(ctx, v.bin, "verify", s.path)
			cmd.Env = os.Environ()
			if v.procs != "" {
				cmd.Env = append(cmd.Env, "GOMAXPROCS="+v.procs)
			}
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s verify: %w: %s", v.bin, err, out)
			}
			r := mbps(s.bytes, time.Since(start))
			b.logf("verify %s, GOMAXPROCS %q: %.1f MB/s", v.name, v.procs, r)
			rates[i], runs[i] = append(rates[i], r), append(runs[i], fmt.Sprintf("%.0f", r))
		}
	}
	for i, v := range vs {
		procs := v.procs
		if procs == "" {
			procs = fmt.Sprint(runtime.NumCPU())
		}
		t.add(v.name, procs, fmt.Sprintf("%.1f", median(rates[i])), strings.Join(runs[i], " / "))
	}
	b.section("snapshot verify",
		fmt.Sprintf("`snapshot verify` of the %s snapshot above (%d bytes, page cache warm after the first run), medians of %d runs, the builds alternating; it decodes every record and checks every row.", human(b.o.ratioSize), s.bytes, max(b.o.runs, 1)), t)
	return nil
}

// buildAt builds the snapshot command as it was at a git commit.
func (b *bench) buildAt(ctx context.Context, commit string) (string, error) {
	dir := b.path("src-" + commit)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b.logf("building snapshot at commit %s in %s", commit, dir)
	archive := exec.CommandContext(ctx, "sh", "-c", `git archive --format=tar "$1" | tar -x -C "$2"`, "sh", commit, dir)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive: %w: %s", err, out)
	}
	bin, err := filepath.Abs(filepath.Join(dir, "snapshot.bin"))
	if err != nil {
		return "", err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./snapshot")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w: %s", err, out)
	}
	return bin, nil
}
