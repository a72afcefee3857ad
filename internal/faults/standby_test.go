package faults

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
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
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0
	}
	return q.Consumers
}
