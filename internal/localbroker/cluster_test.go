package localbroker

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestCluster forms a 3-node cluster, finds a quorum queue's leader,
// SIGKILLs that node, sees a new leader elected on another node, and
// restarts the killed node into the cluster.
func TestCluster(t *testing.T) {
	if !Installed(RootFromEnv()) {
		t.Fatal(ErrNotInstalled)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := StartCluster(ctx, ClusterOptions{Root: RootFromEnv()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("3-node cluster up in %s", time.Since(start).Round(time.Millisecond))
	conn, err := amqp.Dial(c.Nodes[1].URL)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("q", true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	leader, err := c.Leader(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	if leader.Running() || probe("127.0.0.1:"+itoa(leader.Port)) {
		t.Fatal("killed node still answers")
	}
	var next *Broker
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if next, err = c.Leader(ctx, "q"); err == nil && next != leader {
			break
		}
	}
	if next == nil || next == leader {
		t.Fatalf("no new leader after the old one was killed: %v", err)
	}
	if err := leader.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRunning(ctx, 3); err != nil {
		t.Fatal(err)
	}
}
