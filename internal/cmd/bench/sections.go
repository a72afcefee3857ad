package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/segmq/segmq/internal/tcpproxy"
)

// A section is one part of the report. all runs the registered sections
// in order, those -only wants, each on the shared env. Sections in other
// files (a cluster's rows, say) register themselves from an init func.
type section struct {
	name  string
	order int // position in the report; the built-in sections use 10, 20, ...
	run   func(ctx context.Context, b *bench, e *env) error
}

var registry []section

// register adds a section to every run of the bench.
func register(s section) {
	registry = append(registry, s)
	slices.SortStableFunc(registry, func(a, b section) int { return a.order - b.order })
}

// env is what sections share: the bytes-per-row calibration and the
// ratio snapshot (-ratio-size, generated once).
type env struct {
	bpr        float64
	main       snapshot
	rssAtRatio [2]int64 // highest producer and consumer peaks over the classic ratio runs (KiB)
}

func (e *env) segs(size int64, mss int) int { return int((size + int64(mss) - 1) / int64(mss)) }

func init() {
	register(section{"gen", 10, genSection})
	register(section{"verify", 20, func(ctx context.Context, b *bench, e *env) error { return b.verifySection(ctx, e.main) }})
	register(section{"ratio", 30, ratioSection})
	register(section{"profile", 35, profileSection})
	register(section{"rss", 40, rssSection})
	register(section{"sweep", 50, sweepSection})
	register(section{"compress", 60, compressSection})
}

