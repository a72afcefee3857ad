package transfer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/rabbit"
)

// newStreamEnv is newEnv on a stream (QUEUE and QUEUE.index, both
// deleted after the test).
func newStreamEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.topo.Type = rabbit.Stream
	t.Cleanup(func() {
		if conn, err := amqp.Dial(e.url); err == nil {
			defer conn.Close()
			if ch, err := conn.Channel(); err == nil {
				ch.QueueDelete(e.topo.IndexQueue(), false, false, false)
			}
		}
	})
	return e
}

// streamMessage is one message read back from a stream.
type streamMessage struct {
	offset   int64
	kind     string
	transfer string
}

// readStream reads the stream from its first message up to and including
// the done marker of transfer.
func (e *env) readStream(transfer string) []streamMessage {
	e.t.Helper()
	ch := e.channel()
	defer ch.Close()
	if err := ch.Qos(100, 0, false); err != nil {
		e.t.Fatal(err)
	}
	ds, err := ch.Consume(e.topo.Name(), "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []streamMessage
	for {
		select {
		case d := <-ds:
			d.Ack(false)
			off, _ := asInt(d.Headers["x-stream-offset"])
			kind, _ := d.Headers[HdrKind].(string)
			tr, _ := d.Headers[HdrTransfer].(string)
			out = append(out, streamMessage{off, kind, tr})
			if kind == KindDone && tr == transfer {
				return out
			}
		case <-time.After(10 * time.Second):
			e.t.Fatalf("no done marker of %s in the stream after %d messages", transfer, len(out))
		}
	}
}

func (e *env) sendStream(path, id string, mss int) SendResult {
	e.t.Helper()
	res, err := Send(context.Background(), path, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Transfer: id, Raw: true, Log: e.log})
	if err != nil {
		e.t.Fatalf("Send: %v", err)
	}
	return res
}

// declare declares the stream of topo (and its index) as a producer
// would, before anything is published.
func (e *env) declare(topo rabbit.Topology) {
	e.t.Helper()
	conn, err := rabbit.Dial(context.Background(), e.dial())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	if err := rabbit.Declare(conn, topo); err != nil {
		e.t.Fatal(err)
	}
}

// deleteStream deletes the stream QUEUE, as an operator reclaiming disk
// would; QUEUE.index stays.
func (e *env) deleteStream() {
	e.t.Helper()
	if _, err := e.channel().QueueDelete(e.topo.Name(), false, false, false); err != nil {
		e.t.Fatal(err)
	}
}

// channel is a channel on a connection of its own, both closed when the
// test ends.
func (e *env) channel() *amqp.Channel {
	e.t.Helper()
	conn, err := amqp.Dial(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	return ch
}

// receiveStopped runs Receive and stops it (as SIGINT does) once n
// segments are placed: the run must end incomplete, its offset recorded
// for the next.
func (e *env) receiveStopped(cfg ReceiveConfig, n int) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	placed := 0
	cfg.Progress = func(int64, int64) {
		if placed++; placed == n {
			cancel()
		}
	}
	if _, err := Receive(ctx, cfg); !errors.Is(err, ErrIncomplete) {
		e.t.Fatalf("first run: %v", err)
	}
}

// TestStreamOnePublishManyRestores: three consumers restore one transfer
// while it is being published, a fourth after the producer has finished;
// every file is exact, and the stream holds each segment once (plus the
// start and done markers): nothing was republished, moved or copied by a consumer.
func TestStreamOnePublishManyRestores(t *testing.T) {
	e := newStreamEnv(t)
	data := randData(11, 300<<10+123)
	in := e.file("in.bin", data)
	const mss = 4 << 10
	var wg sync.WaitGroup
	results := make([]ReceiveResult, 4)
	errs := make([]error, 4)
	// The stream must exist before the consumers attach (the producer
	// declares it too).
	e.declare(e.topo)
	for i := range 3 {
		wg.Go(func() {
			results[i], errs[i] = Receive(context.Background(), e.receiveCfg(fmt.Sprintf("%s/out%d.bin", e.dir, i)))
		})
	}
	time.Sleep(300 * time.Millisecond) // let them attach: they read from the first message
	sres := e.sendStream(in, "many", mss)
	wg.Wait()
	results[3], errs[3] = Receive(context.Background(), e.receiveCfg(e.dir+"/out3.bin"))
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("consumer %d: %v", i, errs[i])
		}
		e.mustEqualFile(fmt.Sprintf("%s/out%d.bin", e.dir, i), data)
		r := results[i]
		if r.Transfer != "many" || r.Segments != sres.Segments || !r.Verified || r.Skipped != 0 || r.Corrupt != 0 {
			t.Errorf("consumer %d: %+v", i, r)
		}
	}
	msgs := e.readStream("many")
	if want := int(sres.Segments) + 2; len(msgs) != want {
		t.Fatalf("the stream holds %d messages up to the done marker, want %d (start marker, %d segments, done marker): the bytes are not stored once", len(msgs), want, sres.Segments)
	}
	for i, m := range msgs {
		if m.offset != int64(i) {
			t.Fatalf("message %d has offset %d", i, m.offset)
		}
	}
}

