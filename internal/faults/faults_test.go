package faults

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/journal"
	"github.com/segmq/segmq/internal/localbroker"
	"github.com/segmq/segmq/internal/tcpproxy"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
	"github.com/segmq/segmq/snapfile"
	"github.com/segmq/segmq/transfer"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "segmq-faults-bin-")
	if err != nil {
		panic(err)
	}
	out, err := exec.Command("go", "build", "-o", dir+"/", "../../producer", "../../consumer").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	binDir = dir
	code := brokertest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func runs() int {
	n, _ := strconv.Atoi(os.Getenv("SEGMQ_FAULT_RUNS"))
	return max(n, 1)
}

// seed is the base seed of this run's randomised scenarios: 1 unless
// SEGMQ_FAULT_SEED says otherwise ("random": a new one, printed so that
// SEGMQ_FAULT_SEED=N reproduces the run). make test keeps 1; make faults
// draws one.
var seed = sync.OnceValue(func() uint64 {
	v := os.Getenv("SEGMQ_FAULT_SEED")
	if v == "random" {
		s := rand.Uint64N(1_000_000_000) + 1
		fmt.Printf("FAULT SEED %d: SEGMQ_FAULT_SEED=%d make faults reproduces this run\n", s, s)
		return s
	}
	s, _ := strconv.ParseUint(v, 10, 64)
	return max(s, 1)
})

func baseSeed() uint64 { return seed() }

// forEachRun runs a randomised scenario with recorded seeds and logs one
// MATRIX line per run.
func forEachRun(t *testing.T, scenario string, f func(t *testing.T, r *rand.Rand) string) {
	for i := range runs() {
		seed := baseSeed() + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			detail := f(t, rand.New(rand.NewPCG(seed, seed)))
			t.Logf("MATRIX scenario=%s run=%d seed=%d result=exact %s", scenario, i+1, seed, detail)
		})
	}
}

type fixture struct {
	t     *testing.T
	dir   string
	queue string
	url   string
	in    string
	data  []byte
}

func newFixture(t *testing.T, rows int64) *fixture {
	t.Helper()
	return fixtureOn(t, brokertest.URL(t), brokertest.Queue(t), rows)
}

