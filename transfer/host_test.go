package transfer

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/localbroker"
	"github.com/segmq/segmq/rabbit"
)

// TestHostRabbitMQSmoke keeps the host's rabbitmq-server (3.10.8 on
// Debian bookworm) working while the suite runs on 4.0.5: a round trip on
// a classic and a quorum queue, with the arguments segmq declares
// (single-active-consumer, the delivery limit), exact.
func TestHostRabbitMQSmoke(t *testing.T) {
	if !localbroker.Installed("") {
		t.Fatal(localbroker.ErrNotInstalled)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := localbroker.Start(ctx, localbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	version, _ := conn.Properties["version"].(string)
	conn.Close()
	if !strings.HasPrefix(version, "3.") {
		t.Fatalf("the host's rabbitmq-server is %s; this smoke test is for the 3.x line", version)
	}
	logs := &brokertest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	dir := t.TempDir()
	data := randData(310, 2<<20+3)
	in := filepath.Join(dir, "in.bin")
	e := &env{t: t, dir: dir}
	e.file("in.bin", data)
	for _, qt := range []string{rabbit.Classic, rabbit.Quorum} {
		topo := rabbit.Topology{Queue: "smoke-" + qt, Type: qt}
		dial := rabbit.DialConfig{URL: b.URL}
		if _, err := Send(ctx, in, SendConfig{Dial: dial, Topology: topo, MSS: 16 << 10, Raw: true, State: "-", Log: log}); err != nil {
			t.Fatalf("%s: Send: %v", qt, err)
		}
		out := filepath.Join(dir, qt+".bin")
		if _, err := Receive(ctx, ReceiveConfig{Dial: dial, Topology: topo, Out: out, Timeout: 30 * time.Second, Log: log}); err != nil {
			t.Fatalf("%s: Receive: %v", qt, err)
		}
		e.mustEqualFile(out, data)
	}
	t.Logf("RabbitMQ %s: classic and quorum round trips exact", version)
}