// TestStreamNewestCompleteListAndTransfer: a stream with two complete
// transfers and a third cut off mid-publish. The index lists all three
// (the third incomplete, with no SHA-256); a consumer takes the newest
// complete one by default, --transfer takes an older one, and --transfer
// of the incomplete one ends with a clear error, not a wrong file.
func TestStreamNewestCompleteListAndTransfer(t *testing.T) {
	e := newStreamEnv(t)
	const mss = 2 << 10
	a, b, c := randData(1, 50<<10), randData(2, 70<<10), randData(3, 40<<10)
	ra := e.sendStream(e.file("a.bin", a), "alpha", mss)
	rb := e.sendStream(e.file("b.bin", b), "beta", mss)
	// gamma: its start recorded, half its segments published, no end.
	cm := segmqBodiesRun(t, "gamma", "00c0ffee", c, mss)
	if err := announce(context.Background(), e.log, e.dial(), e.topo, KindStart,
		StreamTransfer{Transfer: "gamma", Run: "00c0ffee", Size: int64(len(c)), MSS: mss, Segments: uint32(len(cm)), Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.publish(cm[:len(cm)/2])

	list, err := ListStream(context.Background(), e.dial(), e.topo)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list {
		got = append(got, fmt.Sprintf("%s %d %d %v %s", s.Transfer, s.Size, s.Segments, s.Complete, s.SHA256))
	}
	want := []string{
		fmt.Sprintf("alpha %d %d true %s", len(a), ra.Segments, ra.SHA256),
		fmt.Sprintf("beta %d %d true %s", len(b), rb.Segments, rb.SHA256),
		fmt.Sprintf("gamma %d %d false ", len(c), len(cm)),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("list:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	res := e.receive(e.receiveCfg(e.dir + "/newest.bin"))
	e.mustEqualFile(e.dir+"/newest.bin", b)
	if res.Transfer != "beta" {
		t.Fatalf("default took %s, want beta (the newest complete)", res.Transfer)
	}
	// The producer recorded where beta starts (its start marker's
	// offset): a restore reads beta's segments only, none of alpha's.
	res = e.receive(e.receiveCfg(e.dir + "/again.bin"))
	e.mustEqualFile(e.dir+"/again.bin", b)
	if res.Transfer != "beta" || res.Skipped != 0 || res.Deliveries != int(rb.Segments) {
		t.Fatalf("second restore of beta: %s, read %d messages, skipped %d; want beta, %d, 0", res.Transfer, res.Deliveries, res.Skipped, rb.Segments)
	}
	cfg := e.receiveCfg(e.dir + "/old.bin")
	cfg.Transfer = "alpha"
	e.receive(cfg)
	e.mustEqualFile(e.dir+"/old.bin", a)

	cfg = e.receiveCfg(e.dir + "/gamma.bin")
	cfg.Transfer, cfg.Timeout = "gamma", 2*time.Second
	_, err = Receive(context.Background(), cfg)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), fmt.Sprintf("%d of %d segments", len(cm)/2, len(cm))) {
		t.Fatalf("incomplete transfer: err = %v", err)
	}
}

// TestStreamResumeFromRecordedOffset: a consumer stopped mid-transfer
// resumes from the stream offset in its journal: the second run reads
// only what follows it, far fewer messages than the stream holds.
func TestStreamResumeFromRecordedOffset(t *testing.T) {
	e := newStreamEnv(t)
	const mss = 1 << 10
	data := randData(5, 2000*mss-77)
	sres := e.sendStream(e.file("in.bin", data), "resume", mss)
	total := int(sres.Segments)

	ctx, cancel := context.WithCancel(context.Background())
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.AckEvery, cfg.Prefetch = 50, 100
	cfg.Progress = func(n, _ int64) {
		if n >= int64(total/2)*mss {
			cancel()
		}
	}
	_, err := Receive(ctx, cfg)
	cancel()
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "resume from stream offset") {
		t.Fatalf("first run: err = %v", err)
	}
	cfg.Progress = nil
	res := e.mustReceiveExact(cfg)
	e.mustEqualFile(cfg.Out, data)
	if res.Resumed < uint32(total/2) {
		t.Fatalf("resumed with %d segments, want >= %d", res.Resumed, total/2)
	}
	// What was placed before the stop is not read again: at most what
	// the broker had sent ahead (the prefetch) and a batch.
	if limit := total - int(res.Resumed) + cfg.Prefetch + cfg.AckEvery; res.Deliveries > limit {
		t.Fatalf("the resumed run read %d messages of %d, want <= %d: it did not start from the recorded offset", res.Deliveries, total, limit)
	}
}

// TestStreamSkipsCorruptCopyWithoutNack: a stream cannot dead-letter or
// requeue. A corrupt copy of a segment (bad CRC) ahead of the good one is
// skipped, and the file is exact.
func TestStreamSkipsCorruptCopyWithoutNack(t *testing.T) {
	e := newStreamEnv(t)
	data := randData(7, 20<<10)
	m := segmqBodiesRun(t, "bad", "0123abcd", data, 1<<10)
	bad := msg{body: append([]byte(nil), m[3].body...), headers: m[3].headers}
	bad.body[20] ^= 0xff
	e.publish(append([]msg{bad}, m...))
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.Transfer = "bad"
	res := e.receive(cfg)
	e.mustEqualFile(cfg.Out, data)
	if res.Corrupt != 1 || res.DeadLettered != 0 || res.Requeued != 0 {
		t.Fatalf("corrupt %d, dead-lettered %d, requeued %d; want 1, 0, 0", res.Corrupt, res.DeadLettered, res.Requeued)
	}
}

// publishWithHole announces a transfer of 10 KiB (MSS 1 KiB) on the stream,
// publishes every segment but seq 4, then announces it done: a done marker
// that arrives with a segment missing. It returns the transfer's segment count.
func (e *env) publishWithHole(t *testing.T, id, run string, seed uint64) int {
	t.Helper()
	data := randData(seed, 10<<10)
	m := segmqBodiesRun(t, id, run, data, 1<<10)
	entry := StreamTransfer{Transfer: id, Run: run, Size: int64(len(data)), MSS: 1 << 10, Segments: uint32(len(m)), Started: time.Now()}
	if err := announce(context.Background(), e.log, e.dial(), e.topo, KindStart, entry); err != nil {
		t.Fatal(err)
	}
	e.publish(append(m[:4:4], m[5:]...))
	if err := announce(context.Background(), e.log, e.dial(), e.topo, KindDone, entry); err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// TestStreamEndMarkerWithSegmentsMissing: the transfer's done marker
// arrives and a segment never did: the consumer reads the stream once
// more from its first message, then says what is missing, --out untouched.
func TestStreamEndMarkerWithSegmentsMissing(t *testing.T) {
	e := newStreamEnv(t)
	segments := e.publishWithHole(t, "holey", "0badc0de", 8)
	cfg := e.receiveCfg(e.dir + "/out.bin")
	res, err := Receive(context.Background(), cfg)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "first missing [4]") || !strings.Contains(err.Error(), "end marker") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(e.logs.String(), "reading the stream again from its first message") {
		t.Fatal("no rewind to the first message before giving up")
	}
	if res.Deliveries < 2*segments {
		t.Fatalf("read %d messages; a rewind reads the stream twice", res.Deliveries)
	}
}

// TestStreamDeclare: retention is set when the stream is created, an
// existing stream with other retention is used as it is, and a queue of
// another type is named as such.
func TestStreamDeclare(t *testing.T) {
	e := newStreamEnv(t)
	conn, err := rabbit.Dial(context.Background(), e.dial())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := rabbit.Declare(conn, e.topo); err != nil {
		t.Fatal(err)
	}
	other := e.topo
	other.Retention = rabbit.Retention{MaxAge: "1h", MaxBytes: 1 << 20, SegmentBytes: 1 << 20}
	if err := rabbit.Declare(conn, other); err != nil {
		t.Fatalf("an existing stream with other retention: %v", err)
	}
	classic := rabbit.Topology{Queue: brokertest.Queue(t)}
	if err := rabbit.Declare(conn, classic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			ch.QueueDelete(classic.DoneQueue(), false, false, false)
		}
	})
	asStream := classic
	asStream.Type = rabbit.Stream
	err = rabbit.Declare(conn, asStream)
	if !errors.Is(err, rabbit.ErrNotStream) || !strings.Contains(err.Error(), "already exists as a classic queue") || !strings.Contains(err.Error(), "--queue-type classic") {
		t.Fatalf("stream over a classic queue: %v", err)
	}
	e.topo.Type = rabbit.Classic
	err = rabbit.Declare(conn, e.topo)
	if err == nil || !strings.Contains(err.Error(), "--queue-type stream") {
		t.Fatalf("classic over a stream: %v", err)
	}
	if err := (rabbit.Retention{MaxAge: "7 days"}).Validate(); err == nil || !strings.Contains(err.Error(), "Y M D h m s") {
		t.Fatalf("bad max age: %v", err)
	}
	_, err = Receive(context.Background(), ReceiveConfig{Dial: e.dial(), Topology: asStream, Out: e.dir + "/x", ReorderWindow: 1})
	if err == nil || !strings.Contains(err.Error(), "--window does not apply to a stream") {
		t.Fatalf("--window on a stream: %v", err)
	}
}

