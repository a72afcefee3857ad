package transfer

// Hostile review of issue 11 item 5 (claims in QUEUE.claims) against a
// real broker. The tests here FAIL on the code under review.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/rabbit"
)

// BenchmarkClaimFullStream: the cost of one claim when QUEUE.claims
// holds $REVIEW3_PRIOR earlier claims (default 200,000: about what the
// 64 MiB retention keeps of ~300-byte claims). Every consumer run pays it
// before its first ack, and claimReadTimeout (1 minute) bounds it.
func BenchmarkClaimFullStream(b *testing.B) {
	prior := 200_000
	if s := os.Getenv("REVIEW3_PRIOR"); s != "" {
		prior, _ = strconv.Atoi(s)
	}
	url, topo, conn := claimBenchQueue(b)
	if err := rabbit.DeclareClaims(conn, topo); err != nil {
		b.Fatal(err)
	}
	ch := openChannel(b, conn)
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	var last *amqp.DeferredConfirmation
	var err error
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
