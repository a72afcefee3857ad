package transfer

// Hostile review of --queue-type stream (branch review = stream@2c77d21).
// Each test states what a user should see; each failed on that snapshot
// (the names then said what went wrong; they now say what they prove).

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
)

// TestReviewStreamProducerClockAheadRestores: the producer's clock is 60 s
// ahead of the broker's (doc.go says this case is handled: "If the done
// marker in QUEUE arrives with segments missing (a producer clock ahead of
// the broker's), the consumer reads once more from the first offset").
// The whole transfer, done marker included, was published before
// Started-StreamSkew by the broker's clock, so the consumer attaches past
// it, never sees a delivery, and with the default --timeout 0 waits for
// ever on a complete transfer. Want: the exact file.
func TestReviewStreamProducerClockAheadRestores(t *testing.T) {
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

// TestReviewStreamResumeRereadsSegmentsBeforeStart: the recorded offset is
// documented as "everything before it is durable in OUT.part or was not
// this transfer's". That is false when the first run started reading at
// a timestamp (Started-StreamSkew) past some of the transfer's segments
// (producer clock >10 s ahead). The first run, stopped mid-transfer,
// records an offset; the resumed run reads from it, meets the done marker
// with the early segments missing, does not rewind (the rewind is only
// for a timestamp start) and says they "were removed by retention or
// never confirmed" although every one is in the stream. A third run
// resumes past the done marker and waits for ever.
func TestReviewStreamResumeRereadsSegmentsBeforeStart(t *testing.T) {
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
	ctx, cancel := context.WithCancel(context.Background())
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.AckEvery, cfg.Prefetch = 10, 20
	placed := 0
	cfg.Progress = func(int64, int64) {
		if placed++; placed == 50 {
			cancel()
		}
	}
	_, err := Receive(ctx, cfg)
	cancel()
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("first run: %v", err)
	}
	cfg.Progress = nil
	cfg.Timeout = 0
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	_, err = Receive(ctx2, cfg)
	if err != nil {
		t.Fatalf("resumed run: %v\n(every segment of the transfer is in the stream: the recorded offset skipped the ones before the timestamp start)", err)
	}
	e.mustEqualFile(cfg.Out, data)
}