// TestStreamRetentionExpires: retention set at declaration removes the
// oldest transfer once the stream outgrows it; the listing says so, and
// the default restore takes the newest (whole) one.
func TestStreamRetentionExpires(t *testing.T) {
	e := newStreamEnv(t)
	e.topo.Retention = rabbit.Retention{MaxBytes: 450 << 10, SegmentBytes: 100 << 10}
	const mss = 4 << 10
	old, mid, last := randData(21, 200<<10), randData(22, 200<<10), randData(23, 200<<10)
	e.sendStream(e.file("old.bin", old), "old", mss)
	e.sendStream(e.file("mid.bin", mid), "mid", mss)
	e.sendStream(e.file("last.bin", last), "last", mss)
	var list []StreamTransfer
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if list, err = ListStream(context.Background(), e.dial(), e.topo); err != nil {
			t.Fatal(err)
		}
		if len(list) == 3 && list[0].Expired || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(list) != 3 || !list[0].Expired || !list[0].Complete || list[2].Expired || !list[2].Complete {
		t.Fatalf("list after retention: %+v", list)
	}
	res := e.receive(e.receiveCfg(e.dir + "/out.bin"))
	e.mustEqualFile(e.dir+"/out.bin", last)
	if res.Transfer != "last" {
		t.Fatalf("restored %s, want last", res.Transfer)
	}
}

