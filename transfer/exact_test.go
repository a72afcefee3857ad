package transfer

// Regression tests for the issue "Exact or loud". Each test asserts what a
// user would check (the output file's bytes, the error text, what is left
// in the queue) and is bounded in time, so a livelock is a failure, not a
// hang. They use only the exported API and the helpers in transfer_test.go.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
)

// exactBound is the longest any single Receive or Send may take in these
// tests before it counts as a hang.
const exactBound = 30 * time.Second

type receiveOutcome struct {
	res   ReceiveResult
	err   error
	panic any
}

// receiveBounded runs Receive under a context that ends after bound, and
// recovers a panic so that one broken case does not take the whole test
// binary down. If Receive ignores its context, the test fails after a
// grace period instead of hanging.
func receiveBounded(t *testing.T, ctx context.Context, cfg ReceiveConfig, bound time.Duration) receiveOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	done := make(chan receiveOutcome, 1)
	go func() {
		var o receiveOutcome
		defer func() {
			if p := recover(); p != nil {
				o.panic = p
			}
			done <- o
		}()
		o.res, o.err = Receive(ctx, cfg)
	}()
	select {
	case o := <-done:
		return o
	case <-time.After(bound + 10*time.Second):
		// Not Fatal: this may run on a goroutine other than the test's.
		t.Errorf("Receive did not return %s after its context ended; stuck in:\n%s", 10*time.Second, receiverStacks())
		return receiveOutcome{err: errHung}
	}
}

var errHung = errors.New("Receive hung: did not return after its context ended")

// receiverStacks returns the stacks of goroutines inside Receive.
func receiverStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "transfer.Receive(") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// mustReceiveExact runs a bounded Receive and fails unless it succeeds.
func (e *env) mustReceiveExact(cfg ReceiveConfig) ReceiveResult {
	e.t.Helper()
	start := time.Now()
	o := receiveBounded(e.t, context.Background(), cfg, exactBound)
	if o.panic != nil {
		e.t.Fatalf("Receive panicked after %s: %v", time.Since(start).Round(time.Millisecond), o.panic)
	}
	if o.err != nil {
		e.t.Fatalf("Receive after %s: %v", time.Since(start).Round(time.Millisecond), o.err)
	}
	return o.res
}

