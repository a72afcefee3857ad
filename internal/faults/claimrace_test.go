package faults

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/tcpproxy"
)

// TestClaimRaceLegacyQueue: four consumer processes, each with its own
// --out, all attached to one queue created without single-active-consumer
// (the legacy case), when the producer publishes. The broker spreads the
// segments over all four and each acks every segment (--ack-every 1), so
// all four reach their first ack within milliseconds of each other. (The
// previous protocol, claims read back from QUEUE.done, failed 2 of these
// 3 rounds: a loser naming the wrong owner, then no owner at all.) Consumers that find another one attached
// refuse at start (SplitError), so the first three are attached and then
// cut off and reconnected (after a reconnect that check cannot tell who
// came first): the claim alone decides. Required: exactly one exits 0
// with the exact file; every other exits 1 naming that owner and leaves
// no --out; the queue ends empty (nothing lost, nothing left behind).
// Three rounds, each on a fresh queue.
func TestClaimRaceLegacyQueue(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprintf("round=%d", round), claimRaceLegacyQueue)
	}
}

func claimRaceLegacyQueue(t *testing.T) {
	const n = 4
	f := newFixture(t, 20_000)
	conn, err := amqp.Dial(f.url)
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := conn.Channel()
	ch.ExchangeDeclare(f.queue+".dlx", "fanout", true, false, false, false, nil)
	if _, err := ch.QueueDeclare(f.queue, true, false, false, false, amqp.Table{"x-queue-type": "classic", "x-dead-letter-exchange": f.queue + ".dlx"}); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	outs := make([]string, n)
	procs := make([]*proc, n)
	proxies := make([]*tcpproxy.Proxy, n)
	for i := range n {
		outs[i] = filepath.Join(f.dir, fmt.Sprintf("out%d.bin", i))
		var u string
		u, proxies[i] = f.slowURL(0)
		procs[i] = f.start(u, "consumer", "--out", outs[i], "--ack-every", "1", "--timeout", "20s", "-v")
		waitConsumers(t, f, 1, procs[i])
		if i < n-1 {
			proxies[i].SetDown(true)
			proxies[i].Reset()
			waitConsumers(t, f, 0, procs[i])
		}
	}
	for _, px := range proxies[:n-1] {
		px.SetDown(false)
	}
	waitConsumers(t, f, n, procs[0])
	mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss), 0, time.Minute)
	codes := make([]int, n)
	winner := -1
	for i, p := range procs {
		if codes[i] = p.wait(t, 2*time.Minute); codes[i] == 0 {
			if winner >= 0 {
				t.Fatalf("consumers %d and %d both exited 0", winner, i)
			}
			winner = i
		}
	}
	var all strings.Builder
	for i, p := range procs {
		fmt.Fprintf(&all, "--- consumer %d (exit %d):\n%s\n", i, codes[i], tail(p.out.String(), 1200))
	}
	if winner < 0 {
		t.Fatalf("no consumer restored the file (exits %v):\n%s", codes, all.String())
	}
	host, _ := os.Hostname()
	owner := host + ":" + outs[winner]
	for i, p := range procs {
		if i == winner {
			continue
		}
		if want := "is being restored by " + owner; codes[i] != 1 || !strings.Contains(p.out.String(), want) {
			t.Fatalf("consumer %d exited %d without %q:\n%s", i, codes[i], want, all.String())
		}
		if _, err := os.Stat(outs[i]); !os.IsNotExist(err) {
			t.Fatalf("consumer %d refused but %s exists (%v)", i, outs[i], err)
		}
	}
	got, err := os.ReadFile(outs[winner])
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("consumer %d exited 0 but %s is not the exact file (%v):\n%s", winner, outs[winner], err, all.String())
	}
	if q, err := brokertest.Inspect(t, f.url, f.queue); err != nil || q.Consumers != 0 || q.Messages != 0 {
		t.Fatalf("queue %s ends with %d consumers and %d messages (%v), want none:\n%s", f.queue, q.Consumers, q.Messages, err, all.String())
	}
	t.Logf("consumer %d of %d owns the run; exits %v", winner, n, codes)
}