// TestStreamInterleavedTransfers: two producers publish into one stream
// at once; each transfer is restored exactly by --transfer, the other's
// segments skipped, and a second restore of each (from the offset the
// first recorded) reads no more than the first did.
func TestStreamInterleavedTransfers(t *testing.T) {
	e := newStreamEnv(t)
	const mss = 2 << 10
	a, b := randData(31, 300<<10), randData(32, 300<<10)
	pa, pb := e.file("a.bin", a), e.file("b.bin", b)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, in := range []struct{ path, id string }{{pa, "left"}, {pb, "right"}} {
		wg.Go(func() {
			_, errs[i] = Send(context.Background(), in.path, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Transfer: in.id, Raw: true, Log: e.log})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		data []byte
	}{{"left", a}, {"right", b}} {
		var first ReceiveResult
		for i := range 2 {
			cfg := e.receiveCfg(fmt.Sprintf("%s/%s%d.bin", e.dir, tc.id, i))
			cfg.Transfer = tc.id
			res := e.receive(cfg)
			e.mustEqualFile(cfg.Out, tc.data)
			if i == 0 {
				first = res
			} else if res.Deliveries > first.Deliveries {
				t.Fatalf("%s: the second restore read %d messages, the first %d", tc.id, res.Deliveries, first.Deliveries)
			}
		}
	}
}

// TestStreamProducerClockAheadRestores: the producer's clock is 60 s
// ahead of the broker's, so the whole transfer, done marker included, was
// published before Started-StreamSkew by the broker's clock and a
// consumer attaching at that timestamp would see none of it. The done
// marker with segments missing makes the consumer read once more from the
// first offset (doc.go), and with the default --timeout 0 it restores the
// exact file instead of waiting for ever.
func TestStreamProducerClockAheadRestores(t *testing.T) {
	e := newStreamEnv(t)
	data := randData(21, 10<<10)
	m := segmqBodiesRun(t, "ahead", "00aead00", data, 1<<10)
	entry := StreamTransfer{Transfer: "ahead", Run: "00aead00", Size: int64(len(data)), MSS: 1 << 10, Segments: uint32(len(m)),
		Started: time.Now().Add(60 * time.Second)} // the producer's clock, 60 s ahead
	if err := announce(context.Background(), e.log, e.dial(), e.topo, KindStart, entry); err != nil {
		t.Fatal(err)
	}
	e.publish(m)
	entry.SHA256 = m[0].headers[HdrSHA256].(string)
	if err := announce(context.Background(), e.log, e.dial(), e.topo, KindDone, entry); err != nil {
		t.Fatal(err)
	}
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.Timeout = 0 // the consumer's default: wait for ever
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Receive(ctx, cfg)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("consumer still waiting after 20 s on a complete transfer (hang with --timeout 0): %v", err)
	}
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	e.mustEqualFile(cfg.Out, data)
}

