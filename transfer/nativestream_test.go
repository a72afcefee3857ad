package transfer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	samqp "github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/segmq/segmq/internal/localbroker"
)

// startNativeNode starts a node with the rabbitmq_stream plugin (the
// shared test broker has none) from root ("" is the host's 3.10.8).
func startNativeNode(t *testing.T, root string) *localbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := localbroker.Start(ctx, localbroker.Options{Root: root, Stream: true})
	if err != nil {
		t.Fatalf("start a node with the stream plugin: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// nativeEnv is newStreamEnv on node b, and the native protocol's port.
func nativeEnv(t *testing.T, b *localbroker.Broker) (*env, *NativeStream) {
	t.Helper()
	e := newStreamEnv(t)
	e.url = b.URL
	return e, &NativeStream{Port: b.StreamPort}
}

// TestNativeStream: consumers reading a stream over the native protocol
// what segmq's producer published over AMQP 0.9.1, on the suite's broker
// (4.0.5 under make test): the headers, stored as AMQP 1.0, arrive as
// segmq's, with the offsets, markers, resume and rewind of the AMQP path.
func TestNativeStream(t *testing.T) {
	b := startNativeNode(t, localbroker.RootFromEnv())
	t.Run("exact", func(t *testing.T) { nativeExact(t, b) })
	t.Run("resume", func(t *testing.T) {
		e, n := nativeEnv(t, b)
		const mss = 1 << 10
		data := randData(22, 3000*mss-5)
		sres := e.sendStream(e.file("in.bin", data), "natresume", mss)
		total := int(sres.Segments)
		ctx, cancel := context.WithCancel(context.Background())
		cfg := e.receiveCfg(e.dir + "/out.bin")
		cfg.StreamNative, cfg.AckEvery, cfg.Prefetch = n, 50, 100
		cfg.Progress = func(got, _ int64) {
			if got >= int64(total/2)*mss {
				cancel()
			}
		}
		_, err := Receive(ctx, cfg)
		cancel()
		if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "resume from stream offset") {
			t.Fatalf("first run: err = %v", err)
		}
		cfg.Progress = nil
		res := e.mustReceiveExact(cfg)
		e.mustEqualFile(cfg.Out, data)
		// The native client reads whole chunks ahead, but never more than
		// its credits: what was placed before the stop is not read again.
		if limit := total - int(res.Resumed) + cfg.Prefetch + cfg.AckEvery; res.Resumed < uint32(total/2) || res.Deliveries > limit {
			t.Fatalf("resumed with %d of %d segments, read %d messages; want >= %d resumed and <= %d read", res.Resumed, total, res.Deliveries, total/2, limit)
		}
	})
	t.Run("rewind", func(t *testing.T) {
		e, n := nativeEnv(t, b)
		segments := e.publishWithHole(t, "natholey", "0badc0de", 9)
		cfg := e.receiveCfg(e.dir + "/out.bin")
		cfg.StreamNative = n
		res, err := Receive(context.Background(), cfg)
		if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "first missing [4]") || !strings.Contains(err.Error(), "end marker") {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(e.logs.String(), "reading the stream again from its first message") || res.Deliveries < 2*segments {
			t.Fatalf("read %d messages, want >= %d: no rewind to the first message before giving up", res.Deliveries, 2*segments)
		}
		mustNotExist(t, cfg.Out)
	})
	t.Run("unreachable", func(t *testing.T) {
		e, _ := nativeEnv(t, b)
		e.sendStream(e.file("in.bin", randData(23, 10<<10)), "natport", 1<<10)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close() // nothing listens there now
		cfg := e.receiveCfg(e.dir + "/out.bin")
		cfg.StreamNative = &NativeStream{Port: port}
		start := time.Now()
		_, err = Receive(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "cannot reach the stream plugin at") || !strings.Contains(err.Error(), "--stream-protocol amqp") {
			t.Fatalf("err = %v", err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("took %s: a stream port that does not answer must fail at once, not be retried", d)
		}
		mustNotExist(t, cfg.Out)
	})
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s: %v, want it not written", path, err)
	}
}

// nativeExact: one transfer restored exactly over the native protocol,
// reading from just after its start marker: every message read is one of
// its segments.
func nativeExact(t *testing.T, b *localbroker.Broker) {
	e, n := nativeEnv(t, b)
	data := randData(21, 300<<10+5)
	sres := e.sendStream(e.file("in.bin", data), "nat", 4<<10)
	cfg := e.receiveCfg(e.dir + "/out.bin")
	cfg.StreamNative = n
	res := e.mustReceiveExact(cfg)
	e.mustEqualFile(cfg.Out, data)
	if res.Transfer != "nat" || res.Segments != sres.Segments || !res.Verified || res.Deliveries != int(sres.Segments) || res.Skipped != 0 || res.Corrupt != 0 {
		t.Fatalf("%+v", res)
	}
	conn, err := amqp.Dial(e.url)
	if err != nil {
		t.Fatal(err)
	}
	version, _ := conn.Properties["version"].(string)
	conn.Close()
	t.Logf("RabbitMQ %s: %d segments restored over the native protocol", version, res.Segments)
	// How the first segment's AMQP 0.9.1 headers are stored, as the
	// native protocol gives them.
	senv, err := stream.NewEnvironment(stream.NewEnvironmentOptions().SetHost("127.0.0.1").SetPort(n.Port).SetUser("guest").SetPassword("guest").SetReadBuffer(nativeReadBuffer))
	if err != nil {
		t.Fatal(err)
	}
	defer senv.Close()
	got := make(chan string, 1)
	c, err := senv.NewConsumer(e.topo.Name(), func(_ stream.ConsumerContext, m *samqp.Message) {
		if _, ok := m.ApplicationProperties[HdrCRC]; !ok {
			if _, ok := m.Annotations[HdrCRC]; !ok {
				return // a marker
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "application-properties:")
		for k, v := range m.ApplicationProperties {
			fmt.Fprintf(&b, " %s=%T", k, v)
		}
		fmt.Fprintf(&b, "; message-annotations:")
		for k, v := range m.Annotations {
			fmt.Fprintf(&b, " %v=%T", k, v)
		}
		select {
		case got <- b.String():
		default:
		}
	}, stream.NewConsumerOptions().SetOffset(stream.OffsetSpecification{}.First()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case s := <-got:
		t.Logf("RabbitMQ %s, a segment over the native protocol: %s", version, s)
	case <-time.After(10 * time.Second):
		t.Fatal("no segment read")
	}
}

// TestNativeStreamHost310: the same exact restore on the host's 3.10.8,
// which stores AMQP 0.9.1 headers in the stream differently from 4.x.
func TestNativeStreamHost310(t *testing.T) {
	if !localbroker.Installed("") {
		t.Fatal(localbroker.ErrNotInstalled)
	}
	nativeExact(t, startNativeNode(t, ""))
}
