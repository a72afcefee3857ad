package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/localbroker"
)

func TestUsage(t *testing.T) {
	t.Setenv(localbroker.RootEnv, "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"start", "--dir", t.TempDir(), "--nodes", "3"}, "--nodes 3 needs the RabbitMQ 4.0.5 root: set $" + localbroker.RootEnv + " or pass --root"},
		{[]string{"start", "--dir", t.TempDir(), "--nodes", "0"}, "--nodes must be >= 1, got 0"},
		{[]string{"start", "--dir", t.TempDir(), "--nodes", "3", "--port", "5999", "--root", "/nonexistent"}, "--port is for one node"},
		{[]string{"start", "--dir", "/tmp/x", "--nodes", "3", "--root", "/nonexistent"}, "no rabbitmq-server in the root /nonexistent"},
		{[]string{"stop", "--dir", t.TempDir()}, "no broker recorded in"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("localbroker %s: %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// TestCluster: start --nodes 3 prints three comma-separated URLs of one
// cluster (a quorum queue declared through the first node is seen, with
// its message, through the third); stop ends every node.
func TestCluster(t *testing.T) {
	root := localbroker.RootFromEnv()
	if !localbroker.Installed(root) || root == "" {
		t.Fatalf("needs the RabbitMQ 4.0.5 root in $%s (scripts/setup.sh builds it)", localbroker.RootEnv)
	}
	dir, err := os.MkdirTemp(filepath.Join(root, os.TempDir()), "segmq-cli-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"start", "--dir", dir, "--nodes", "3"}, &out, &errb); err != nil {
		t.Fatalf("start --nodes 3: %v\n%s", err, errb.String())
	}
	stopped := false
	defer func() {
		if !stopped {
			run(context.Background(), []string{"stop", "--dir", dir}, &out, &errb)
		}
	}()
	urls := strings.Split(strings.TrimSpace(out.String()), ",")
	if len(urls) != 3 {
		t.Fatalf("start --nodes 3 printed %q, want 3 comma-separated URLs", out.String())
	}
	conn, err := amqp.Dial(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("cli-q", true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "cli-q", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	conn, err = amqp.Dial(urls[2])
	if err != nil {
		t.Fatal(err)
	}
	ch, _ = conn.Channel()
	var q amqp.Queue
	for deadline := time.Now().Add(10 * time.Second); q.Messages != 1 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		q, err = ch.QueueDeclarePassive("cli-q", true, false, false, false, nil)
		if err != nil {
			t.Fatalf("the third node does not know the queue declared on the first: %v", err)
		}
	}
	conn.Close()
	if q.Messages != 1 {
		t.Fatalf("the third node sees %d messages in cli-q, want 1", q.Messages)
	}
	if err := run(context.Background(), []string{"stop", "--dir", dir}, &out, &errb); err != nil {
		t.Fatalf("stop: %v\n%s", err, errb.String())
	}
	stopped = true
	for _, u := range urls {
		addr := strings.TrimSuffix(strings.SplitN(u, "@", 2)[1], "/")
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after stop", addr)
		}
	}
}
