package faults

// Hostile review of branch review-cluster (= cluster@7818a9d). Each test
// states what a user should see and fails on the branch.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestReviewSACTakeoverByOtherOutLosesSegments: two consumers with
// different --out on a segmq queue (single-active-consumer). The second
// is told it is a "hot standby". When the first is SIGKILLed mid-transfer,
// the broker makes the second active: it has no .part of the first's, so
// it binds the transfer from a middle segment, places and ACKS the rest
// into its own other.bin.part, and can never finish (the first's segments
// were acked by the first). Rerunning the first consumer (same --out, its
// .part) then finds the queue empty: the transfer is split between two
// .part files and neither command can ever produce the file. The issue
// asks for exactly the opposite ("must not silently split a transfer").
func TestReviewSACTakeoverByOtherOutLosesSegments(t *testing.T) {
	f := newFixture(t, 60_000)
	mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss), 0, 2*time.Minute)
	first := f.start(f.url, "consumer", "--out", f.out(), "--prefetch", "2", "--ack-every", "2", "--timeout", "1m", "-v")
	waitProgress(t, f, first)
	other := filepath.Join(f.dir, "other.bin")
	second := f.start(f.url, "consumer", "--out", other, "--timeout", "5s", "-v")
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(second.out.String(), "hot standbys"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second consumer never said it is a standby:\n%s", second.out.String())
		}
	}
	first.kill()
	if code := first.wait(t, time.Minute); code == 0 {
		t.Fatalf("the first consumer finished before the kill:\n%s", first.out.String())
	}
	code := second.wait(t, 2*time.Minute)
	t.Logf("second consumer (other --out) exited %d; other.bin.part.state %d bytes", code, journalSize(other))
	again := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "10s", "-v")
	if code := again.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("the first consumer, rerun on its own .part, cannot finish (exit %d): the 'standby' with another --out took and acked the rest of the transfer.\nsecond:\n%s\nrerun:\n%s",
			code, tail(second.out.String(), 1500), tail(again.out.String(), 1500))
	}
	f.exact()
}

// TestReviewLegacyQueueSplitAfterReconnect: on a queue created without
// x-single-active-consumer the second consumer is refused only when it
// starts while the first is attached, and the check is skipped entirely
// after a reconnect (checkQueue: `case r.res.Reconnects == 0`). A network
// blip on the first consumer's connection is enough: the second starts
// during it (sees 1 consumer: itself), the first reconnects and does not
// check, and the two split the transfer; neither finishes. Now the
// claim in QUEUE.done decides (the earliest claim owns the run): one
// restores, the other acks nothing and refuses naming the owner.
func TestReviewLegacyQueueSplitAfterReconnect(t *testing.T) {
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
	proxied, px := f.slowURL(0)
	first := f.start(proxied, "consumer", "--out", f.out(), "--timeout", "15s", "-v")
	waitConsumers(t, f, 1, first)
	px.SetDown(true)
	px.Reset()
	waitConsumers(t, f, 0, first)
	second := f.start(f.url, "consumer", "--out", filepath.Join(f.dir, "other.bin"), "--timeout", "15s", "-v")
	waitConsumers(t, f, 1, second)
	px.SetDown(false)
	waitConsumers(t, f, 2, first)
	mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss), 0, time.Minute)
	// Both consumers were attached before the transfer was published, so
	// either may own it: the claim decides. Required: exactly one restores
	// the exact file, the other refuses naming the owner, nothing is split.
	c1, c2 := first.wait(t, 2*time.Minute), second.wait(t, 2*time.Minute)
	winner, loser, out := first, second, f.out()
	if c1 != 0 {
		winner, loser, out = second, first, filepath.Join(f.dir, "other.bin")
	}
	if (c1 == 0) == (c2 == 0) || !strings.Contains(loser.out.String(), "is being restored by ") {
		t.Fatalf("first consumer exited %d, second %d: want exactly one to restore and the other to refuse naming the owner.\nfirst:\n%s\nsecond:\n%s",
			c1, c2, tail(first.out.String(), 1500), tail(second.out.String(), 1500))
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("the consumer that exited 0 did not restore the exact file %s (%v):\n%s", out, err, tail(winner.out.String(), 1500))
	}
}

