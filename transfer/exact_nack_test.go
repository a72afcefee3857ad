package transfer

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/tcpproxy"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
)

// Defect 3: a segment the broker nacks is republished; if the channel is
// lost between the nack and the republish, the segment is dropped (it is
// neither in flight nor in the retry list) and Send still returns nil.
//
// Black-box: the queue has a policy max-length 4 / overflow
// reject-publish, so the broker nacks most publishes; a slow drainer
// takes one message at a time so the transfer can progress; the
// producer's connection goes through a proxy that is reset at random
// moments while nacks are being republished. Whenever Send reports
// success, every segment must have reached the queue. Rounds repeat for
// a fixed budget; the test fails on the first round that loses a segment.
func TestExactNackThenLostChannel(t *testing.T) {
	b := brokertest.Local(t)
	url := brokertest.URL(t)
	up := strings.TrimSuffix(strings.SplitN(url, "@", 2)[1], "/")
	budget := time.Now().Add(45 * time.Second)
	var rounds, succeeded int
	for round := 0; time.Now().Before(budget); round++ {
		rounds++
		e := newEnv(t)
		ctx, cancel := context.WithTimeout(context.Background(), exactBound)
		if _, err := b.Ctl(ctx, "set_policy", "exact-nack-"+e.topo.Name(), "^"+e.topo.Name()+"$",
			`{"max-length":4,"overflow":"reject-publish"}`, "--apply-to", "queues"); err != nil {
			cancel()
			t.Fatalf("set_policy: %v", err)
		}
		px, err := tcpproxy.New(up)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		const mss, n = 512, 64
		data := randData(uint64(300+round), n*mss-7)
		in := e.file("in.bin", data)
		type sendOutcome struct {
			res SendResult
			err error
		}
		sent := make(chan sendOutcome, 1)
		go func() {
			res, err := Send(ctx, in, SendConfig{Dial: rabbit.DialConfig{URL: strings.Replace(url, up, px.Addr, 1)}, Topology: e.topo,
				MSS: mss, ConfirmWindow: 32, Raw: true, State: "-", Timeout: 20 * time.Second, Log: e.log})
			sent <- sendOutcome{res, err}
		}()
		// The resetter: a few resets at random moments while the
		// producer is busy with nacks.
		stopReset := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(round), 7))
			for i := 0; i < 3; i++ {
				select {
				case <-time.After(time.Duration(30+r.IntN(150)) * time.Millisecond):
					px.Reset()
				case <-stopReset:
					return
				}
			}
		}()
		// The drainer: one message every couple of milliseconds.
		got := map[uint32]bool{}
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		var o sendOutcome
		done, idleSince := false, time.Time{}
		for {
			if !done {
				select {
				case o = <-sent:
					done = true
					close(stopReset)
				default:
				}
			}
			d, ok, err := ch.Get(e.topo.Name(), false)
			if err != nil {
				if done {
					break // queue not declared: the send never connected
				}
				time.Sleep(2 * time.Millisecond)
				ch.Close()
				if ch, err = conn.Channel(); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if ok {
				h, _, err := segment.Decode(d.Body)
				if err != nil {
					t.Fatal(err)
				}
				got[h.Seq] = true
				d.Ack(false)
				idleSince = time.Time{}
			} else if done {
				if idleSince.IsZero() {
					idleSince = time.Now()
				} else if time.Since(idleSince) > 500*time.Millisecond {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		ch.Close()
		conn.Close()
		wg.Wait()
		px.Close()
		b.Ctl(ctx, "clear_policy", "exact-nack-"+e.topo.Name())
		cancel()
		if o.err != nil {
			t.Logf("round %d: Send failed (loud, acceptable): %v", round, o.err)
			continue
		}
		succeeded++
		var missing []uint32
		for s := uint32(0); s < n; s++ {
			if !got[s] {
				missing = append(missing, s)
			}
		}
		t.Logf("round %d: Send ok, republished %d, reconnects %d, %d of %d segments reached the queue", round, o.res.Republished, o.res.Reconnects, len(got), n)
		if len(missing) > 0 {
			t.Fatalf("round %d: Send returned nil (exit 0) but segments %v never reached the queue (republished %d, reconnects %d)", round, missing, o.res.Republished, o.res.Reconnects)
		}
	}
	t.Logf("%d rounds, %d successful sends, no segment lost", rounds, succeeded)
}