// waitDepth polls a queue until it holds want ready messages (unacked
// deliveries of a closed connection take a moment to come back) and
// returns the last depth seen.
func (e *env) waitDepth(name string, want int, within time.Duration) int {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := e.queueDepth(name)
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func withoutHeader(in []msg, key string) []msg {
	out := make([]msg, len(in))
	for i, m := range in {
		h := amqp.Table{}
		for k, v := range m.headers {
			if k != key {
				h[k] = v
			}
		}
		out[i] = msg{body: m.body, headers: h}
	}
	return out
}

// Defect 1: parked segments acked before they are written. --window 1
// --ack-every 2, segment 0 arriving after 250 others.
func TestExactParkedNotAckedEarly(t *testing.T) {
	e := newEnv(t)
	const mss = 256
	data := randData(101, 300*mss-17)
	segs := segmqBodies(t, "parked", data, mss)
	if len(segs) != 300 {
		t.Fatalf("%d segments", len(segs))
	}
	var order []msg
	order = append(order, segs[1:251]...)
	order = append(order, segs[0])
	order = append(order, segs[251:]...)
	e.publish(order)
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.ReorderWindow, cfg.AckEvery = 1, 2
	e.mustReceiveExact(cfg)
	e.mustEqualFile(out, data)
	if n := e.waitDepth(e.topo.Name(), 0, 3*time.Second); n != 0 {
		t.Fatalf("%d messages left in the queue", n)
	}
}

// Defect 2: two transfers interleaved in one queue. The first Receive
// takes one of them, exactly, and leaves every segment of the other in
// the queue; a second Receive takes the other. On classic and quorum.
func TestExactTwoTransfersInterleaved(t *testing.T) {
	for _, qt := range []string{rabbit.Classic, rabbit.Quorum} {
		t.Run(qt, func(t *testing.T) {
			e := newEnv(t)
			e.topo.Type = qt
			const mss = 16 << 10
			data := map[string][]byte{
				"snap-a": randData(201, 10<<20+123),
				"snap-b": randData(202, 10<<20-4567),
			}
			ma, mb := segmqBodies(t, "snap-a", data["snap-a"], mss), segmqBodies(t, "snap-b", data["snap-b"], mss)
			count := map[string]int{"snap-a": len(ma), "snap-b": len(mb)}
			var msgs []msg
			for i := 0; i < max(len(ma), len(mb)); i++ {
				if i < len(ma) {
					msgs = append(msgs, ma[i])
				}
				if i < len(mb) {
					msgs = append(msgs, mb[i])
				}
			}
			e.publish(msgs)

			out1 := filepath.Join(e.dir, "first.bin")
			cfg := e.receiveCfg(out1)
			cfg.Timeout = 20 * time.Second
			r1 := e.mustReceiveExact(cfg)
			want1, ok := data[r1.Transfer]
			if !ok {
				t.Fatalf("first Receive took transfer %q", r1.Transfer)
			}
			e.mustEqualFile(out1, want1)
			other := "snap-a"
			if r1.Transfer == "snap-a" {
				other = "snap-b"
			}
			if n := e.waitDepth(e.topo.Name(), count[other], 5*time.Second); n != count[other] {
				t.Fatalf("after transfer %s, the queue holds %d messages, want all %d of %s", r1.Transfer, n, count[other], other)
			}
			// No busy loop: each foreign segment is handled a bounded
			// number of times, not spun through the queue.
			if r1.SetAside > 10*count[other] || r1.Requeued != 0 {
				t.Errorf("first Receive set aside %d and requeued %d for %d foreign segments", r1.SetAside, r1.Requeued, count[other])
			}

			out2 := filepath.Join(e.dir, "second.bin")
			cfg = e.receiveCfg(out2)
			cfg.Timeout = 20 * time.Second
			r2 := e.mustReceiveExact(cfg)
			if r2.Transfer != other {
				t.Fatalf("second Receive took %q, want %q", r2.Transfer, other)
			}
			e.mustEqualFile(out2, data[other])
			if n := e.waitDepth(e.topo.Name(), 0, 3*time.Second); n != 0 {
				t.Fatalf("%d messages left", n)
			}
		})
	}
}

var lockRE = regexp.MustCompile(`(?i)lock|in use|another (consumer|process|receive)|already`)

// Defect 4: two consumers on one --out. The second fails at once with an
// error naming the lock; the first then restores the file exactly. With
// Restart, the second must not truncate the first's .part either.
func TestExactTwoConsumersOneOut(t *testing.T) {
	for _, tc := range []struct {
		name    string
		durable bool // the second starts after the first has saved its state
		restart bool
	}{
		{"before-first-flush", false, false},
		{"resume", true, false},
		{"restart", true, true},
	} {
		restart := tc.restart
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			const mss = 1000
			data := randData(401, 40*mss+5)
			segs := segmqBodies(t, "one-out", data, mss)
			out := filepath.Join(e.dir, "out.bin")

			var placed atomic.Int64
			cfg := e.receiveCfg(out)
			cfg.Timeout = 25 * time.Second
			cfg.Progress = func(n, total int64) { placed.Store(n) }
			if !tc.durable {
				cfg.AckEvery, cfg.AckInterval = 1000, 10*time.Minute // no flush until the end
			}
			first := make(chan receiveOutcome, 1)
			go func() { first <- receiveBounded(t, context.Background(), cfg, exactBound) }()

			e.publish(segs[:20])
			deadline := time.Now().Add(10 * time.Second)
			for placed.Load() < 20*mss && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if placed.Load() < 20*mss {
				t.Fatalf("first consumer placed %d bytes in 10s", placed.Load())
			}
			if tc.durable {
				// Wait until the first consumer has saved its state and
				// acked what it placed.
				deadline := time.Now().Add(5 * time.Second)
				for {
					if _, err := os.Stat(out + ".part.state"); err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("first consumer saved no state in 5s")
					}
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(100 * time.Millisecond) // the ack follows the state
			}
			before, err := os.ReadFile(out + ".part")
			if err != nil {
				t.Fatal(err)
			}

			cfg2 := e.receiveCfg(out)
			cfg2.Restart = restart
			cfg2.Timeout = 20 * time.Second
			ctx2, cancel2 := context.WithCancel(context.Background())
			second := make(chan receiveOutcome, 1)
			go func() { second <- receiveBounded(t, ctx2, cfg2, exactBound) }()
			var o2 receiveOutcome
			select {
			case o2 = <-second:
				cancel2()
			case <-time.After(5 * time.Second):
				cancel2()
				o2 = <-second
				t.Errorf("second consumer on the same --out still running after 5s (ended by cancel: %v)", o2.err)
			}
			if o2.panic != nil {
				t.Fatalf("second consumer panicked: %v", o2.panic)
			}
			if o2.err == nil || !lockRE.MatchString(o2.err.Error()) {
				t.Errorf("second consumer: err = %v; want an error naming the lock / the other consumer", o2.err)
			}
			after, err := os.ReadFile(out + ".part")
			switch {
			case err != nil:
				t.Errorf("first consumer's .part after the second ran: %v", err)
			case len(after) < 20*mss || !bytes.Equal(after[:20*mss], before[:20*mss]):
				t.Errorf("the second consumer changed the first's .part: %d bytes before, %d after, equal prefix %d", len(before), len(after), commonPrefix(before, after))
			}

			e.publish(segs[20:])
			o1 := <-first
			if o1.panic != nil || o1.err != nil {
				t.Fatalf("first consumer: err %v, panic %v", o1.err, o1.panic)
			}
			e.mustEqualFile(out, data)
		})
	}
}

