package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/localbroker"
	"github.com/segmq/segmq/rabbit"
)

// startCluster starts three nodes (4.0.5, or the host's version with
// SEGMQ_RABBITMQ_ROOT=) for one test.
func startCluster(t *testing.T) *localbroker.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := localbroker.StartCluster(ctx, localbroker.ClusterOptions{Root: localbroker.RootFromEnv()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Logf("3-node cluster up in %s", time.Since(start).Round(time.Millisecond))
	return c
}

// failover runs producer and consumer against the cluster with every
// node's URL (node 0 first, so both connect to node 0), on a quorum queue
// whose leader is node leader, and SIGKILLs node kill mid-transfer. Both
// commands must exit 0 and the file must be exact. It returns the pause:
// from the kill until the consumer had written another MiB.
func failover(t *testing.T, leader, kill int) time.Duration {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := clusterFixture(t, c, "failover", leader, 250_000)
	data := f.data
	if got, err := c.Leader(ctx, f.queue); err != nil || got != c.Nodes[leader] {
		t.Fatalf("leader of %s: %v (%v), want node %d", f.queue, got, err, leader)
	}
	victim := c.Nodes[kill]
	urls := c.URLs()
	// Both forms: a comma-separated list and a repeated flag.
	flags := []string{"--url", urls[0] + "," + urls[1], "--url", urls[2], "--queue-type", "quorum"}
	// Slowed so that the kill lands mid-transfer for both: one publish
	// in flight at a time, a small prefetch and an fsync per batch of 4.
	cons := f.start("", "consumer", append(flags, "--out", f.out(), "--prefetch", "4", "--ack-every", "4", "--timeout", "2m", "-v")...)
	prod := f.start("", "producer", append(flags, "--in", f.in, "--mss", mss, "--confirm-window", "1", "--timeout", "2m", "-v")...)
	// Progress is the .part's length: segments arrive about in order.
	size := func() int64 { return partSize(f.out()) }
	deadline := time.Now().Add(2 * time.Minute)
	for size() < int64(len(data)/4) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-prod.done:
		t.Fatalf("the producer finished before the kill; slow it down:\n%s", prod.out.String())
	default:
	}
	before := size()
	if before < int64(len(data)/4) {
		t.Fatalf("the consumer made no progress in 2m:\n%s", cons.out.String())
	}
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	var pause time.Duration
	for time.Now().Before(killed.Add(2 * time.Minute)) {
		if s := size(); s > before+1<<20 || s == 0 {
			pause = time.Since(killed)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustExit(t, prod, 0, 3*time.Minute)
	mustExit(t, cons, 0, 3*time.Minute)
	detail := f.exact()
	if strings.Contains(prod.out.String()+cons.out.String(), "guest:guest@") {
		t.Fatalf("a log line shows a password:\n%s\n%s", prod.out.String(), cons.out.String())
	}
	// The clients' own view of the failover: when each logged the new
	// connection.
	for _, p := range []*proc{prod, cons} {
		if m := reconnected.FindStringSubmatch(p.out.String()); m != nil {
			if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				t.Logf("%s reconnected to %s %s after the kill", filepath.Base(p.cmd.Path), m[2], at.Sub(killed).Round(time.Millisecond))
			}
		} else {
			t.Logf("%s did not reconnect (its node lived)", filepath.Base(p.cmd.Path))
		}
	}
	for _, p := range []*proc{prod, cons} {
		if m := summary.FindString(p.out.String()); m != "" {
			t.Log(m)
		}
	}
	t.Logf("PAUSE leader=node%d killed=node%d: the consumer's .part grew by 1 MiB again %s after the SIGKILL; %s", leader, kill, pause.Round(time.Millisecond), detail)
	return pause
}

var summary = regexp.MustCompile(`(?m)^(sent|received) transfer .*$`)

var reconnected = regexp.MustCompile(`time=(\S+) level=INFO msg="connected to the broker" node=(\S+)`)

// clusterFixture is a fixture on cluster c: a quorum queue named
// prefix-RANDOM, declared through node (the queue's leader is the node
// that declares it: client-local), and a generated snapshot of rows rows.
// Its url is empty: the tests pass the nodes' URLs as flags.
func clusterFixture(t *testing.T, c *localbroker.Cluster, prefix string, node int, rows int64) *fixture {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	f := fixtureOn(t, "", prefix+"-"+hex.EncodeToString(b[:]), rows)
	conn, err := amqp.Dial(c.Nodes[node].URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := rabbit.Declare(conn, rabbit.Topology{Queue: f.queue, Type: rabbit.Quorum}); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestClusterFailoverLeaderAndClientNode: producer and consumer are
// connected to the node that hosts the quorum queue's leader, and that
// node is SIGKILLed mid-transfer: both move to another node, a new
// leader is elected, the file is exact and both exit 0. (make faults
// runs the leader-only and client-node-only cases too.)
func TestClusterFailoverLeaderAndClientNode(t *testing.T) {
	failover(t, 0, 0)
}