// TestStreamResumeRereadsSegmentsBeforeStart: the first run started
// reading at a timestamp (Started-StreamSkew, the producer's clock 10 s
// ahead) past some of the transfer's segments, and was stopped
// mid-transfer. The resumed run, from the recorded offset, restores the
// exact file: the segments before the timestamp start are read, not
// called removed by retention.
func TestStreamResumeRereadsSegmentsBeforeStart(t *testing.T) {
	e := newStreamEnv(t)
	const mss = 1 << 10
	data := randData(22, 400*mss)
	m := segmqBodiesRun(t, "skew", "5ce05ce0", data, mss)
	half := len(m) / 4
	entry := StreamTransfer{Transfer: "skew", Run: "5ce05ce0", Size: int64(len(data)), MSS: mss, Segments: uint32(len(m))}
	e.publish(m[:half])
	time.Sleep(2500 * time.Millisecond)
	entry.Started = time.Now().Add(10 * time.Second) // producer clock 10 s ahead: reading starts at this second
	if err := announce(context.Background(), e.log, e.dial(), e.topo, KindStart, entry); err != nil {
		t.Fatal(err)
	}
	e.publish(m[half:])
	entry.SHA256 = m[0].headers[HdrSHA256].(string)
	if err := announce(context.Background(), e.log, e.dial(), e.topo, KindDone, entry); err != nil {
		t.Fatal(err)
	}
	// First run: stopped (SIGINT, or SIGKILL after a persist) before the done marker.
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.AckEvery, cfg.Prefetch = 10, 20
	e.receiveStopped(cfg, 50)
	cfg.Timeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Receive(ctx, cfg)
	if err != nil {
		t.Fatalf("resumed run: %v\n(every segment of the transfer is in the stream: the recorded offset skipped the ones before the timestamp start)", err)
	}
	e.mustEqualFile(cfg.Out, data)
}

// TestStreamRerunAfterEndMarkerErrorFailsAgain: the consumer fails with
// "... run again to resume from stream offset N" for a transfer with a
// segment missing. Doing what it says (same flags, default --timeout 0)
// fails again with the same clear error, never a silent wait past the
// done marker.
func TestStreamRerunAfterEndMarkerErrorFailsAgain(t *testing.T) {
	e := newStreamEnv(t)
	e.publishWithHole(t, "holey2", "0badc0d2", 23)
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.Timeout = 0
	_, err := Receive(context.Background(), cfg)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "run again to resume") {
		t.Fatalf("first run: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err = Receive(ctx, cfg)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the rerun the first error asked for waits for ever (15 s, --timeout 0), resuming past the done marker: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), "first missing [4]") {
		t.Fatalf("rerun: %v", err)
	}
}