// slowSend starts Send on a file slow enough to change under it (small
// MSS, confirm window 1) and calls change once the producer has published
// about a MiB, long before the read-ahead reaches the middle of the file.
func slowSend(t *testing.T, e *env, in string, change func(*os.File)) (SendResult, error) {
	t.Helper()
	var fired atomic.Bool
	changed := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*exactBound)
	defer cancel()
	type outcome struct {
		res SendResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := Send(ctx, in, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 4096, ConfirmWindow: 1, Raw: true, State: "-", Log: e.log,
			Progress: func(n int64) {
				if n >= 1<<20 && !fired.Swap(true) {
					f, err := os.OpenFile(in, os.O_RDWR, 0)
					if err != nil {
						t.Error(err)
					} else {
						change(f)
						f.Close()
					}
					close(changed)
				}
			}})
		done <- outcome{res, err}
	}()
	o := <-done
	if !fired.Load() {
		t.Fatalf("Send ended before 1 MiB was published (err %v); make it slower", o.err)
	}
	<-changed
	return o.res, o.err
}

var changedRE = regexp.MustCompile(`(?i)changed|modified`)

// Defect 5: an input overwritten (same size) during the send must not be
// delivered as verified: Send says the input changed, and/or the
// consumer refuses to produce --out. Never both succeed with a file that
// differs from the original.
func TestExactInputChangedDuringSend(t *testing.T) {
	e := newEnv(t)
	const size = 12 << 20
	data := randData(501, size)
	in := e.file("in.bin", data)
	_, sendErr := slowSend(t, e, in, func(f *os.File) {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, 4096), size/2); err != nil {
			t.Error(err)
		}
	})
	if sendErr != nil && !changedRE.MatchString(sendErr.Error()) {
		t.Errorf("Send: %v; want an error saying the input changed", sendErr)
	}
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 5 * time.Second
	o := receiveBounded(t, context.Background(), cfg, exactBound)
	if o.panic != nil {
		t.Fatalf("Receive panicked: %v", o.panic)
	}
	if sendErr == nil && o.err == nil {
		got, _ := os.ReadFile(out)
		t.Fatalf("input changed during the send, yet Send and Receive both succeeded (verified=%v); out equals the original: %v, equal prefix %d of %d",
			o.res.Verified, bytes.Equal(got, data), commonPrefix(got, data), len(data))
	}
	if o.err != nil {
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Receive failed (%v) but wrote --out", o.err)
		}
	}
}