// TestReviewStreamRerunAfterEndMarkerErrorFailsAgain: the consumer fails with
// "... run again to resume from stream offset N" where N is past the
// transfer's done marker. Doing what it says (same flags, default
// --timeout 0) waits for ever: nothing of the transfer follows N. Want: a
// clear error again, not a silent wait.
func TestReviewStreamRerunAfterEndMarkerErrorFailsAgain(t *testing.T) {
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

// TestReviewStreamGarbageHeadExpiresNothing: retention has
// truncated the stream and its oldest retained message is not a segmq
// segment (another client's message, a seed-format segment). markExpired
// then marks every transfer expired: --list says "expired" for a complete,
// fully retained transfer and the consumer refuses to restore it ("have
// all expired").
func TestReviewStreamGarbageHeadExpiresNothing(t *testing.T) {
	e := newStreamEnv(t)
	// Age retention: the garbage ages out whole files, the transfer stays.
	e.topo.Retention = rabbit.Retention{MaxAge: "2s", MaxBytes: -1, SegmentBytes: 50 << 10}
	conn, err := rabbit.Dial(context.Background(), e.dial())
	if err != nil {
		t.Fatal(err)
	}
	if err := rabbit.Declare(conn, e.topo); err != nil {
		t.Fatal(err)
	}
	conn.Close()
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

// TestReviewStreamListPartlyTruncatedExpired: retention removed the
// head of transfer "old" (its first segments), the rest is retained.
// --list still says it is complete and not expired (markExpired only
// marks transfers listed before the one the oldest retained message
// belongs to), so a user picks it with --transfer and gets "incomplete"
// after reading the stream twice.
func TestReviewStreamListPartlyTruncatedExpired(t *testing.T) {
	e := newStreamEnv(t)
	e.topo.Retention = rabbit.Retention{MaxAge: "2s", MaxBytes: -1, SegmentBytes: 50 << 10}
	conn, err := rabbit.Dial(context.Background(), e.dial())
	if err != nil {
		t.Fatal(err)
	}
	if err := rabbit.Declare(conn, e.topo); err != nil {
		t.Fatal(err)
	}
	conn.Close()
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

// TestReviewStreamTransferLargerThanRetentionRefused: a file larger than the
// stream's x-max-length-bytes (the default is 16 GiB; a 20 GB snapshot
// hits it) is published, every segment confirmed, the producer exits 0
// and the index records it complete, while retention drops its first
// segments during the publish. No consumer can ever restore it. Want: the
// producer refuses (or fails) instead of reporting success; or the file
// is restorable.
func TestReviewStreamTransferLargerThanRetentionRefused(t *testing.T) {
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

// TestReviewStreamHeadLostDuringPublishFailsProducer: the stream already
// exists with retention smaller than the file (the producer's own flags
// say 16 GiB, so it cannot refuse up front). After the last confirm the
// producer finds its start marker gone: it exits with an error, and the
// index never records the transfer complete.
func TestReviewStreamHeadLostDuringPublishFailsProducer(t *testing.T) {
	e := newStreamEnv(t)
	small := e.topo
	small.Retention = rabbit.Retention{MaxAge: "0", MaxBytes: 200 << 10, SegmentBytes: 50 << 10}
	conn, err := rabbit.Dial(context.Background(), e.dial())
	if err != nil {
		t.Fatal(err)
	}
	if err := rabbit.Declare(conn, small); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	data := randData(30, 600<<10)
	_, err = Send(context.Background(), e.file("in.bin", data), SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 4 << 10, Transfer: "big", Raw: true, Log: e.log})
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

// TestReviewStreamRecreatedStreamOldTransferFails: an operator deletes
// the stream QUEUE to reclaim disk (QUEUE.index is a separate stream and
// stays); the next producer recreates QUEUE, whose offsets start at 0
// again. markExpired only suspects loss when the first offset is not 0,
// so the old transfer is still listed complete and not expired, and
// `consumer --transfer OLD` (default --timeout 0) reads the new stream
// past everything and waits for ever. Want: a clear error.
func TestReviewStreamRecreatedStreamOldTransferFails(t *testing.T) {
	e := newStreamEnv(t)
	e.sendStream(e.file("old.bin", randData(28, 20<<10)), "old", 4<<10)
	conn, err := amqp.Dial(e.url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(e.topo.Name(), false, false, false); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	e.sendStream(e.file("new.bin", randData(29, 20<<10)), "new", 4<<10)
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.Transfer, cfg.Timeout = "old", 0
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err = Receive(ctx, cfg)
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

// TestReviewStreamResumeAfterStreamRecreatedFails: a consumer stopped
// mid-transfer records its offset; the stream is then deleted and
// recreated (another transfer in it). The resumed run checks the recorded
// offsets against the stream and fails at once, naming why, instead of
// reading a stream that no longer holds the transfer.
func TestReviewStreamResumeAfterStreamRecreatedFails(t *testing.T) {
	e := newStreamEnv(t)
	const mss = 1 << 10
	e.sendStream(e.file("in.bin", randData(33, 200*mss)), "gone", mss)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.AckEvery, cfg.Prefetch = 10, 20
	placed := 0
	cfg.Progress = func(int64, int64) {
		if placed++; placed == 50 {
			cancel()
		}
	}
	_, err := Receive(ctx, cfg)
	cancel()
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("first run: %v", err)
	}
	conn, err := amqp.Dial(e.url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(e.topo.Name(), false, false, false); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	e.sendStream(e.file("other.bin", randData(34, 300*mss)), "other", mss)
	cfg.Progress, cfg.Timeout = nil, 0
	ctx2, cancel2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel2()
	_, err = Receive(ctx2, cfg)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "is no longer in stream") || !strings.Contains(err.Error(), "deleted and recreated") {
		t.Fatalf("resume after the stream was recreated: %v", err)
	}
}

// TestReviewStreamListMissingStreamCreatesNothing: `consumer --list` on a queue name
// that does not exist (a typo) declares QUEUE and QUEUE.index, two
// streams with 7-day/16 GiB retention that nobody asked for, and prints an
// empty list instead of saying there is no such stream.
func TestReviewStreamListMissingStreamCreatesNothing(t *testing.T) {
	e := newStreamEnv(t)
	list, err := ListStream(context.Background(), e.dial(), e.topo)
	conn, cerr := amqp.Dial(e.url)
	if cerr != nil {
		t.Fatal(cerr)
	}
	defer conn.Close()
	ch, cerr := conn.Channel()
	if cerr != nil {
		t.Fatal(cerr)
	}
	if _, perr := ch.QueueDeclarePassive(e.topo.Name(), true, false, false, false, nil); perr == nil {
		t.Fatalf("--list on a stream that did not exist created it (list %v, err %v)", list, err)
	}
	if err == nil || !strings.Contains(err.Error(), "there is no stream "+e.topo.Name()+" on this broker (nothing was created)") {
		t.Fatalf("--list on a missing stream: %v", err)
	}
}
