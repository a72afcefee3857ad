//go:build faults

package faults

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
)

// TestReviewClusterDoneQueueNodeDown: on a 3-node cluster with a quorum
// queue, QUEUE.done stays a classic (unreplicated) queue on the node that
// first declared it. With that one node down (the other two and the
// quorum queue healthy), can producer and consumer still run, given every
// session re-declares QUEUE.done?
func TestReviewClusterDoneQueueNodeDown(t *testing.T) {
	c := startCluster(t)
	var b [6]byte
	rand.Read(b[:])
	f := &fixture{t: t, dir: t.TempDir(), queue: "donedown-" + hex.EncodeToString(b[:])}
	data, err := genData(20_000)
	if err != nil {
		t.Fatal(err)
	}
	f.data, f.in = data, filepath.Join(f.dir, "db.bin")
	if err := os.WriteFile(f.in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(c.Nodes[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := rabbit.Declare(conn, rabbit.Topology{Queue: f.queue, Type: rabbit.Quorum}); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := c.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	urls := c.URLs()
	flags := []string{"--url", urls[1] + "," + urls[2], "--queue-type", "quorum"}
	cons := f.start("", "consumer", append(flags, "--out", f.out(), "--timeout", "1m", "-v")...)
	prod := f.start("", "producer", append(flags, "--in", f.in, "--mss", mss, "--timeout", "1m", "-v")...)
	mustExit(t, prod, 0, 2*time.Minute)
	mustExit(t, cons, 0, 2*time.Minute)
	f.exact()
}