// TestStreamForeignHeadExpiresNothing: retention has truncated the stream
// and its oldest retained message is not a segmq segment (another
// client's message). That alone expires no transfer: --list shows the
// fully retained transfer complete and not expired, and the consumer
// restores it.
func TestStreamForeignHeadExpiresNothing(t *testing.T) {
	e := newStreamEnv(t)
	// Age retention: the garbage ages out whole files, the transfer stays.
	e.topo.Retention = rabbit.Retention{MaxAge: "2s", MaxBytes: -1, SegmentBytes: 50 << 10}
	e.declare(e.topo)
	var garbage []msg
	for range 400 {
		garbage = append(garbage, msg{body: randData(1, 1000), headers: amqp.Table{"app": "other"}})
	}
	e.publish(garbage)
	time.Sleep(3 * time.Second)
	e.publish(garbage[:1]) // a fresh non-segmq message just before the transfer
	data := randData(24, 60<<10)
	e.sendStream(e.file("in.bin", data), "keep", 4<<10)
	if first := e.readStream("keep")[0]; first.offset == 0 || first.transfer != "" {
		t.Fatalf("setup: oldest retained message at offset %d of transfer %q; want garbage past offset 0", first.offset, first.transfer)
	}
	list, err := ListStream(context.Background(), e.dial(), e.topo)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Expired || !list[0].Complete {
		t.Errorf("--list: %+v; want keep complete, not expired (every segment is retained)", list)
	}
	cfg := e.receiveCfg(e.dir + "/out.bin")
	if _, err := Receive(context.Background(), cfg); err != nil {
		t.Fatalf("Receive: %v", err)
	}
	e.mustEqualFile(cfg.Out, data)
}

// TestStreamListPartlyTruncatedExpired: retention removed the head of
// transfer "old" (its first segments) and kept the rest. --list does not
// show it complete and not expired, so nobody picks it with --transfer
// to get "incomplete" after reading the stream twice.
func TestStreamListPartlyTruncatedExpired(t *testing.T) {
	e := newStreamEnv(t)
	e.topo.Retention = rabbit.Retention{MaxAge: "2s", MaxBytes: -1, SegmentBytes: 50 << 10}
	e.declare(e.topo)
	e.sendStream(e.file("old.bin", randData(25, 150<<10)), "old", 4<<10)
	time.Sleep(3 * time.Second) // old's full files age out when new rolls a file
	e.sendStream(e.file("new.bin", randData(26, 150<<10)), "new", 4<<10)
	if first := e.readStream("new")[0]; first.offset == 0 || first.transfer != "old" {
		t.Fatalf("setup: oldest retained message at offset %d of transfer %q; want one of old's past offset 0", first.offset, first.transfer)
	}
	list, err := ListStream(context.Background(), e.dial(), e.topo)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Transfer == "old" && s.Complete && !s.Expired {
			t.Fatalf("--list shows %q complete and not expired, but retention removed its first segments: %+v", s.Transfer, s)
		}
	}
}

// TestStreamTransferLargerThanRetentionRefused: a file larger than the
// stream's x-max-length-bytes (the default is 16 GiB; a 20 GB snapshot
// hits it) would lose its first segments to retention during the publish,
// and no consumer could restore it. The producer refuses it up front,
// naming the retention, before declaring or publishing anything.
func TestStreamTransferLargerThanRetentionRefused(t *testing.T) {
	e := newStreamEnv(t)
	e.topo.Retention = rabbit.Retention{MaxAge: "0", MaxBytes: 200 << 10, SegmentBytes: 50 << 10}
	data := randData(27, 400<<10)
	sres, err := Send(context.Background(), e.file("in.bin", data), SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 4 << 10, Transfer: "big", Raw: true, Log: e.log})
	if err == nil {
		t.Fatalf("the producer reported success (%d segments, sha256 %s) for a transfer larger than the stream's retention", sres.Segments, sres.SHA256)
	}
	if !strings.Contains(err.Error(), "larger than the stream's retention (--stream-max-bytes 204800)") {
		t.Fatalf("producer: %v; want it to refuse up front, naming the retention", err)
	}
	// Refused before anything was declared or published.
	if _, err := ListStream(context.Background(), e.dial(), e.topo); err == nil || !strings.Contains(err.Error(), "there is no stream") {
		t.Fatalf("after the refusal: %v", err)
	}
}

