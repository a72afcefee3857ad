package transfer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
	samqp "github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/segmq/segmq/rabbit"
)

// NativeStream reads the stream's segments over RabbitMQ's native stream
// protocol (the rabbitmq_stream plugin) instead of AMQP 0.9.1. The index
// and the markers' checks stay on AMQP. It connects to the node the AMQP
// connection reached, on Port, with the AMQP URL's user, password and
// vhost.
type NativeStream struct {
	Port int // the stream plugin's port; 0 means 5552
}

// nativeReadBuffer is the client's socket read buffer. rabbitmq-stream-go-client
// v1.8.3's default of 8 KiB received nothing for messages of 16 KB or more
// (its CRC check failed on every chunk).
const nativeReadBuffer = 1 << 20

// nativeSource consumes the stream from offset from over the native
// protocol. Each message becomes an amqp.Delivery with the headers an
// AMQP 0.9.1 consumer would see, so that handle is the same for both.
func (r *streamReceiver) nativeSource(ctx context.Context, conn *amqp.Connection, from any) (*streamSource, error) {
	port := r.cfg.StreamNative.Port
	if port == 0 {
		port = 5552
	}
	uri, err := amqp.ParseURI(firstURL(r.cfg.Dial.URL))
	if err != nil {
		return nil, fmt.Errorf("--stream-protocol native: %w", err)
	}
	if uri.Scheme == "amqps" {
		return nil, errors.New("--stream-protocol native does not support TLS (amqps://) yet: use --stream-protocol amqp")
	}
	host := uri.Host
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		host = a.IP.String() // the node DialAny reached, of several
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	opts := stream.NewEnvironmentOptions().SetHost(host).SetPort(port).
		SetUser(uri.Username).SetPassword(uri.Password).SetVHost(uri.Vhost).
		SetReadBuffer(nativeReadBuffer).SetWriteBuffer(nativeReadBuffer).
		SetMaxConsumersPerClient(1)
	env, err := stream.NewEnvironment(opts)
	if err != nil {
		// Refused or unreachable: a stream port that does not answer is
		// not a lost connection to retry for ever, but a setup to fix.
		return nil, fmt.Errorf("--stream-protocol native: cannot reach the stream plugin at %s (is rabbitmq_stream enabled and its port open? --stream-protocol amqp needs neither): %w", addr, err)
	}
	off := stream.OffsetSpecification{}.First()
	if n, ok := from.(int64); ok {
		off = stream.OffsetSpecification{}.Offset(n)
	}
	deliveries := make(chan amqp.Delivery, r.cfg.Prefetch)
	quit := make(chan struct{})
	q := r.cfg.Topology.Name()
	handler := func(c stream.ConsumerContext, m *samqp.Message) {
		d := nativeDelivery(m, c.Consumer.GetOffset())
		select {
		case deliveries <- d:
		case <-quit:
		}
	}
	c, err := env.NewConsumer(q, handler, stream.NewConsumerOptions().SetOffset(off).SetCRCCheck(false).
		SetClientProvidedName("segmq-consumer"))
	if err != nil {
		env.Close()
		if errors.Is(err, stream.StreamDoesNotExist) {
			return nil, fmt.Errorf("stream %s does not exist (native protocol at %s)", q, addr)
		}
		return nil, lost(fmt.Errorf("native consumer on stream %s at %s: %w", q, addr, err))
	}
	failed := make(chan error, 1)
	go func() {
		select {
		case e, ok := <-c.NotifyClose():
			if ok {
				failed <- lost(fmt.Errorf("the native stream consumer on %s ended: %s %v", q, e.Reason, e.Err))
			}
		case <-quit:
		}
	}()
	var once sync.Once
	return &streamSource{
		deliveries: deliveries,
		failed:     failed,
		stop: func() error {
			once.Do(func() {
				close(quit)
				c.Close()
				env.Close()
			})
			return nil
		},
	}, nil
}

// nativeDelivery is m as an AMQP 0.9.1 consumer of the stream receives
// it: AMQP 0.9.1 headers are stored as AMQP 1.0 application properties
// (and, for x- names, message annotations), strings may come back as
// binary, and the stream offset is the message's own.
func nativeDelivery(m *samqp.Message, offset int64) amqp.Delivery {
	h := amqp.Table{}
	for k, v := range m.Annotations {
		if s, ok := k.(string); ok {
			h[s] = nativeValue(v)
		}
	}
	for k, v := range m.ApplicationProperties {
		h[k] = nativeValue(v)
	}
	h["x-stream-offset"] = offset
	d := amqp.Delivery{Headers: h, Body: m.GetData()}
	if m.Properties != nil {
		switch id := m.Properties.MessageID.(type) {
		case string:
			d.MessageId = id
		case []byte:
			d.MessageId = string(id)
		}
	}
	return d
}

func nativeValue(v any) any {
	switch x := v.(type) {
	case []byte:
		return string(x)
	case int:
		return int64(x)
	case uint64:
		if x <= 1<<63-1 {
			return int64(x)
		}
	}
	return v
}

// firstURL is the first of a comma-separated URL list (rabbit.URLs).
func firstURL(s string) string {
	if l := rabbit.URLs(s); len(l) > 0 {
		return l[0]
	}
	return strings.TrimSpace(s)
}