// Defect 5, truncated: the error says the input changed, not "unexpected EOF".
func TestExactInputTruncatedDuringSend(t *testing.T) {
	e := newEnv(t)
	const size = 12 << 20
	data := randData(502, size)
	in := e.file("in.bin", data)
	_, sendErr := slowSend(t, e, in, func(f *os.File) {
		if err := f.Truncate(size / 2); err != nil {
			t.Error(err)
		}
	})
	if sendErr == nil || !changedRE.MatchString(sendErr.Error()) {
		t.Fatalf("Send: %v; want an error saying the input changed", sendErr)
	}
}

// Defect 6: one malformed message of a bogus transfer at the head of the
// queue must not bind the consumer to that transfer.
func TestExactBogusFirstMessage(t *testing.T) {
	e := newEnv(t)
	const mss = 500
	data := randData(601, 30*mss+9)
	bogusPayload := randData(602, mss)
	h := SegmentHeaders("BOGUS", mss, int64(3*mss), bogusPayload, "")
	h[HdrCRC] = int64(crc32.Checksum(bogusPayload, castagnoli) ^ 0xdeadbeef)
	hdr := segment.Header{Seq: 0, Total: 3}.Bytes()
	bogus := msg{body: append(hdr[:], bogusPayload...), headers: h}
	e.publish(append([]msg{bogus}, segmqBodies(t, "real", data, mss)...))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 10 * time.Second
	res := e.mustReceiveExact(cfg)
	e.mustEqualFile(out, data)
	if res.Transfer != "real" {
		t.Fatalf("took transfer %q", res.Transfer)
	}
	if n := e.waitDepth(e.topo.DeadQueue(), 1, 5*time.Second); n != 1 {
		t.Fatalf("dead-letter queue holds %d, want 1", n)
	}
}

// Defect 7: Receive with a Transfer id and more foreign segments than the
// prefetch ahead of it must not panic; it restores the wanted transfer
// and leaves the foreign ones in the queue.
func TestExactSelectedTransferBehindForeign(t *testing.T) {
	e := newEnv(t)
	const mss = 300
	foreign := segmqBodies(t, "foreign", randData(701, 20*mss), mss)
	data := randData(702, 10*mss+1)
	e.publish(append(append([]msg(nil), foreign...), segmqBodies(t, "wanted", data, mss)...))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Transfer, cfg.Prefetch, cfg.Timeout = "wanted", 4, 15*time.Second
	res := e.mustReceiveExact(cfg)
	e.mustEqualFile(out, data)
	if res.Transfer != "wanted" {
		t.Fatalf("took %q", res.Transfer)
	}
	if n := e.waitDepth(e.topo.Name(), len(foreign), 5*time.Second); n != len(foreign) {
		t.Fatalf("queue holds %d, want the %d foreign segments", n, len(foreign))
	}
}