// TestStreamHeadLostDuringPublishFailsProducer: the stream already
// exists with retention smaller than the file (the producer's own flags
// say 16 GiB, so it cannot refuse up front). After the last confirm the
// producer finds its start marker gone: it exits with an error, and the
// index never records the transfer complete.
func TestStreamHeadLostDuringPublishFailsProducer(t *testing.T) {
	e := newStreamEnv(t)
	small := e.topo
	small.Retention = rabbit.Retention{MaxAge: "0", MaxBytes: 200 << 10, SegmentBytes: 50 << 10}
	e.declare(small)
	data := randData(30, 600<<10)
	_, err := Send(context.Background(), e.file("in.bin", data), SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 4 << 10, Transfer: "big", Raw: true, Log: e.log})
	if !errors.Is(err, ErrHeadGone) || !strings.Contains(err.Error(), "no consumer can restore transfer big") || !strings.Contains(err.Error(), "retention removed it") {
		t.Fatalf("producer: %v; want ErrHeadGone", err)
	}
	list, err := ListStream(context.Background(), e.dial(), e.topo)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Complete || !list[0].Expired {
		t.Fatalf("index after the failed publish: %+v; want big incomplete and expired", list)
	}
}

// TestStreamRecreatedOldTransferFails: an operator deletes the stream
// QUEUE to reclaim disk (QUEUE.index is a separate stream and stays); the
// next producer recreates QUEUE, whose offsets start at 0 again.
// `consumer --transfer OLD` (default --timeout 0) fails with a clear
// error naming the recreated stream instead of waiting for ever, --list
// shows the old transfer expired, and the new one restores.
func TestStreamRecreatedOldTransferFails(t *testing.T) {
	e := newStreamEnv(t)
	e.sendStream(e.file("old.bin", randData(28, 20<<10)), "old", 4<<10)
	e.deleteStream()
	e.sendStream(e.file("new.bin", randData(29, 20<<10)), "new", 4<<10)
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.Transfer, cfg.Timeout = "old", 0
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := Receive(ctx, cfg)
	if errors.Is(err, context.DeadlineExceeded) {
		list, _ := ListStream(context.Background(), e.dial(), e.topo)
		t.Fatalf("consumer --transfer old waits for ever for segments that no longer exist (list: %+v): %v", list, err)
	}
	if err == nil || !strings.Contains(err.Error(), "cannot be restored from stream") || !strings.Contains(err.Error(), "deleted and recreated") {
		t.Fatalf("consumer --transfer old: %v; want it named gone with the stream", err)
	}
	list, err := ListStream(context.Background(), e.dial(), e.topo)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || !list[0].Expired || list[1].Expired || !list[1].Complete {
		t.Fatalf("--list after the stream was recreated: %+v; want old expired, new complete", list)
	}
	cfg.Transfer, cfg.Out = "", e.dir+"/new.bin"
	if _, err := Receive(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	e.mustEqualFile(cfg.Out, randData(29, 20<<10))
}

// TestStreamResumeAfterRecreatedFails: a consumer stopped mid-transfer
// records its offset; the stream is then deleted and recreated (another
// transfer in it). The resumed run checks the recorded offsets against
// the stream and fails at once, naming why, instead of reading a stream
// that no longer holds the transfer.
func TestStreamResumeAfterRecreatedFails(t *testing.T) {
	e := newStreamEnv(t)
	const mss = 1 << 10
	e.sendStream(e.file("in.bin", randData(33, 200*mss)), "gone", mss)
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.AckEvery, cfg.Prefetch = 10, 20
	e.receiveStopped(cfg, 50)
	e.deleteStream()
	e.sendStream(e.file("other.bin", randData(34, 300*mss)), "other", mss)
	cfg.Timeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := Receive(ctx, cfg)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "is no longer in stream") || !strings.Contains(err.Error(), "deleted and recreated") {
		t.Fatalf("resume after the stream was recreated: %v", err)
	}
}

// TestStreamListMissingCreatesNothing: `consumer --list` on a queue name
// that does not exist (a typo) says there is no such stream and declares
// nothing: no QUEUE and QUEUE.index with 7-day/16 GiB retention that
// nobody asked for.
func TestStreamListMissingCreatesNothing(t *testing.T) {
	e := newStreamEnv(t)
	list, err := ListStream(context.Background(), e.dial(), e.topo)
	if _, perr := brokertest.Inspect(t, e.url, e.topo.Name()); perr == nil {
		t.Fatalf("--list on a stream that did not exist created it (list %v, err %v)", list, err)
	}
	if err == nil || !strings.Contains(err.Error(), "there is no stream "+e.topo.Name()+" on this broker (nothing was created)") {
		t.Fatalf("--list on a missing stream: %v", err)
	}
}
