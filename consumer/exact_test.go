package main

// Regression tests for the issue "Exact or loud", through the consumer
// command as a user runs it: flags in, exit code and stderr out.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
	"github.com/segmq/segmq/transfer"
)

type exactMsg struct {
	body    []byte
	headers amqp.Table
}

// exactBodies cuts data as segmq's producer does, headers included.
func exactBodies(t *testing.T, id string, data []byte, mss int) []exactMsg {
	t.Helper()
	s, err := segment.NewSplitter(bytes.NewReader(data), int64(len(data)), mss)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	var out []exactMsg
	for seq := uint32(0); seq < s.Total(); seq++ {
		b, err := s.Segment(seq, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, exactMsg{body: b, headers: transfer.SegmentHeaders(id, mss, int64(len(data)), b[segment.HeaderSize:], hex.EncodeToString(sum[:]))})
	}
	return out
}

// exactPublish publishes msgs in order, persistent, with confirms.
func exactPublish(t *testing.T, queue string, msgs []exactMsg) {
	t.Helper()
	conn, err := amqp.Dial(brokertest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	topo := rabbit.Topology{Queue: queue}
	if err := rabbit.Declare(conn, topo); err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var dcs []*amqp.DeferredConfirmation
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", topo.Name(), false, false,
			amqp.Publishing{Body: m.body, Headers: m.headers, DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v", err)
		}
	}
}

func exactData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type cliOutcome struct {
	stdout, stderr string
	code           int
}

// runBounded runs the consumer command with a context that ends after
// bound, so a hang is a failure.
func runBounded(t *testing.T, ctx context.Context, bound time.Duration, args ...string) cliOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	done := make(chan cliOutcome, 1)
	go func() {
		var out, errb strings.Builder
		err := run(ctx, args, &out, &errb)
		code := cli.Report("consumer", err, &errb)
		done <- cliOutcome{out.String(), errb.String(), code}
	}()
	select {
	case o := <-done:
		return o
	case <-time.After(bound + 10*time.Second):
		t.Fatalf("consumer %v did not return after its context ended", args)
		return cliOutcome{}
	}
}

// Defect 10: --prefetch 65536 does not fit AMQP's 16-bit prefetch count;
// amqp091-go truncates it to 0 (= unlimited). It must be a usage error.
func TestExactPrefetchLimit(t *testing.T) {
	out := filepath.Join(t.TempDir(), "db.bin")
	for _, p := range []string{"65536", "70000"} {
		o := runBounded(t, context.Background(), 30*time.Second, "--out", out, "--url", brokertest.URL(t), "--queue", brokertest.Queue(t), "--timeout", "2s", "--prefetch", p)
		if o.code == 0 || !strings.Contains(o.stderr, "--prefetch") || !strings.Contains(o.stderr, "65535") {
			t.Errorf("--prefetch %s: exit %d, stderr %q; want a usage error naming --prefetch and the 65535 limit", p, o.code, o.stderr)
		}
	}
	// The limit itself is accepted.
	o := runBounded(t, context.Background(), 30*time.Second, "--out", out, "--url", brokertest.URL(t), "--queue", brokertest.Queue(t), "--timeout", "500ms", "--prefetch", "65535")
	if o.code != 1 || !strings.Contains(o.stderr, "timed out") {
		t.Errorf("--prefetch 65535: exit %d, stderr %q; want the ordinary timeout", o.code, o.stderr)
	}
}

// mustRestore fails the test unless the consumer exited 0 with exactly
// data at out.
func mustRestore(t *testing.T, o cliOutcome, out string, data []byte) {
	t.Helper()
	if o.code != 0 {
		t.Fatalf("exit %d, stderr %s", o.code, o.stderr)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatalf("output %d bytes, want %d", len(got), len(data))
	}
}

