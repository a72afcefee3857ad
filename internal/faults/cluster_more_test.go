//go:build faults

package faults

import "testing"

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