// fixtureOn is a fixture for queue on the broker at url, its input a
// generated snapshot of rows rows.
func fixtureOn(t *testing.T, url, queue string, rows int64) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), queue: queue, url: url}
	f.in = filepath.Join(f.dir, "db.bin")
	var buf bytes.Buffer
	if _, err := snapfile.Gen(context.Background(), &buf, snapfile.GenOptions{Rows: rows, Workers: 2, Seed: uint64(rows)}); err != nil {
		t.Fatal(err)
	}
	f.data = buf.Bytes()
	if err := os.WriteFile(f.in, f.data, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// proc is a command started in the background.
type proc struct {
	cmd  *exec.Cmd
	out  brokertest.LogBuffer
	done chan struct{}
	err  error
}

func (f *fixture) start(url, name string, args ...string) *proc {
	f.t.Helper()
	p := &proc{cmd: exec.Command(filepath.Join(binDir, name), append(args, "--queue", f.queue)...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "AMQP_URL="+url)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	f.t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

// wait waits for the process and returns its exit code.
func (p *proc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s still running after %s:\n%s", p.cmd.Path, limit, p.out.String())
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

func (p *proc) kill() { p.cmd.Process.Signal(syscall.SIGKILL) }

func (f *fixture) out() string { return filepath.Join(f.dir, "restored.bin") }

// exact checks that the restored file is byte-identical and returns a
// short description for the matrix.
func (f *fixture) exact() string {
	f.t.Helper()
	got, err := os.ReadFile(f.out())
	if err != nil {
		f.t.Fatal(err)
	}
	if !bytes.Equal(got, f.data) {
		f.t.Fatalf("restored %d bytes, want %d: NOT EXACT", len(got), len(f.data))
	}
	sum := sha256.Sum256(got)
	return fmt.Sprintf("bytes=%d sha256=%s", len(got), hex.EncodeToString(sum[:8]))
}

// slowURL returns a URL through a proxy limited to rate bytes/s, so
// that a transfer lasts long enough for a fault to land in the middle.
func (f *fixture) slowURL(rate int) (string, *tcpproxy.Proxy) {
	f.t.Helper()
	up := strings.TrimSuffix(strings.SplitN(f.url, "@", 2)[1], "/")
	px, err := tcpproxy.New(up)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { px.Close() })
	px.SetRate(rate)
	return strings.Replace(f.url, up, px.Addr, 1), px
}

func mustExit(t *testing.T, p *proc, want int, limit time.Duration) {
	t.Helper()
	if code := p.wait(t, limit); code != want {
		t.Fatalf("%s exited %d, want %d:\n%s", filepath.Base(p.cmd.Path), code, want, p.out.String())
	}
}

const mss = "16384"

// TestProducerKillResume: the producer is SIGKILLed at a random point;
// `producer --resume` continues the same transfer.
func TestProducerKillResume(t *testing.T) {
	forEachRun(t, "producer-sigkill-resume", func(t *testing.T, r *rand.Rand) string {
		f := newFixture(t, 300_000) // ~22 MB: about 2 s through the 10 MB/s proxy
		slow, _ := f.slowURL(10 << 20)
		cons := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "60s")
		prod := f.start(slow, "producer", "--in", f.in, "--mss", mss, "--confirm-window", "32")
		delay := time.Duration(100+r.IntN(1200)) * time.Millisecond
		time.Sleep(delay)
		prod.kill()
		if code := prod.wait(t, 30*time.Second); code == 0 {
			t.Fatalf("the producer finished before the kill at %s: the fault did not land", delay)
		}
		again := f.start(f.url, "producer", "--in", f.in, "--mss", mss, "--resume")
		mustExit(t, again, 0, 60*time.Second)
		resumed := "killed-after=" + delay.String() + " producer-" + field(again.out.String(), "resumed")
		mustExit(t, cons, 0, 60*time.Second)
		if _, err := os.Stat(f.in + ".segmq-send"); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("producer state left behind after a complete transfer")
		}
		return resumed + " " + f.exact()
	})
}

// TestConsumerKillRestart: the consumer is SIGKILLed at a random point and
// started again; it resumes from .part and its state.
func TestConsumerKillRestart(t *testing.T) {
	forEachRun(t, "consumer-sigkill-restart", func(t *testing.T, r *rand.Rand) string {
		f := newFixture(t, 300_000)
		slow, _ := f.slowURL(10 << 20)
		cons := f.start(slow, "consumer", "--out", f.out(), "--timeout", "60s")
		prod := f.start(f.url, "producer", "--in", f.in, "--mss", mss)
		delay := time.Duration(300+r.IntN(1200)) * time.Millisecond
		time.Sleep(delay)
		// The kill lands after at least one batch is durable (so that
		// there is something to resume), at a random point after that.
		placed := waitPlaced(t, f.out()+".part.state", 30*time.Second)
		cons.kill()
		if code := cons.wait(t, 30*time.Second); code == 0 {
			t.Fatalf("the consumer finished before the kill at %s: the fault did not land", delay)
		}
		mustExit(t, prod, 0, 60*time.Second)
		again := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "60s")
		mustExit(t, again, 0, 60*time.Second)
		if n := resumedCount(t, again.out.String()); n < placed {
			t.Fatalf("the restarted consumer resumed %d segments; its journal recorded %d as durable before the kill:\n%s", n, placed, again.out.String())
		}
		return "killed-after=" + delay.String() + " consumer-" + field(again.out.String(), "resumed") + " " + f.exact()
	})
}

