package rabbit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
)

func TestMain(m *testing.M) { os.Exit(brokertest.Main(m)) }

func dialTest(t *testing.T) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(brokertest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func testTopology(t *testing.T, qt string) Topology {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	topo := Topology{Queue: "rabbit-test-" + hex.EncodeToString(b[:]), Type: qt}
	url := brokertest.URL(t)
	t.Cleanup(func() {
		if conn, err := amqp.Dial(url); err == nil {
			ch, _ := conn.Channel()
			for _, q := range []string{topo.Name(), topo.DeadQueue(), topo.DoneQueue()} {
				ch.QueueDelete(q, false, false, false)
			}
			ch.ExchangeDelete(topo.DLX(), false, false)
			conn.Close()
		}
	})
	return topo
}

// legacyDeclare creates the queue as segmq did before it set
// single-active-consumer and the delivery limit.
func legacyDeclare(t *testing.T, conn *amqp.Connection, topo Topology) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(topo.Name(), true, false, false, false, amqp.Table{amqp.QueueTypeArg: topo.Type, "x-dead-letter-exchange": topo.DLX()}); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureArguments(t *testing.T) {
	conn := dialTest(t)
	for _, tc := range []struct {
		qt      string
		legacy  bool
		sac     bool
		limit   bool
		missing string
	}{
		{Classic, false, true, true, ""},
		{Quorum, false, true, true, ""},
		{Classic, true, false, true, "x-single-active-consumer"},
		{Quorum, true, false, false, "x-single-active-consumer, x-delivery-limit"},
	} {
		topo := testTopology(t, tc.qt)
		if tc.legacy {
			legacyDeclare(t, conn, topo)
		}
		q, err := Ensure(conn, topo)
		if err != nil {
			t.Fatalf("%s legacy=%v: %v", tc.qt, tc.legacy, err)
		}
		if q.SingleActive != tc.sac || q.DeliveryLimit != tc.limit || strings.Join(q.Missing, ", ") != tc.missing {
			t.Errorf("%s legacy=%v: %+v", tc.qt, tc.legacy, q)
		}
		if want := tc.qt == Quorum && tc.legacy && !strings.HasPrefix(q.Version, "3."); q.LimitApplies() != want {
			t.Errorf("%s legacy=%v on %s: LimitApplies %v", tc.qt, tc.legacy, q.Version, q.LimitApplies())
		}
		// Declaring again changes nothing.
		if q2, err := Ensure(conn, topo); err != nil || q2.SingleActive != q.SingleActive || q2.DeliveryLimit != q.DeliveryLimit {
			t.Errorf("%s legacy=%v: second Ensure %+v, %v", tc.qt, tc.legacy, q2, err)
		}
	}
	// Another queue type is still an error that says what to do.
	topo := testTopology(t, Classic)
	if _, err := Ensure(conn, topo); err != nil {
		t.Fatal(err)
	}
	topo.Type = Quorum
	if _, err := Ensure(conn, topo); err == nil || !strings.Contains(err.Error(), "pass --queue-type classic") {
		t.Fatalf("type conflict: %v", err)
	}
}

// returnUnacked delivers the queue's one message to n consumers in turn,
// each closing its connection with the message unacked (as a consumer
// that loses its connection does), and reports how many times it was
// delivered and whether it is still in the queue.
func returnUnacked(t *testing.T, queue string, n int) (delivered int, left int) {
	t.Helper()
	for range n {
		conn := dialTest(t)
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		ch.Qos(1, 0, false)
		ds, err := ch.Consume(queue, "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ds:
			delivered++
		case <-time.After(2 * time.Second):
		}
		conn.Close()
	}
	conn := dialTest(t)
	_, left, err := Consumers(conn, queue)
	if err != nil {
		t.Fatal(err)
	}
	return delivered, left
}

// A quorum queue that segmq declares keeps a message returned 25 times
// by consumers whose connection closed with it unacked. On RabbitMQ 4.x,
// the same queue declared without x-delivery-limit dead-letters it at
// its 21st return: the broker counts a lost consumer toward the limit.
func TestDeliveryLimitLostConsumers(t *testing.T) {
	conn := dialTest(t)
	for _, legacy := range []bool{false, true} {
		topo := testTopology(t, Quorum)
		if legacy {
			legacyDeclare(t, conn, topo)
		}
		q, err := Ensure(conn, topo)
		if err != nil {
			t.Fatal(err)
		}
		ch, _ := conn.Channel()
		ch.Confirm(false)
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", topo.Name(), false, false, amqp.Publishing{Body: []byte("seg"), DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			t.Fatal("publish not confirmed")
		}
		ch.Close()
		delivered, left := returnUnacked(t, topo.Name(), 25)
		_, dead, _ := Consumers(conn, topo.DeadQueue())
		t.Logf("RabbitMQ %s, legacy=%v: delivered %d times, %d left in the queue, %d dead-lettered", q.Version, legacy, delivered, left, dead)
		if !legacy || strings.HasPrefix(q.Version, "3.") {
			if delivered != 25 || left != 1 || dead != 0 {
				t.Errorf("legacy=%v: delivered %d, left %d, dead %d; want 25, 1, 0", legacy, delivered, left, dead)
			}
		} else if delivered != 21 || left != 0 || dead != 1 {
			t.Errorf("4.x without x-delivery-limit: delivered %d, left %d, dead %d; want 21, 0, 1 (the default limit of 20)", delivered, left, dead)
		}
	}
}

// DialAny tries every node in turn and connects to a live one; when none
// answers, the error names each node without its password.
func TestDialAnyNodes(t *testing.T) {
	live := brokertest.URL(t)
	deadURL := "amqp://guest:s3cr3t-node@127.0.0.1:1/"
	ctx := context.Background()
	conn, i, err := DialAny(ctx, DialConfig{URL: deadURL + "," + live})
	if err != nil || i != 1 {
		t.Fatalf("DialAny: node %d, %v", i, err)
	}
	conn.Close()
	// First picks where to start.
	conn, i, err = DialAny(ctx, DialConfig{URL: live + "," + deadURL, First: 1})
	if err != nil || i != 0 {
		t.Fatalf("DialAny from node 1: node %d, %v", i, err)
	}
	conn.Close()
	_, _, err = DialAny(ctx, DialConfig{URL: deadURL + "," + strings.Replace(deadURL, ":1/", ":2/", 1), Timeout: time.Second})
	var de *DialError
	if err == nil || !errors.As(err, &de) || strings.Contains(err.Error(), "s3cr3t") || strings.Count(err.Error(), "amqp://guest:xxxxx@127.0.0.1:") != 2 {
		t.Fatalf("no node: %v", err)
	}
	if got := Redact(deadURL + "," + live); strings.Contains(got, "s3cr3t") || strings.Count(got, "xxxxx") != 2 {
		t.Fatalf("Redact of a list: %q", got)
	}
}