// Defect 1, as the issue ran it: consumer --window 1 --ack-every 2 with
// segment 0 published after 1..250.
func TestExactWindowOneAckEveryTwo(t *testing.T) {
	queue := brokertest.Queue(t)
	const mss = 256
	data := exactData(1, 300*mss)
	segs := exactBodies(t, "w1", data, mss)
	order := append(append(append([]exactMsg(nil), segs[1:251]...), segs[0]), segs[251:]...)
	exactPublish(t, queue, order)
	out := filepath.Join(t.TempDir(), "db.bin")
	o := runBounded(t, context.Background(), 30*time.Second, "--out", out, "--url", brokertest.URL(t), "--queue", queue, "--timeout", "20s", "--window", "1", "--ack-every", "2")
	mustRestore(t, o, out, data)
}

// Defect 8: a segmq transfer with no SHA-256 header on any segment must
// not end with exit 0 and a file at --out as if verified.
func TestExactMissingSHA256(t *testing.T) {
	queue := brokertest.Queue(t)
	data := exactData(2, 9000)
	segs := exactBodies(t, "nosha", data, 1000)
	for _, m := range segs {
		delete(m.headers, transfer.HdrSHA256)
	}
	exactPublish(t, queue, segs)
	out := filepath.Join(t.TempDir(), "db.bin")
	o := runBounded(t, context.Background(), 30*time.Second, "--out", out, "--url", brokertest.URL(t), "--queue", queue, "--timeout", "10s")
	if o.code == 0 || !regexp.MustCompile(`(?i)sha-?256`).MatchString(o.stderr) || !regexp.MustCompile(`(?i)missing|no sha|without|not sent|absent`).MatchString(o.stderr) {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit != 0 and an error saying the SHA-256 is missing", o.code, o.stdout, o.stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s written without a SHA-256 to verify it", out)
	}
}

// Defect 11: --prefetch 4 with the default --ack-every (64) must not wait
// for a batch that can never fill (a long --ack-interval makes the stall
// a failure instead of a slow run).
func TestExactSmallPrefetch(t *testing.T) {
	queue := brokertest.Queue(t)
	data := exactData(3, 64*1024)
	exactPublish(t, queue, exactBodies(t, "p4", data, 1024))
	out := filepath.Join(t.TempDir(), "db.bin")
	o := runBounded(t, context.Background(), 30*time.Second, "--out", out, "--url", brokertest.URL(t), "--queue", queue, "--timeout", "20s", "--prefetch", "4", "--ack-interval", "10m")
	mustRestore(t, o, out, data)
}

// Defect 4: a second consumer on the same --out fails at once, naming
// the lock, and the first still restores the file exactly.
func TestExactSecondConsumerSameOut(t *testing.T) {
	queue := brokertest.Queue(t)
	const mss = 1000
	data := exactData(4, 30*mss+1)
	segs := exactBodies(t, "same-out", data, mss)
	out := filepath.Join(t.TempDir(), "db.bin")
	url := brokertest.URL(t)
	first := make(chan cliOutcome, 1)
	go func() {
		first <- runBounded(t, context.Background(), 30*time.Second, "--out", out, "--url", url, "--queue", queue, "--timeout", "25s")
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(out + ".part"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first consumer made no .part in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	exactPublish(t, queue, segs[:10])
	time.Sleep(time.Second) // the first places and acks them
	start := time.Now()
	o := runBounded(t, context.Background(), 10*time.Second, "--out", out, "--url", url, "--queue", queue, "--timeout", "5s")
	if o.code == 0 || time.Since(start) > 4*time.Second || !regexp.MustCompile(`(?i)lock|in use|another|already`).MatchString(o.stderr) {
		t.Errorf("second consumer on the same --out: exit %d after %s, stderr %q; want an immediate failure naming the lock", o.code, time.Since(start).Round(time.Millisecond), o.stderr)
	}
	exactPublish(t, queue, segs[10:])
	o1 := <-first
	if o1.code != 0 {
		t.Fatalf("first consumer: exit %d, stderr %s", o1.code, o1.stderr)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatalf("output %d bytes, want %d", len(got), len(data))
	}
}

// depth returns the number of ready messages in a queue.
func depth(t *testing.T, queue string) int {
	t.Helper()
	q, err := brokertest.Inspect(t, brokertest.URL(t), queue)
	if err != nil {
		t.Fatalf("inspect %s: %v", queue, err)
	}
	return q.Messages
}
