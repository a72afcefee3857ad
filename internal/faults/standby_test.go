package faults

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
)

// journalSize is the size of a consumer's OUT.part.state (0 if absent).
func journalSize(out string) int64 {
	fi, err := os.Stat(out + ".part.state")
	if err != nil {
		return 0
	}
	return fi.Size()
}

// partSize is the length of a consumer's OUT.part (0 if absent): about
// its progress, since segments arrive about in order.
func partSize(out string) int64 {
	fi, err := os.Stat(out + ".part")
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitProgress waits until the consumer writing out has a tenth of the
// file in its .part, and made it durable.
func waitProgress(t *testing.T, f *fixture, p *proc) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); partSize(f.out()) < int64(len(f.data)/10) || journalSize(f.out()) == 0; {
		select {
		case <-p.done:
			t.Fatalf("the consumer ended before it made progress:\n%s", p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer made no progress in 1m:\n%s", p.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStandbyTakesOver: a consumer restores while a second one, with the
// same --out and --standby, waits; the first is SIGKILLed mid-transfer;
// the standby takes over from the .part it left and ends with the exact
// file. On a classic and a quorum queue (single-active-consumer on both).
func TestStandbyTakesOver(t *testing.T) {
	for _, qt := range []string{"classic", "quorum"} {
		t.Run(qt, func(t *testing.T) {
			f := newFixture(t, 300_000)
			mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss, "--queue-type", qt), 0, 2*time.Minute)
			slow := []string{"--out", f.out(), "--queue-type", qt, "--prefetch", "2", "--ack-every", "2", "--timeout", "1m", "-v"}
			active := f.start(f.url, "consumer", slow...)
			waitProgress(t, f, active)
			// The standby at full speed: only the active one is slowed.
			standby := f.start(f.url, "consumer", "--out", f.out(), "--queue-type", qt, "--timeout", "1m", "-v", "--standby")
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(standby.out.String(), "standing by"); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the standby never said it stands by:\n%s", standby.out.String())
				}
			}
			before := journalSize(f.out())
			active.kill()
			if code := active.wait(t, time.Minute); code == 0 {
				t.Fatalf("the active consumer finished before the kill; slow it down:\n%s", active.out.String())
			}
			mustExit(t, standby, 0, 2*time.Minute)
			detail := f.exact()
			if !strings.Contains(standby.out.String(), "resuming transfer") {
				t.Fatalf("the standby did not resume from the .part (journal was %d bytes):\n%s", before, standby.out.String())
			}
			t.Logf("standby took over after SIGKILL at journal %d bytes: %s", before, detail)
		})
	}
}

// TestStandbyExitsWhenActiveFinishes: a standby on the same --out whose
// active consumer restores the file exits 0 and says so.
func TestStandbyExitsWhenActiveFinishes(t *testing.T) {
	f := newFixture(t, 20_000)
	active := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "1m")
	for deadline := time.Now().Add(30 * time.Second); journalSize(f.out()) == 0 && !fileExists(f.out()+".part.lock"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the consumer never took its lock")
		}
	}
	standby := f.start(f.url, "consumer", "--out", f.out(), "--standby", "--timeout", "1m")
	mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss), 0, time.Minute)
	mustExit(t, active, 0, time.Minute)
	mustExit(t, standby, 0, time.Minute)
	f.exact()
	if !strings.Contains(standby.out.String(), "nothing to do: the consumer this one stood by for restored") {
		t.Fatalf("standby output:\n%s", standby.out.String())
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestTwoConsumersNeverSplit: two consumers with different --out on one
// queue. With single-active-consumer (segmq's queues) the second gets
// nothing while the first restores: the first's file is exact, the second
// times out having received no segment. On a queue created without it,
// the second refuses to start and says why and what to do; the first's
// file is exact.
func TestTwoConsumersNeverSplit(t *testing.T) {
	t.Run("single-active-consumer", func(t *testing.T) {
		f := newFixture(t, 100_000)
		mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss), 0, 2*time.Minute)
		first := f.start(f.url, "consumer", "--out", f.out(), "--prefetch", "2", "--ack-every", "2", "--timeout", "1m", "-v")
		waitProgress(t, f, first)
		other := filepath.Join(f.dir, "other.bin")
		second := f.start(f.url, "consumer", "--out", other, "--timeout", "3s", "-v")
		mustExit(t, first, 0, 2*time.Minute)
		mustExit(t, second, 1, time.Minute)
		f.exact()
		if s := second.out.String(); !strings.Contains(s, "hot standbys") || !strings.Contains(s, "no segment of the first to arrive received") {
			t.Fatalf("second consumer:\n%s", s)
		}
		if fileExists(other) || journalSize(other) != 0 {
			t.Fatal("the second consumer wrote something")
		}
	})
	t.Run("legacy-queue", func(t *testing.T) {
		f := newFixture(t, 20_000)
		f.declareLegacyQueue()
		first := f.start(f.url, "consumer", "--out", f.out(), "--timeout", "1m")
		for deadline := time.Now().Add(30 * time.Second); consumers(t, f.url, f.queue) < 1; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the first consumer never subscribed:\n%s", first.out.String())
			}
		}
		second := f.start(f.url, "consumer", "--out", filepath.Join(f.dir, "other.bin"), "--timeout", "1m")
		mustExit(t, second, 1, time.Minute)
		want := "already has 1 other consumer(s), and it was created without x-single-active-consumer, so two consumers would split a transfer"
		if !strings.Contains(second.out.String(), want) || !strings.Contains(second.out.String(), "rabbitmqctl delete_queue "+f.queue) {
			t.Fatalf("second consumer:\n%s\nwant %q", second.out.String(), want)
		}
		mustExit(t, f.start(f.url, "producer", "--in", f.in, "--mss", mss), 0, time.Minute)
		mustExit(t, first, 0, time.Minute)
		f.exact()
	})
}

