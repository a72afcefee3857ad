package transfer

// Hostile review of issue 11 item 5 (claims in QUEUE.claims) against a
// real broker. The tests here FAIL on the code under review.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/rabbit"
)

// TestReview3ClaimLegacyMissedWhileRegistryHeld: a claim an older segmq
// left in QUEUE.done is to be honoured ("another owner refuses"). But the
// registry is read with basic.get without ack, so while any other reader
// holds the marker (every consumer reads QUEUE.done at each session start,
// readDone, and again in legacyClaim; a standby starting, a consumer
// reconnecting), a claimer reading it at that moment sees an empty
// registry, goes on to the stream, finds no claim there (the legacy owner
// never wrote one) and owns the run: two owners, a split transfer.
// Here the other reader is a channel that holds the marker, as
// readRegistry does while it reads.
func TestReview3ClaimLegacyMissedWhileRegistryHeld(t *testing.T) {
	e := newEnv(t)
	conn, err := amqp.Dial(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := rabbit.Declare(conn, e.topo); err != nil {
		t.Fatal(err)
	}
	b := binding{Transfer: "old", Run: "00000000000000dd"}
	const legacyOwner = "oldhost:/restore/db.bin"
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Publish("", e.topo.DoneQueue(), false, false, amqp.Publishing{
		Headers: amqp.Table{HdrTransfer: b.Transfer, HdrRun: b.Run, HdrClaim: legacyOwner, HdrClaimAt: time.Now().Add(-time.Hour).UnixNano()},
		Body:    []byte("claim"),
	}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); e.queueDepth(e.topo.DoneQueue()) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the legacy claim never reached the registry")
		}
	}
	// Another consumer's registry read, in progress: it holds the marker.
	other, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := other.Get(e.topo.DoneQueue(), false); err != nil || !ok {
		t.Fatalf("hold the legacy claim: ok %v, %v", ok, err)
	}
	err = e.claimant(filepath.Join(e.dir, "new.bin"), b).checkClaim()
	other.Close() // the other reader is done: the marker is back
	var ce *ClaimError
	if !errors.As(err, &ce) || ce.Owner != legacyOwner {
		t.Errorf("a consumer with another --out claimed while another reader held the legacy claim: %v; want a ClaimError naming %s", err, legacyOwner)
	}
}

// BenchmarkReview3ClaimFullStream: the cost of one claim when QUEUE.claims
// holds $REVIEW3_PRIOR earlier claims (default 200,000: about what the
// 64 MiB retention keeps of ~300-byte claims). Every consumer run pays it
// before its first ack, and claimReadTimeout (1 minute) bounds it.
func BenchmarkReview3ClaimFullStream(b *testing.B) {
	prior := 200_000
	if s := os.Getenv("REVIEW3_PRIOR"); s != "" {
		prior, _ = strconv.Atoi(s)
	}
	url := brokertest.URL(b)
	topo := rabbit.Topology{Queue: brokertest.Queue(b)}
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if err := rabbit.Declare(conn, topo); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if ch, err := conn.Channel(); err == nil {
			ch.QueueDelete(topo.DoneQueue(), false, false, false)
		}
	}()
	if err := rabbit.DeclareClaims(conn, topo); err != nil {
		b.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	var last *amqp.DeferredConfirmation
	for i := range prior {
		run := fmt.Sprintf("%016x", i)
		owner := "consumer-7d9f8c6b5-x2x4q:/var/lib/segmq/restore/db.bin"
		last, err = ch.PublishWithDeferredConfirm("", topo.ClaimsQueue(), false, false, amqp.Publishing{
			Headers:      amqp.Table{HdrTransfer: "0123456789abcdef0123456789abcdef", HdrRun: run, HdrClaim: owner, HdrClaimNonce: "0123456789abcdef" + run, HdrClaimAt: int64(i)},
			Body:         []byte("claim 0123456789abcdef0123456789abcdef/" + run + " by " + owner),
			ContentType:  "text/plain",
			DeliveryMode: amqp.Persistent,
			Timestamp:    time.Now(),
			AppId:        "segmq",
		})
		if err != nil {
			b.Fatal(err)
		}
		if i%5000 == 4999 {
			last.WaitContext(context.Background())
		}
	}
	if ok, err := last.WaitContext(context.Background()); !ok || err != nil {
		b.Fatalf("prior claims not confirmed: %v", err)
	}
	if q, err := brokertest.Inspect(b, url, topo.ClaimsQueue()); err == nil {
		b.Logf("claims stream: %d messages", q.Messages)
	}
	cch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		r := &receiver{cfg: ReceiveConfig{Topology: topo, Out: "/bench/out.bin"}, log: slog.New(slog.DiscardHandler),
			part: &partFile{b: &binding{Transfer: "bench", Run: fmt.Sprintf("%016x", i)}}, conn: conn, ch: cch}
		start := time.Now()
		if err := r.checkClaim(); err != nil {
			b.Fatal(err)
		}
		b.Logf("claim %d: %s", i, time.Since(start).Round(time.Millisecond))
	}
}

// TestReview3ClaimOfOwnerThatAckedNothingBlocksEveryOtherOut: consumer A
// claims the run and dies before its first ack (SIGKILL, OOM or power loss
// in that instant; or its first persist fails, e.g. ENOSPC on the .part's
// disk, and it stops: checkClaim runs before part.persist). Nothing of the
// transfer was acked: every segment is still in the queue. Yet for 30 days
// every consumer with another --out (the single-active-consumer standby
// that issue 11 wants to take over, or the user moving the restore to a
// disk with room) refuses with "rerun that consumer", and only A's host
// and path, or a full resend (producer --restart), can finish it.
func TestReview3ClaimOfOwnerThatAckedNothingBlocksEveryOtherOut(t *testing.T) {
	e := newEnv(t)
	data := make([]byte, 200_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sent := e.send(e.file("in.bin", data), 4096, true)
	a := e.claimant(filepath.Join(e.dir, "a.bin"), binding{Transfer: sent.Transfer, Run: sent.Run})
	if err := a.checkClaim(); err != nil {
		t.Fatalf("A's claim: %v", err)
	}
	a.conn.Close() // A dies before its first ack
	if got := e.waitDepth(e.topo.Name(), int(sent.Segments), 10*time.Second); got != int(sent.Segments) {
		t.Fatalf("queue holds %d segments, want all %d (nothing was acked)", got, sent.Segments)
	}
	out := filepath.Join(e.dir, "b.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 10 * time.Second
	res, err := Receive(context.Background(), cfg)
	if err != nil {
		t.Fatalf("consumer with another --out, every segment still in the queue, the claimer acked nothing: %v (segments %d); want it to restore the file", err, res.Segments)
	}
	e.mustEqualFile(out, data)
}
