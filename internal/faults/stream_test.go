package faults

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
)

// TestStreamRestartAndResets: on a stream, two consumers restore while the
// producer publishes through a slow link; one consumer's connections are
// cut, then the broker restarts mid-transfer; a third consumer starts
// after the producer has finished. Every file is exact, from one publish.
func TestStreamRestartAndResets(t *testing.T) {
	b := brokertest.Local(t)
	forEachRun(t, "stream-restart-resets", func(t *testing.T, r *rand.Rand) string {
		f := newFixture(t, 300_000)
		t.Cleanup(func() {
			if conn, err := amqp.Dial(f.url); err == nil {
				defer conn.Close()
				if ch, err := conn.Channel(); err == nil {
					ch.QueueDelete(f.queue+".index", false, false, false)
				}
			}
		})
		stream := []string{"--queue-type", "stream", "--timeout", "120s"}
		out := func(i int) string { return filepath.Join(f.dir, fmt.Sprintf("restored%d.bin", i)) }
		// 2 MiB/s: the ~21 MB publish takes ~10 s, so the broker's stop (a
		// rabbitmqctl call takes seconds under load) lands mid-transfer; at
		// 10 MiB/s the producer once finished first (reconnects=0).
		slow, _ := f.slowURL(2 << 20)
		cut, px := f.slowURL(40 << 20)
		prod := f.start(slow, "producer", append([]string{"--in", f.in, "--mss", mss, "--confirm-window", "32"}, stream...)...)
		time.Sleep(300 * time.Millisecond) // the stream exists once the producer has declared it
		c0 := f.start(f.url, "consumer", append([]string{"--out", out(0)}, stream...)...)
		c1 := f.start(cut, "consumer", append([]string{"--out", out(1)}, stream...)...)
		resets := 0
		for range 2 {
			time.Sleep(time.Duration(150+r.IntN(300)) * time.Millisecond)
			resets += px.Reset()
		}
		if err := b.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		mustExit(t, prod, 0, 150*time.Second)
		c2 := f.start(f.url, "consumer", append([]string{"--out", out(2)}, stream...)...)
		for _, c := range []*proc{c0, c1, c2} {
			mustExit(t, c, 0, 150*time.Second)
		}
		for i := range 3 {
			got, err := os.ReadFile(out(i))
			if err != nil || !bytes.Equal(got, f.data) {
				t.Fatalf("consumer %d: restored %d bytes (%v), want %d: NOT EXACT", i, len(got), err, len(f.data))
			}
		}
		if field(prod.out.String(), "reconnects") == "reconnects=0" {
			t.Fatalf("the producer never reconnected: the restart did not land mid-transfer\n%s", prod.out.String())
		}
		if resets == 0 {
			t.Fatal("no connection was live to reset: the fault did not land")
		}
		return fmt.Sprintf("resets=%d producer-%s consumers-%s,%s,%s bytes=%d", resets, field(prod.out.String(), "reconnects"),
			field(c0.out.String(), "reconnects"), field(c1.out.String(), "reconnects"), field(c2.out.String(), "reconnects"), len(f.data))
	})
}