func consumers(t *testing.T, url, queue string) int {
	t.Helper()
	q, err := brokertest.Inspect(t, url, queue)
	if err != nil {
		return 0
	}
	return q.Consumers
}

// declareLegacyQueue declares f.queue as segmq did before
// single-active-consumer: a classic queue with its dead-letter exchange.
func (f *fixture) declareLegacyQueue() {
	f.t.Helper()
	conn, err := amqp.Dial(f.url)
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	ch.ExchangeDeclare(f.queue+".dlx", "fanout", true, false, false, false, nil)
	if _, err := ch.QueueDeclare(f.queue, true, false, false, false, amqp.Table{"x-queue-type": "classic", "x-dead-letter-exchange": f.queue + ".dlx"}); err != nil {
		f.t.Fatal(err)
	}
}

// TestTwoConsumersNeverSplitOnKill: two consumers with different --out
// on a segmq queue (single-active-consumer); the second is told it is a
// "hot standby". When the first is SIGKILLed mid-transfer and the broker
// makes the second active, the second (no .part of the first's) does not
// take and ack the rest of the transfer into its own .part: rerunning the
// first consumer on its own .part finishes with the exact file. A
// transfer is never silently split between two .part files.
func TestTwoConsumersNeverSplitOnKill(t *testing.T) {
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

// TestTwoConsumersNeverSplitLegacyQueueReconnect: on a queue created
// without x-single-active-consumer, the check that refuses a second
// consumer runs only when a consumer starts, not after a reconnect. A
// network blip on the first consumer's connection lets the second start
// (it sees 1 consumer: itself) and the first reconnect: both are attached
// when the transfer is published. The claim in QUEUE.done decides (the
// earliest claim owns the run): exactly one restores the exact file, the
// other acks nothing and refuses naming the owner.
func TestTwoConsumersNeverSplitLegacyQueueReconnect(t *testing.T) {
	f := newFixture(t, 20_000)
	f.declareLegacyQueue()
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

// waitConsumers waits until f.queue has n consumers.
func waitConsumers(t *testing.T, f *fixture, n int, p *proc) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); consumers(t, f.url, f.queue) != n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue never had %d consumers:\n%s", n, p.out.String())
		}
	}
}

// tail is the last n bytes of a command's output, for a message.
func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestTwoConsumersNeverSplitOnConnectionReset: no crash at all. Two
// consumers with different --out on a segmq queue (single-active-
// consumer); the first is restoring, the second is the "hot standby". The
// first's TCP connection is reset once (a failover, a NAT timeout) and the
// broker activates the second: the second does not take over the
// transfer, and the first, reconnected, finishes with the exact file.
func TestTwoConsumersNeverSplitOnConnectionReset(t *testing.T) {
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

// TestStandbyBehindOtherTransferSaysSoAndTakesOver: with single-active-
// consumer on every segmq queue, a consumer waiting for a transfer not yet
// published (A, --transfer X) is the only one the broker delivers to, and
// B (--transfer Y, every segment of Y in the queue) gets nothing while A
// runs. That is the design (one restore per queue at a time, so that two
// consumers never split a transfer), but it is not silent: B says at once
// that it is a standby behind another consumer, naming the queue and what
// to do, and takes over (and restores Y) as soon as A stops.
func TestStandbyBehindOtherTransferSaysSoAndTakesOver(t *testing.T) {
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
