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
	conn, err := amqp.Dial(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
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
	conn, err := rabbit.Dial(context.Background(), e.dial())
	if err != nil {
		t.Fatal(err)
	}
	if err := rabbit.Declare(conn, e.topo); err != nil {
		t.Fatal(err)
	}
	conn.Close()
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