// waitPlaced waits until the consumer's journal records placed
// segments and returns how many (at least 1).
func waitPlaced(t *testing.T, state string, limit time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		n := 0
		if recs, err := journal.Read(state, 'C'); err == nil {
			for _, r := range recs {
				if r.Type != 'P' || len(r.Data) < 17 {
					continue
				}
				for rest := r.Data[17:]; len(rest) >= 8; rest = rest[8:] {
					n += int(uint32(rest[4]) | uint32(rest[5])<<8 | uint32(rest[6])<<16 | uint32(rest[7])<<24)
				}
			}
		}
		if n > 0 {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no batch recorded in %s after %s", state, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// resumedCount is N of "resumed N" in the consumer's summary line.
func resumedCount(t *testing.T, out string) int {
	t.Helper()
	v := strings.TrimPrefix(field(out, "resumed"), "resumed=")
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("no resumed count in the summary:\n%s", out)
	}
	return n
}

// field extracts "name N" from a summary line.
func field(s, name string) string {
	i := strings.Index(s, name+" ")
	if i < 0 {
		return name + "=?"
	}
	rest := s[i+len(name)+1:]
	j := strings.IndexAny(rest, ",;")
	if j < 0 {
		j = len(rest)
	}
	return name + "=" + rest[:j]
}

// TestBrokerRestart stops the broker mid-transfer and starts it again with
// its data: the durable queue and persistent messages survive, both
// commands reconnect, unconfirmed segments are republished.
func TestBrokerRestart(t *testing.T) {
	b := brokertest.Local(t)
	forEachRun(t, "broker-restart", func(t *testing.T, r *rand.Rand) string {
		f := newFixture(t, 300_000)
		slow, _ := f.slowURL(10 << 20)
		cons := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "90s")
		prod := f.start(slow, "producer", "--in", f.in, "--mss", mss, "--confirm-window", "32", "--timeout", "90s")
		delay := time.Duration(200+r.IntN(1000)) * time.Millisecond
		time.Sleep(delay)
		if err := b.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		mustExit(t, prod, 0, 120*time.Second)
		mustExit(t, cons, 0, 120*time.Second)
		if field(prod.out.String(), "reconnects") == "reconnects=0" {
			t.Fatalf("the producer never reconnected: the restart did not land mid-transfer\n%s", prod.out.String())
		}
		return "stopped-after=" + delay.String() + " producer-" + field(prod.out.String(), "reconnects") +
			" consumer-" + field(cons.out.String(), "reconnects") + " " + f.exact()
	})
}

// TestConnectionReset cuts every connection through a proxy several times
// during a transfer.
func TestConnectionReset(t *testing.T) {
	forEachRun(t, "connection-reset", func(t *testing.T, r *rand.Rand) string {
		f := newFixture(t, 300_000)
		url, px := f.slowURL(15 << 20)
		cons := f.start(url, "consumer", "--out", f.out(), "--timeout", "60s")
		prod := f.start(url, "producer", "--in", f.in, "--mss", mss, "--confirm-window", "32", "--timeout", "60s")
		resets := 0
		for i := 0; i < 3; i++ {
			time.Sleep(time.Duration(150+r.IntN(300)) * time.Millisecond)
			if px.Reset() > 0 {
				resets++
			}
		}
		if resets == 0 {
			t.Fatal("no connection was live to reset: the fault did not land")
		}
		mustExit(t, prod, 0, 90*time.Second)
		mustExit(t, cons, 0, 90*time.Second)
		return fmt.Sprintf("resets=%d producer-%s consumer-%s %s", resets, field(prod.out.String(), "reconnects"), field(cons.out.String(), "reconnects"), f.exact())
	})
}

// publisher publishes segments of the fixture's file as the producer would.
func (f *fixture) publish(msgs []amqp.Publishing) {
	f.t.Helper()
	conn, err := amqp.Dial(f.url)
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close()
	if err := rabbit.Declare(conn, rabbit.Topology{Queue: f.queue}); err != nil {
		f.t.Fatal(err)
	}
	ch, _ := conn.Channel()
	defer ch.Close()
	ch.Confirm(false)
	for _, m := range msgs {
		m.DeliveryMode = amqp.Persistent
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", f.queue, false, false, m)
		if err != nil {
			f.t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			f.t.Fatalf("not confirmed: %v", err)
		}
	}
}

func (f *fixture) segments(id string, mssN int, sha string) []amqp.Publishing {
	s, err := segment.NewSplitter(bytes.NewReader(f.data), int64(len(f.data)), mssN)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []amqp.Publishing
	for seq := uint32(0); seq < s.Total(); seq++ {
		b, _ := s.Segment(seq, nil)
		out = append(out, amqp.Publishing{Body: b, Headers: transfer.SegmentHeaders(id, mssN, int64(len(f.data)), b[8:], sha)})
	}
	return out
}

