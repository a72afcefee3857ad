//go:build faults

package faults

import (
	"testing"
	"time"
)

// make faults only (-tags faults); make test keeps one failover case.

// TestClusterFailoverLeaderOnly: the node that hosts the quorum queue's
// leader dies, but neither client is connected to it: their connections
// live on while a new leader is elected.
func TestClusterFailoverLeaderOnly(t *testing.T) {
	failover(t, 2, 2)
}

// TestClusterFailoverClientNodeOnly: the node both clients are connected
// to dies, but the leader is elsewhere: they reconnect to another node.
func TestClusterFailoverClientNodeOnly(t *testing.T) {
	failover(t, 2, 0)
}

// TestClusterRunsWithDoneQueueNodeDown: on a 3-node cluster with a quorum
// queue, QUEUE.done stays a classic (unreplicated) queue on the node that
// first declared it. With that one node down (the other two and the
// quorum queue healthy), producer and consumer still run, although every
// session re-declares QUEUE.done, and the file is exact.
func TestClusterRunsWithDoneQueueNodeDown(t *testing.T) {
	c := startCluster(t)
	f := clusterFixture(t, c, "donedown", 0, 20_000)
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