// all runs every wanted section and writes the report.
func (b *bench) all(ctx context.Context) error {
	b.started = time.Now()
	o := b.o
	b.logf("broker %s; work in %s", b.brokerVersion(), o.dir)
	if o.sections == "raw" || o.sections == "rawwrite" { // the baselines alone, e.g. to watch the broker's CPU
		n := int((o.ratioSize + int64(o.mss) - 1) / int64(o.mss))
		if o.sections == "raw" {
			d, err := b.raw(ctx, "classic", o.mss+8, n, "", o.rawAckEvery)
			if err != nil {
				return err
			}
			b.logf("raw: %d bodies of %d bytes in %s, %.1f MB/s", n, o.mss+8, d.Round(time.Millisecond), mbps(o.ratioSize, d))
		}
		for _, c := range o.rawCadences {
			d, err := b.raw(ctx, "classic", o.mss+8, n, b.path("raw.out"), c)
			if err != nil {
				return err
			}
			b.logf("raw + write, fsync and ack every %d: %s, %.1f MB/s", c, d.Round(time.Millisecond), mbps(o.ratioSize, d))
		}
		return nil
	}
	e := &env{}
	var err error
	if e.bpr, err = b.bytesPerRow(ctx, ""); err != nil {
		return err
	}
	if !o.want("gen") {
		if e.main, err = b.sized(ctx, "main.snap", o.ratioSize, e.bpr, ""); err != nil {
			return err
		}
	}
	defer func() {
		if e.main.path != "" {
			os.Remove(e.main.path)
		}
	}()
	for _, s := range registry {
		want := o.want(s.name)
		if s.name == "profile" {
			want = o.profile
		}
		if !want {
			continue
		}
		if err := s.run(ctx, b, e); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return b.write()
}

// genSection writes the ratio snapshot with 1 worker and then with 2.
func genSection(ctx context.Context, b *bench, e *env) error {
	rows := int64(float64(b.o.ratioSize) / e.bpr)
	t := table{cols: []string{"workers", "rows", "bytes", "rows/s", "MB/s"}}
	for _, w := range []int{1, 2} {
		b.logf("snapshot gen %d rows, %d worker(s)", rows, w)
		s, d, err := b.gen(ctx, "main.snap", rows, w, "")
		if err != nil {
			return err
		}
		if e.main.path != "" && s.bytes != e.main.bytes {
			return fmt.Errorf("gen with %d workers wrote %d bytes, with 1 worker %d", w, s.bytes, e.main.bytes)
		}
		e.main = s
		t.add(fmt.Sprint(w), fmt.Sprint(s.rows), fmt.Sprint(s.bytes), fmt.Sprintf("%.0f", float64(s.rows)/d.Seconds()), fmt.Sprintf("%.1f", mbps(s.bytes, d)))
	}
	b.section("snapshot gen", "`snapshot gen --records N --workers W` to disk; the bytes are identical for any W.", t)
	return nil
}

// ratioSection alternates, run after run: raw, raw + write at every
// cadence, segmq. The ceiling is the best cadence's median.
func ratioSection(ctx context.Context, b *bench, e *env) error {
	o, main := b.o, e.main
	cad := table{cols: []string{"queue", "fsync + ack every", "prefetch", "runs (MB/s)", "median MB/s", "best"}}
	t := table{cols: []string{"queue", "raw MB/s", "ceiling: best raw + write MB/s", "segmq MB/s", "segmq / raw", "segmq / ceiling", "segmq runs (MB/s)", "segmq --rehash MB/s", "--rehash / ceiling", "--rehash runs (MB/s)"}}
	for _, qt := range []struct {
		name string
		runs int
	}{{"classic", o.runs}, {"quorum", o.quorumRuns}} {
		if qt.runs == 0 {
			continue
		}
		var raws, sgs, rehash []float64
		writes := make([][]float64, len(o.rawCadences))
		n := e.segs(main.bytes, o.mss)
		for i := range qt.runs {
			d, err := b.raw(ctx, qt.name, o.mss+8, n, "", o.rawAckEvery)
			if err != nil {
				return fmt.Errorf("raw %s: %w", qt.name, err)
			}
			raws = append(raws, mbps(main.bytes, d))
			line := fmt.Sprintf("%s run %d: raw %.1f", qt.name, i+1, raws[i])
			for j, c := range o.rawCadences {
				dw, err := b.raw(ctx, qt.name, o.mss+8, n, b.path("raw.out"), c)
				if err != nil {
					return fmt.Errorf("raw + write every %d, %s: %w", c, qt.name, err)
				}
				writes[j] = append(writes[j], mbps(main.bytes, dw))
				line += fmt.Sprintf(", raw + write/%d %.1f", c, writes[j][i])
			}
			r, err := b.e2e(ctx, main, qt.name, o.mss, nil, nil)
			if err != nil {
				return fmt.Errorf("segmq %s: %w", qt.name, err)
			}
			sgs = append(sgs, mbps(main.bytes, r.elapsed))
			line += fmt.Sprintf(", segmq %.1f", sgs[i])
			if qt.name == "classic" {
				// The producer above sent the digest snapshot gen wrote
				// beside the file; this one hashes the file as it sends.
				rh, err := b.e2e(ctx, main, qt.name, o.mss, []string{"--rehash"}, nil)
				if err != nil {
					return fmt.Errorf("segmq --rehash %s: %w", qt.name, err)
				}
				rehash = append(rehash, mbps(main.bytes, rh.elapsed))
				line += fmt.Sprintf(", segmq --rehash %.1f", rehash[i])
			}
			b.logf("%s MB/s (producer %d KiB, consumer %d KiB peak RSS)", line, r.producerRSS, r.consumerRSS)
			if qt.name == "classic" {
				e.rssAtRatio[0], e.rssAtRatio[1] = max(e.rssAtRatio[0], r.producerRSS), max(e.rssAtRatio[1], r.consumerRSS)
			}
		}
		best := 0
		for j := range o.rawCadences {
			if median(writes[j]) > median(writes[best]) {
				best = j
			}
		}
		for j, c := range o.rawCadences {
			mark := ""
			if j == best {
				mark = "**ceiling**"
			}
			cad.add(qt.name, fmt.Sprint(c), fmt.Sprint(o.rawPrefetch), runList(writes[j]), fmt.Sprintf("%.1f", median(writes[j])), mark)
		}
		ceil := median(writes[best])
		rh := []string{"", "", ""}
		if len(rehash) > 0 {
			rh = []string{fmt.Sprintf("%.1f", median(rehash)), fmt.Sprintf("%.2f", median(rehash)/ceil), runList(rehash)}
		}
		t.add(append([]string{qt.name, fmt.Sprintf("%.1f", median(raws)), fmt.Sprintf("%.1f (every %d)", ceil, o.rawCadences[best]), fmt.Sprintf("%.1f", median(sgs)),
			fmt.Sprintf("%.2f", median(sgs)/median(raws)), fmt.Sprintf("**%.2f**", median(sgs)/ceil), runList(sgs)}, rh...)...)
	}
	b.section("raw + write: the ceiling, per ack/fsync cadence",
		fmt.Sprintf("The consumer of the raw baseline also writes each body to a file at its offset and, every N deliveries, fsyncs and then acks (multiple): what any restore must do. Here the broker's message store and the file share one disk. The cadence decides how long the broker waits for acks, so each is measured (prefetch %d) and the best median is the ceiling segmq is held to. %s snapshot, medians of %d alternating runs (quorum: %d).",
			o.rawPrefetch, human(o.ratioSize), o.runs, o.quorumRuns), cad)
	b.section("End to end against the broker's own limit",
		fmt.Sprintf("%s snapshot (%d bytes), MSS %d, medians of %d alternating runs (quorum: %d). **raw**: one amqp091-go publisher (confirm window %d) and one consumer (prefetch %d, multiple ack every %d), %d persistent bodies of %d bytes on a fresh durable queue, both at once. **ceiling**: the best raw + write cadence above. **segmq**: the producer and consumer binaries with their defaults, from the start of both until the consumer has verified the SHA-256 and renamed the file; the producer sends the SHA-256 that snapshot gen wrote beside the snapshot (main.snap.sha256) instead of hashing the file. **segmq --rehash** (classic): the same, with the producer hashing the file as it sends it, as it does for a file without a sidecar.",
			human(o.ratioSize), main.bytes, o.mss, o.runs, o.quorumRuns, o.rawWindow, o.rawPrefetch, o.rawAckEvery, e.segs(main.bytes, o.mss), o.mss+8), t)
	return nil
}

func runList(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

// profileSection records one segmq run's CPU and allocation profiles.
func profileSection(ctx context.Context, b *bench, e *env) error {
	b.logf("profiling one segmq run into %s/{producer,consumer}.{cpu,allocs}.pprof", b.o.dir)
	_, err := b.e2e(ctx, e.main, "classic", b.o.mss,
		[]string{"--cpuprofile", b.path("producer.cpu.pprof"), "--memprofile", b.path("producer.allocs.pprof")},
		[]string{"--cpuprofile", b.path("consumer.cpu.pprof"), "--memprofile", b.path("consumer.allocs.pprof")})
	return err
}

// rssSection: peak RSS at each size, classic queue.
func rssSection(ctx context.Context, b *bench, e *env) error {
	o := b.o
	if len(o.rssSizes) == 0 {
		return nil
	}
	t := table{cols: []string{"snapshot", "bytes", "segmq MB/s", "producer peak RSS", "consumer peak RSS"}}
	for _, size := range o.rssSizes {
		s, err := b.sized(ctx, "rss.snap", size, e.bpr, "")
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
	note := fmt.Sprintf("Producer and consumer running together, classic queue, MSS %d; peak RSS is VmHWM of each process, sampled every 10 ms.", o.mss)
	if e.rssAtRatio[0] > 0 {
		note += fmt.Sprintf(" Over the %d classic ratio runs above, the highest peaks were %s (producer) and %s (consumer).", o.runs, mib(e.rssAtRatio[0]), mib(e.rssAtRatio[1]))
	}
	b.section("Memory does not grow with the snapshot", note, t)
	return nil
}

// sweepSection: MSS against throughput.
func sweepSection(ctx context.Context, b *bench, e *env) error {
	o := b.o
	if len(o.sweep) == 0 {
		return nil
	}
	s, err := b.sized(ctx, "sweep.snap", o.sweepSize, e.bpr, "")
	if err != nil {
		return err
	}
	defer os.Remove(s.path)
	t := table{cols: []string{"MSS", "segments", "raw MB/s", "segmq MB/s", "segmq / raw"}}
	for _, mss := range o.sweep {
		d, err := b.raw(ctx, "classic", mss+8, e.segs(s.bytes, mss), "", o.rawAckEvery)
		if err != nil {
			return err
		}
		r, err := b.e2e(ctx, s, "classic", mss, nil, nil)
		if err != nil {
			return err
		}
		rw, sg := mbps(s.bytes, d), mbps(s.bytes, r.elapsed)
		b.logf("mss %s: raw %.1f MB/s, segmq %.1f MB/s", human(int64(mss)), rw, sg)
		t.add(human(int64(mss)), fmt.Sprint(e.segs(s.bytes, mss)), fmt.Sprintf("%.1f", rw), fmt.Sprintf("%.1f", sg), fmt.Sprintf("%.2f", sg/rw))
	}
	b.section("MSS sweep", fmt.Sprintf("%s snapshot, classic queue, one run each. The broker's frame_max is 128 KiB: larger bodies travel as several frames. Its max_message_size (16 MiB on 4.x, 128 MiB on 3.x) bounds --mss.", human(o.sweepSize)), t)
	return nil
}

// compressSection: effective (snapshot) MB/s of each --compress mode
// against the raw broker in the same run, on loopback (medians of
// -compress-runs alternating runs) and through a link shaped by a proxy
// (one run).
func compressSection(ctx context.Context, b *bench, e *env) error {
	o := b.o
	if !o.compress || len(o.codecs) == 0 {
		return nil
	}
	t := table{cols: []string{"link", "snapshot", "--compress", "wire / file", "effective MB/s", "raw broker MB/s", "effective / raw", "runs (effective / raw MB/s)"}}
	gen, err := b.sized(ctx, "compress.snap", o.compressSize, e.bpr, "")
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
	inputs := []struct {
		name string
		s    snapshot
	}{{"generated", gen}, {"low-entropy", low}}
	n := e.segs(gen.bytes, o.mss)
	for _, link := range []int{0, o.linkRate} {
		name, runs := "loopback", max(o.compressRuns, 1)
		if link > 0 {
			name, runs = fmt.Sprintf("shaped, nominal %d MB/s", link/1e6), 1
		}
		// rates[input][codec] and raws, one per run, alternating.
		eff := make([][][]float64, len(inputs))
		wire := make([][]int64, len(inputs))
		for i := range inputs {
			eff[i], wire[i] = make([][]float64, len(o.codecs)), make([]int64, len(o.codecs))
		}
		var raws []float64
		err := b.viaLink(link, func() error {
			for run := range runs {
				d, err := b.raw(ctx, "classic", o.mss+8, n, "", o.rawAckEvery)
				if err != nil {
					return err
				}
				raws = append(raws, mbps(gen.bytes, d))
				for i, in := range inputs {
					for c, codec := range o.codecs {
						r, err := b.e2e(ctx, in.s, "classic", o.mss, []string{"--compress", codec}, nil)
						if err != nil {
							return err
						}
						eff[i][c] = append(eff[i][c], mbps(in.s.bytes, r.elapsed))
						wire[i][c] = r.wireBytes
						b.logf("compress %s run %d %s %s: %.1f MB/s effective, %d wire bytes; raw %.1f MB/s", name, run+1, in.name, codec, eff[i][c][run], r.wireBytes, raws[run])
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		raw := median(raws)
		for i, in := range inputs {
			for c, codec := range o.codecs {
				m := median(eff[i][c])
				ratio := fmt.Sprintf("%.2f", m/raw)
				if in.name == "generated" && link == 0 && m >= 1.2*raw {
					ratio = "**" + ratio + "**"
				}
				pairs := make([]string, len(eff[i][c]))
				for r := range pairs {
					pairs[r] = fmt.Sprintf("%.0f / %.0f", eff[i][c][r], raws[r])
				}
				t.add(name, fmt.Sprintf("%s, %s", in.name, human(o.compressSize)), codec,
					fmt.Sprintf("%.2f", float64(wire[i][c])/float64(in.s.bytes)), fmt.Sprintf("%.1f", m), fmt.Sprintf("%.1f", raw), ratio, strings.Join(pairs, "; "))
			}
		}
	}
	b.section("Compression", fmt.Sprintf("`producer --compress MODE`, classic queue, MSS %d. **s2** and **zstd** (fastest level) pack every payload and keep the packed form when smaller; **auto** packs with S2 only while it pays (at least an eighth saved, and the saved bytes would take the publisher longer than the packing took). Effective MB/s is snapshot bytes over wall time; the raw broker is the plain amqp091-go baseline moving bodies of MSS+8 bytes, as many as the generated snapshot has segments, alternating with the segmq runs. Loopback: medians of %d runs; goal: effective ≥ 1.2× raw on the generated snapshot (bold). Wire / file is payload bytes as published over the file's size. The shaped link (one run) is our TCP proxy between each client and the broker, limiting each direction of each connection as a slow network between the hosts would (it sleeps after each 32 KiB, so the real rate is below the nominal one: the raw column is the measured ceiling); the raw baseline runs through the same link.", o.mss, max(o.compressRuns, 1)), t)
	return nil
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