func (f *fixture) sha() string { s := sha256.Sum256(f.data); return hex.EncodeToString(s[:]) }

func (f *fixture) deadCount() int {
	f.t.Helper()
	q, err := brokertest.Inspect(f.t, f.url, f.queue+".dead")
	if err != nil {
		f.t.Fatal(err)
	}
	return q.Messages
}

// TestCorruptCopyWaitsForGood: a segment whose payload was corrupted in
// flight (CRC-32C mismatch) is dead-lettered; the consumer waits, and a
// good copy published later completes the transfer.
func TestCorruptCopyWaitsForGood(t *testing.T) {
	f := newFixture(t, 20_000)
	msgs := f.segments("corrupt-test", 8192, f.sha())
	k := len(msgs) / 2
	bad := msgs[k]
	bad.Body = append([]byte(nil), bad.Body...)
	bad.Body[100] ^= 0xFF
	f.publish(append(append(append([]amqp.Publishing{}, msgs[:k]...), bad), msgs[k+1:]...))
	cons := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "30s")
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-cons.done:
		t.Fatalf("consumer finished without the good copy:\n%s", cons.out.String())
	default:
	}
	f.publish([]amqp.Publishing{msgs[k]})
	mustExit(t, cons, 0, 30*time.Second)
	f.exact()
	if !strings.Contains(cons.out.String(), "CRC-32C") || f.deadCount() != 1 {
		t.Fatalf("dead-letter queue holds %d, logs:\n%s", f.deadCount(), cons.out.String())
	}
}

// TestDigestMismatch: every segment is self-consistent but the file's
// SHA-256 is not the one announced: --out stays untouched, .part is kept
// for inspection, exit 1 with a clear message.
func TestDigestMismatch(t *testing.T) {
	f := newFixture(t, 5_000)
	wrong := strings.Repeat("ab", 32)
	f.publish(f.segments("digest-test", 8192, wrong))
	cons := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "30s")
	mustExit(t, cons, 1, 30*time.Second)
	if !strings.Contains(cons.out.String(), "does not match the producer's digest") || !strings.Contains(cons.out.String(), "kept for inspection") {
		t.Fatalf("output:\n%s", cons.out.String())
	}
	if _, err := os.Stat(f.out()); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("--out written despite a digest mismatch")
	}
	part, err := os.ReadFile(f.out() + ".part")
	if err != nil || !bytes.Equal(part, f.data) {
		t.Fatalf(".part not kept intact: %v", err)
	}
}

// TestDiskFull: the consumer's disk (a 1 MiB tmpfs) fills up: a clear
// error, nothing lost; with room again, the transfer resumes.
func TestDiskFull(t *testing.T) {
	f := newFixture(t, 40_000) // ~3 MB
	small := filepath.Join(f.dir, "small")
	os.Mkdir(small, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (the test runs as root, like CI): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", small).Run() })
	out := filepath.Join(small, "restored.bin")
	mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", "8192"), 0, 30*time.Second)
	// Small batches, so that some are durable before the disk is full
	// (a default batch of 64 segments is half of this 1 MiB disk).
	cons := f.start(f.url, "consumer", "--out", out, "--timeout", "30s", "--ack-every", "16")
	mustExit(t, cons, 1, 30*time.Second)
	if s := cons.out.String(); !strings.Contains(s, "write "+out+".part: ") || !strings.Contains(s, "no space left on device") || !strings.Contains(s, "run again to resume") {
		t.Fatalf("output:\n%s", s)
	}
	saved := waitPlaced(t, out+".part.state", time.Second)
	if o, err := exec.Command("mount", "-o", "remount,size=16m", small).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, o)
	}
	again := f.start(f.url, "consumer", "--out", out, "--timeout", "30s")
	mustExit(t, again, 0, 30*time.Second)
	if n := resumedCount(t, again.out.String()); n != saved {
		t.Fatalf("the second run resumed %d segments; the journal saved %d:\n%s", n, saved, again.out.String())
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, f.data) {
		t.Fatal("restored file differs after resuming")
	}
}