// zstdZeros returns one zstd frame that decodes to n zero bytes.
func zstdZeros(t *testing.T, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderCRC(false), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(enc, zeroReader{}, n); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Defect 8: the consumer trusts the MSS header. Two small zstd messages
// whose segmq-mss is twice what any segmq producer may send (MaxMSS)
// claim a file of 2×MSS zeros with valid CRCs and the true SHA-256. They
// must be dead-lettered, not assembled into a huge file. (The reviewer
// used an MSS of 1 GiB: 2.1 GB RSS, a 2 GiB file, exit 0; 32 MiB shows the
// same trust at a cost a test can afford.)
func TestExactHugeMSSRefused(t *testing.T) {
	e := newEnv(t)
	const mss = 32 << 20
	frame := zstdZeros(t, mss)
	sum := sha256.Sum256(make([]byte, 2*mss))
	var msgs []msg
	for seq := uint32(0); seq < 2; seq++ {
		h := SegmentHeaders("huge", mss, 2*mss, frame, hex.EncodeToString(sum[:]))
		h[HdrEncoding] = EncodingZstd
		hdr := segment.Header{Seq: seq, Total: 2}.Bytes()
		msgs = append(msgs, msg{body: append(hdr[:], frame...), headers: h})
	}
	t.Logf("two messages of %d bytes claiming mss %d", len(msgs[0].body), mss)
	e.publish(msgs)
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 3 * time.Second
	o := receiveBounded(t, context.Background(), cfg, exactBound)
	if o.panic != nil {
		t.Fatalf("Receive panicked: %v", o.panic)
	}
	if o.err == nil {
		fi, _ := os.Stat(out)
		var n int64
		if fi != nil {
			n = fi.Size()
		}
		t.Fatalf("Receive accepted segments with segmq-mss %d > MaxMSS %d: exit ok, verified=%v, %s is %d bytes", mss, MaxMSS, o.res.Verified, out, n)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s written", out)
	}
	if fi, err := os.Stat(out + ".part"); err == nil && fi.Size() > MaxMSS {
		t.Fatalf("%s.part grew to %d bytes", out, fi.Size())
	}
	if n := e.waitDepth(e.topo.DeadQueue(), 2, 5*time.Second); n != 2 {
		t.Fatalf("dead-letter queue holds %d, want 2", n)
	}
	if !regexp.MustCompile(`(?i)segment dead-lettered.*mss`).MatchString(e.logs.String()) {
		t.Fatal("no dead-letter log line mentioning the mss")
	}
}

// Defect 8, second part: a segmq transfer whose segments carry no
// SHA-256 at all must not be reported as verified or renamed as if it
// were; the error says the SHA-256 is missing.
func TestExactMissingSHA256NotVerified(t *testing.T) {
	e := newEnv(t)
	const mss = 700
	data := randData(801, 12*mss+3)
	e.publish(withoutHeader(segmqBodies(t, "nosha", data, mss), HdrSHA256))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 10 * time.Second
	o := receiveBounded(t, context.Background(), cfg, exactBound)
	if o.panic != nil {
		t.Fatalf("Receive panicked: %v", o.panic)
	}
	if o.err == nil || !regexp.MustCompile(`(?i)sha-?256`).MatchString(o.err.Error()) || !regexp.MustCompile(`(?i)missing|no sha|without|not sent|absent`).MatchString(o.err.Error()) {
		_, statErr := os.Stat(out)
		t.Fatalf("Receive: err = %v, verified = %v, %s exists: %v; want an error saying the SHA-256 is missing", o.err, o.res.Verified, out, statErr == nil)
	}
	if o.res.Verified {
		t.Fatal("reported as verified")
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s renamed into place without a SHA-256", out)
	}
}

// Defect 10, library side: a prefetch the AMQP field cannot carry
// (uint16) must be refused, not truncated to 0 (= unlimited).
func TestExactPrefetchTooLarge(t *testing.T) {
	e := newEnv(t)
	cfg := e.receiveCfg(filepath.Join(e.dir, "out.bin"))
	cfg.Prefetch, cfg.Timeout = 65536, 2*time.Second
	o := receiveBounded(t, context.Background(), cfg, exactBound)
	if o.err == nil || !regexp.MustCompile(`65535`).MatchString(o.err.Error()) || !regexp.MustCompile(`(?i)prefetch`).MatchString(o.err.Error()) {
		t.Fatalf("Receive with Prefetch 65536: err = %v; want an error naming prefetch and the 65535 limit", o.err)
	}
}

// Defect 11: with a prefetch smaller than the ack batch, the batch never
// fills; the consumer must still flush and ack so the broker can send
// more. 64 segments, prefetch 4, a batch of 1000 and a 10-minute interval
// must complete (bounded at 30 s).
func TestExactSmallPrefetchCompletes(t *testing.T) {
	e := newEnv(t)
	const mss = 1024
	data := randData(1101, 64*mss)
	e.publish(segmqBodies(t, "small-prefetch", data, mss))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Prefetch, cfg.AckEvery, cfg.AckInterval, cfg.Timeout = 4, 1000, 10*time.Minute, 20*time.Second
	e.mustReceiveExact(cfg)
	e.mustEqualFile(out, data)
}

// Defect 12: on the way out after a failure, what is on disk is acked, so
// the queue holds only what was not placed, and a resumed run sees no
// duplicates. Two ways out: ReceiveConfig.Timeout, and the caller's
// context (Ctrl-C). A long AckInterval and a large batch keep the
// periodic flush from doing the job first.
func TestExactAckOnExit(t *testing.T) {
	for _, how := range []string{"timeout", "cancel"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			const mss = 400
			data := randData(1201, 21*mss)
			segs := segmqBodies(t, "exit-"+how, data, mss)
			missing := segs[13]
			e.publish(append(append([]msg(nil), segs[:13]...), segs[14:]...))
			out := filepath.Join(e.dir, "out.bin")
			cfg := e.receiveCfg(out)
			cfg.AckEvery, cfg.AckInterval = 1000, 10*time.Minute
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var placed atomic.Int64
			switch how {
			case "timeout":
				cfg.Timeout = 2 * time.Second
			case "cancel":
				cfg.Timeout = 0
				cfg.Progress = func(n, total int64) {
					if placed.Add(1) == 20 {
						cancel()
					}
				}
			}
			start := time.Now()
			o := receiveBounded(t, ctx, cfg, exactBound)
			if o.panic != nil {
				t.Fatalf("Receive panicked: %v", o.panic)
			}
			if !errors.Is(o.err, ErrIncomplete) {
				t.Fatalf("err = %v, want ErrIncomplete", o.err)
			}
			if how == "timeout" && (time.Since(start) > 15*time.Second || !regexp.MustCompile(`timed out`).MatchString(o.err.Error())) {
				t.Errorf("ReceiveConfig.Timeout 2s: ended after %s with %v", time.Since(start).Round(time.Millisecond), o.err)
			}
			if n := e.waitDepth(e.topo.Name(), 0, 3*time.Second); n != 0 {
				t.Errorf("after the failed run the queue holds %d messages, want 0: all 20 published segments were placed and must be acked", n)
			}
			e.publish([]msg{missing})
			cfg = e.receiveCfg(out)
			res := e.mustReceiveExact(cfg)
			e.mustEqualFile(out, data)
			if res.Duplicates != 0 || res.Resumed != 20 {
				t.Fatalf("resumed run: resumed %d duplicates %d, want 20 and 0", res.Resumed, res.Duplicates)
			}
		})
	}
}

// Found while writing these tests: a Receive whose context is cancelled
// sometimes never returns: session's deferred ch.Close waits for a
// close-ok (amqp091-go Channel.call) while ConsumeWithContext's own
// goroutine cancels the consumer on the same channel. Cancelling the
// context is how Ctrl-C stops the consumer, so it must return promptly.
func TestExactCancelReturns(t *testing.T) {
	e := newEnv(t)
	out := filepath.Join(e.dir, "out.bin")
	for i := 0; i < 30; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		cfg := e.receiveCfg(out)
		cfg.Timeout = 0
		done := make(chan error, 1)
		go func() {
			_, err := Receive(ctx, cfg)
			done <- err
		}()
		time.Sleep(time.Duration(50+i*17%250) * time.Millisecond)
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, ErrIncomplete) {
				t.Fatalf("run %d: err = %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d: Receive did not return 5s after its context was cancelled; stuck in:\n%s", i, receiverStacks())
		}
	}
}