func waitConsumers(t *testing.T, f *fixture, n int, p *proc) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); consumers(t, f.url, f.queue) != n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue never had %d consumers:\n%s", n, p.out.String())
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestReviewStandbyWithRestartDiscardsActivePart (a --standby with
// --restart discarded the .part the SIGKILLed active consumer left) was
// fixed on main: --standby --restart is a usage error, checked in
// consumer/run_test.go.

// TestReviewSACBlipHandsTransferToOtherOut: no crash at all. Two
// consumers with different --out on a segmq queue (single-active-
// consumer); the first is restoring, the second is the "hot standby". The
// first's TCP connection is reset once (a failover, a NAT timeout): the
// broker activates the second, which takes and acks the rest of the
// transfer into its own .part; the first reconnects as the waiting
// consumer. Neither can ever finish.
func TestReviewSACBlipHandsTransferToOtherOut(t *testing.T) {
	f := newFixture(t, 60_000)
	mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss), 0, 2*time.Minute)
	proxied, px := f.slowURL(0)
	first := f.start(proxied, "consumer", "--out", f.out(), "--prefetch", "2", "--ack-every", "2", "--timeout", "15s", "-v")
	waitProgress(t, f, first)
	second := f.start(f.url, "consumer", "--out", filepath.Join(f.dir, "other.bin"), "--timeout", "10s", "-v")
	waitConsumers(t, f, 2, second)
	px.Reset()
	c1, c2 := first.wait(t, 2*time.Minute), second.wait(t, 2*time.Minute)
	if c1 != 0 {
		t.Fatalf("after one connection reset the first consumer exited %d (second %d): the SAC standby with another --out took over the transfer.\nfirst:\n%s\nsecond:\n%s",
			c1, c2, tail(first.out.String(), 1500), tail(second.out.String(), 1500))
	}
	f.exact()
}

// TestReviewSACStarvesOtherTransfer: on main before single-active-
// consumer, two consumers with their own --transfer on one queue each
// restored their transfer. With single-active-consumer on every segmq
// queue, the consumer waiting for a transfer not yet published (A, for X)
// is the only one the broker delivers to, and B (--transfer Y, every
// segment of Y in the queue) gets nothing while A runs. That is the design
// (one restore per queue at a time, so that two consumers never split a
// transfer), but it must not be silent: B says at once that it is a
// standby behind another consumer and what to do, and takes over (and
// restores Y) as soon as A stops.
func TestReviewSACStarvesOtherTransfer(t *testing.T) {
	f := newFixture(t, 20_000)
	mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss, "--transfer", "ytransfer"), 0, time.Minute)
	a := f.start(f.url, "consumer", "--out", filepath.Join(f.dir, "x.bin"), "--transfer", "xtransfer", "--timeout", "1m", "-v")
	waitConsumers(t, f, 1, a)
	b := f.start(f.url, "consumer", "--out", f.out(), "--transfer", "ytransfer", "--timeout", "1m", "-v")
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(b.out.String(), "One restore per queue at a time: use one queue (--queue) per concurrent restore"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("consumer --transfer ytransfer, behind a consumer of another transfer, never said it is a standby:\n%s", tail(b.out.String(), 1500))
		}
	}
	if !strings.Contains(b.out.String(), "standby: queue "+f.queue+" has 1 other consumer(s)") {
		t.Fatalf("the standby message does not name the queue and the other consumer:\n%s", tail(b.out.String(), 1500))
	}
	a.kill()
	a.wait(t, time.Minute)
	if code := b.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("consumer --transfer ytransfer exited %d after the consumer of another transfer stopped:\n%s", code, tail(b.out.String(), 1500))
	}
	f.exact()
}