// TestMemoryAlarmPauses: with the broker's memory alarm on, publishing
// pauses with a log line (no error, no busy loop) and completes once the
// alarm clears.
func TestMemoryAlarmPauses(t *testing.T) {
	b := brokertest.Local(t)
	f := newFixture(t, 50_000)
	ctx := context.Background()
	if _, err := b.Ctl(ctx, "set_vm_memory_high_watermark", "0.000001"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Ctl(ctx, "set_vm_memory_high_watermark", "0.4") })
	logs := &brokertest.LogBuffer{}
	done := make(chan error, 1)
	start := time.Now()
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	go func() {
		_, err := transfer.Send(ctx, f.in, transfer.SendConfig{Dial: rabbit.DialConfig{URL: f.url}, Topology: rabbit.Topology{Queue: f.queue},
			MSS: 8192, State: "-", Log: slog.New(slog.NewTextHandler(logs, nil))})
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "broker blocked publishing") {
		if time.Now().After(deadline) {
			t.Fatalf("no blocked log line; logs:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	if wall := time.Since(start); cpu > wall/2 {
		t.Errorf("used %s CPU in %s while blocked: a busy loop?", cpu, wall)
	}
	select {
	case err := <-done:
		t.Fatalf("Send returned while the broker was blocked: %v", err)
	default:
	}
	if _, err := b.Ctl(ctx, "set_vm_memory_high_watermark", "0.4"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cons := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "30s")
	mustExit(t, cons, 0, 30*time.Second)
	f.exact()
}

// TestBrokerStaysDown: the broker goes away mid-transfer and does not
// come back (the proxy refuses every new connection): both commands end
// with a clear error after --timeout, and the consumer keeps its .part.
func TestBrokerStaysDown(t *testing.T) {
	f := newFixture(t, 300_000)
	url, px := f.slowURL(10 << 20)
	cons := f.start(url, "consumer", "--out", f.out(), "--timeout", "2s")
	prod := f.start(url, "producer", "--in", f.in, "--mss", mss, "--timeout", "2s")
	time.Sleep(700 * time.Millisecond)
	px.SetDown(true)
	if px.Reset() == 0 {
		t.Fatal("no live connection to cut: the fault did not land")
	}
	mustExit(t, prod, 1, 30*time.Second)
	mustExit(t, cons, 1, 30*time.Second)
	if s := prod.out.String(); !strings.Contains(s, "gave up after 2s without a confirm") || !strings.Contains(s, "--resume") {
		t.Fatalf("producer output:\n%s", s)
	}
	if s := cons.out.String(); !strings.Contains(s, "gave up reconnecting after 2s") || !strings.Contains(s, "run again to resume") {
		t.Fatalf("consumer output:\n%s", s)
	}
	if _, err := os.Stat(f.out() + ".part"); err != nil {
		t.Fatalf(".part not kept: %v", err)
	}
	// The broker is back: resume both, and the file is exact.
	again := f.start(f.url, "producer", "--in", f.in, "--mss", mss, "--resume")
	mustExit(t, again, 0, 60*time.Second)
	mustExit(t, f.start(f.url, "consumer", "--out", f.out(), "--timeout", "30s"), 0, 60*time.Second)
	f.exact()
}

// TestMessageTooLarge: the broker refuses a body over its
// max_message_size by closing the channel (406, a soft error). That is
// final, not a lost connection: the producer must stop at once with
// advice, not reconnect and republish the same body for ever.
func TestMessageTooLarge(t *testing.T) {
	// A node of its own, configured at boot: RabbitMQ 4 reads
	// max_message_size once, so changing it at run time (which 3.x
	// honours) has no effect there.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := localbroker.Start(ctx, localbroker.Options{Config: "max_message_size = 8192", Root: localbroker.RootFromEnv()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	f := newFixture(t, 5_000)
	prod := f.start(b.URL, "producer", "--in", f.in, "--mss", "16384", "--state", "-")
	mustExit(t, prod, 1, 20*time.Second)
	out := prod.out.String()
	if !strings.Contains(out, "max_message_size") || !strings.Contains(out, "lower --mss") || strings.Contains(out, "reconnecting") {
		t.Fatalf("output:\n%s", out)
	}
}
