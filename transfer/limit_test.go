package transfer

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/tcpproxy"
	"github.com/segmq/segmq/rabbit"
)

// The delivery limit of quorum queues (RabbitMQ 4.0–4.2: 20 returns, then
// dead-lettered) must not cost a segment. These run on whatever broker
// the suite has; make test runs them on 4.0.5, where the limit exists.

// brokerVersion is the version the broker announces.
func (e *env) brokerVersion() string {
	conn := connectTB(e.t, e.url)
	defer conn.Close()
	v, _ := conn.Properties["version"].(string)
	return v
}

// peekMoved reads every ready message of the queue without acking it and
// returns, per transfer, how many there are and the most times one of
// them was moved to the tail. Closing the channel gives them all back.
// (A consumer, not basic.get, which quorum queues with
// single-active-consumer refuse.)
func (e *env) peekMoved() (count, maxMoved map[string]int) {
	e.t.Helper()
	conn := connectTB(e.t, e.url)
	defer conn.Close()
	ch := openChannel(e.t, conn)
	if err := ch.Qos(1000, 0, false); err != nil {
		e.t.Fatal(err)
	}
	ds, err := ch.Consume(e.topo.Name(), "", false, false, false, false, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	count, maxMoved = map[string]int{}, map[string]int{}
	for {
		select {
		case d := <-ds:
			tr, _ := d.Headers[HdrTransfer].(string)
			n, _ := asInt(d.Headers[HdrMoved])
			count[tr]++
			maxMoved[tr] = max(maxMoved[tr], int(n))
			continue
		case <-time.After(time.Second):
		}
		return count, maxMoved
	}
}

// Window misses and another transfer's segments, on a quorum queue: with
// --window 1 --prefetch 1 and the wanted transfer in reverse order, each
// pass through the queue places one segment and moves every other
// message to the tail, so the other transfer's segments go round more
// than 20 times. Moving is a confirmed copy plus an ack, never a requeue:
// nothing reaches QUEUE.dead, the file is exact, the other transfer is
// all still there and restores exactly too.
func TestQuorumMovesPastDeliveryLimit(t *testing.T) {
	e := newEnv(t)
	e.topo.Type = rabbit.Quorum
	const mss, n = 100, 30
	want, other := randData(31, n*mss-3), randData(32, 8*mss)
	w, o := segmqBodies(t, "wanted", want, mss), segmqBodies(t, "other", other, mss)
	var msgs []msg
	for i := len(w) - 1; i >= 0; i-- { // reversed, the other interleaved
		msgs = append(msgs, w[i])
		if i < len(o) {
			msgs = append(msgs, o[i])
		}
	}
	e.publish(msgs)
	out := filepath.Join(e.dir, "wanted.bin")
	cfg := e.receiveCfg(out)
	cfg.Transfer, cfg.ReorderWindow, cfg.Prefetch = "wanted", 1, 1
	res := e.mustReceiveExact(cfg)
	e.mustEqualFile(out, want)
	t.Logf("RabbitMQ %s: %d segments reversed with --window 1 --prefetch 1: set aside %d, requeued %d", e.brokerVersion(), n, res.SetAside, res.Requeued)
	if res.Requeued != 0 || res.DeadLettered != 0 {
		t.Fatalf("requeued %d, dead-lettered %d", res.Requeued, res.DeadLettered)
	}
	count, moved := e.peekMoved()
	if count["other"] != len(o) || count["wanted"] != 0 || len(count) != 1 {
		t.Fatalf("left in the queue: %v, want all %d segments of the other transfer only", count, len(o))
	}
	if moved["other"] <= 20 {
		t.Fatalf("the other transfer's segments were moved at most %d times; the test needs more than the limit (20)", moved["other"])
	}
	if d := e.queueDepth(e.topo.DeadQueue()); d != 0 {
		t.Fatalf("%s holds %d messages", e.topo.DeadQueue(), d)
	}
	out2 := filepath.Join(e.dir, "other.bin")
	cfg = e.receiveCfg(out2)
	cfg.Transfer = "other"
	e.mustReceiveExact(cfg)
	e.mustEqualFile(out2, other)
	if d, q := e.queueDepth(e.topo.DeadQueue()), e.queueDepth(e.topo.Name()); d != 0 || q != 0 {
		t.Fatalf("after both restores: %d dead, %d left", d, q)
	}
	t.Logf("the other transfer's segments went round up to %d times and all survived", moved["other"])
}

// A consumer whose connection is cut 25 times while it holds unacked
// deliveries: the broker returns them each time (measured on 4.0.5: this
// counts toward the delivery limit, and the 21st return dead-letters a
// message on a queue without x-delivery-limit). On segmq's quorum queue
// (x-delivery-limit set) nothing is lost; on a quorum queue created
// without it ("legacy"), the consumer acks a delivery at once when its
// x-delivery-count reaches 10, and warns what to do, on RabbitMQ 4 (3.x
// has no default limit).
func TestQuorumReconnectsPastDeliveryLimit(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := "segmq-queue"
		if legacy {
			name = "legacy-queue"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.topo.Type = rabbit.Quorum
			if legacy {
				conn := connectTB(t, e.url)
				ch, _ := conn.Channel()
				if _, err := ch.QueueDeclare(e.topo.Name(), true, false, false, false, amqp.Table{amqp.QueueTypeArg: rabbit.Quorum, "x-dead-letter-exchange": e.topo.DLX()}); err != nil {
					t.Fatal(err)
				}
				conn.Close()
			}
			const mss, n = 200, 60
			data := randData(33, n*mss-11)
			segs := segmqBodies(t, "reconn", data, mss)
			e.publish(segs[:n-1]) // the last one comes after the resets
			up := strings.TrimSuffix(strings.SplitN(e.url, "@", 2)[1], "/")
			px, err := tcpproxy.New(up)
			if err != nil {
				t.Fatal(err)
			}
			defer px.Close()
			out := filepath.Join(e.dir, "out.bin")
			cfg := e.receiveCfg(out)
			cfg.Dial.URL = strings.Replace(e.url, up, px.Addr, 1)
			// Nothing is acked by the batch: only a full prefetch, the
			// end, or a delivery near the limit makes the consumer ack.
			cfg.Prefetch, cfg.AckEvery, cfg.AckInterval, cfg.Timeout = 200, 1000, 10*time.Minute, time.Minute
			done := make(chan receiveOutcome, 1)
			go func() { done <- receiveBounded(t, context.Background(), cfg, 2*time.Minute) }()
			// 25 returns on segmq's queue (past the default limit); on the
			// legacy queue, enough to see the consumer ack at count 10.
			resets := 25
			if legacy {
				resets = 12
			}
			sessions := func() int { return strings.Count(e.logs.String(), "waiting for segments") }
			for i := 0; i < resets; i++ {
				// Wait for the next session, give it time to receive the
				// deliveries (placed or duplicates, unacked), then cut it.
				deadline := time.Now().Add(20 * time.Second)
				for sessions() < i+1 && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				// Over a second, so that the reconnect backoff restarts
				// at 200 ms each time instead of growing to 5 s.
				time.Sleep(1100 * time.Millisecond)
				px.Reset()
			}
			for deadline := time.Now().Add(20 * time.Second); sessions() < resets+1 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			e.publish(segs[n-1:])
			o := <-done
			if o.err != nil || o.panic != nil {
				t.Fatalf("Receive: %v %v", o.err, o.panic)
			}
			e.mustEqualFile(out, data)
			dead, left := e.queueDepth(e.topo.DeadQueue()), e.queueDepth(e.topo.Name())
			t.Logf("RabbitMQ %s, %s: %d reconnects, duplicates %d; dead %d, left %d", e.brokerVersion(), name, o.res.Reconnects, o.res.Duplicates, dead, left)
			if o.res.Reconnects < resets {
				t.Fatalf("%d reconnects, want at least %d", o.res.Reconnects, resets)
			}
			if dead != 0 || left != 0 {
				t.Fatalf("%s holds %d messages and %s %d", e.topo.DeadQueue(), dead, e.topo.Name(), left)
			}
			// RabbitMQ 3.x counts these returns too (x-delivery-count 1, 2,
			// ... on 3.10.8) but has no default delivery limit, so nothing
			// is at risk there and the consumer keeps acking by the batch.
			v4 := !strings.HasPrefix(e.brokerVersion(), "3.")
			if legacy && v4 && o.res.Duplicates > (riskyDeliveries+1)*(n-1) {
				t.Fatalf("on the legacy queue the deliveries came back %d times; the consumer should ack them at x-delivery-count %d", o.res.Duplicates/(n-1), riskyDeliveries)
			}
			warned := strings.Contains(e.logs.String(), "created without segmq's x-delivery-limit")
			if want := legacy && v4; warned != want {
				t.Fatalf("delivery-limit warning logged: %v, want %v", warned, want)
			}
		})
	}
}
