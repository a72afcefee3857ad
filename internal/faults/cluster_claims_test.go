//go:build faults

package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/localbroker"
	"github.com/segmq/segmq/rabbit"
)

// TestClusterClaimsSurviveNodeLoss: the claims stream of a queue on a
// 3-node cluster keeps a confirmed claim when the node hosting the
// stream's leader is SIGKILLed, and takes (and orders after it) a new
// claim through a surviving node: the lowest offset still names the first
// claimer.
func TestClusterClaimsSurviveNodeLoss(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	topo := rabbit.Topology{Queue: "claimsq", Type: rabbit.Quorum}
	conn, err := amqp.Dial(c.Nodes[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := rabbit.DeclareClaims(conn, topo); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	node, err := c.Nodes[0].Ctl(ctx, "eval", fmt.Sprintf(`{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"%s">>)), node(amqqueue:get_pid(Q)).`, topo.ClaimsQueue()))
	if err != nil {
		t.Fatal(err)
	}
	var leader *localbroker.Broker
	for _, b := range c.Nodes {
		if b.Node == strings.Trim(strings.TrimSpace(node), "'") {
			leader = b
		}
	}
	if leader == nil {
		t.Fatalf("the stream's leader is on %q, not a node of the cluster", node)
	}
	var other *localbroker.Broker
	for _, b := range c.Nodes {
		if b != leader {
			other = b
			break
		}
	}
	publish := func(url, owner string) error {
		conn, err := amqp.Dial(url)
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", topo.ClaimsQueue(), true, false, amqp.Publishing{
			Headers: amqp.Table{"segmq-transfer": "t", "segmq-run": "r", "segmq-claim": owner, "segmq-claim-nonce": owner},
		})
		if err != nil {
			return err
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return fmt.Errorf("confirm %v: %v", ok, err)
		}
		return nil
	}
	if err := publish(other.URL, "first"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	for {
		err := publish(other.URL, "second")
		if err == nil {
			break
		}
		if time.Since(killed) > time.Minute {
			t.Fatalf("no claim confirmed within a minute of the leader's loss: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("PAUSE claims stream writable again %s after its leader's node was killed", time.Since(killed).Round(time.Millisecond))
	conn, err = amqp.Dial(other.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	ch.Qos(10, 0, false)
	ds, err := ch.Consume(topo.ClaimsQueue(), "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		select {
		case d := <-ds:
			d.Ack(false)
			got = append(got, fmt.Sprint(d.Headers["segmq-claim"]))
		case <-time.After(30 * time.Second):
			t.Fatalf("read %v from the claims stream, want [first second]", got)
		}
	}
	if got[0] != "first" || got[1] != "second" {
		t.Fatalf("claims stream after the node loss reads %v, want [first second]", got)
	}
}
