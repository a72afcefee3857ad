package main

// The stream section: AMQP 0.9.1 on a stream against RabbitMQ's native
// stream protocol (rabbitmq-stream-go-client, deduplicating producer),
// and segmq --queue-type stream, on one local node with the
// rabbitmq_stream plugin. Two figures each: publish and consume at once
// (a restore during the publish), and a consumer alone over a stream
// already full (a restore later).

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	samqp "github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/message"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/segmq/segmq/internal/localbroker"
)

func init() {
	register(section{"stream", 70, func(ctx context.Context, b *bench, e *env) error { return b.streamSection(ctx, e.bpr) }})
}

type streamOptions struct {
	size int64
	runs int
}

// streamFlags registers the section's flags; call the result after Parse.
func streamFlags(fs *flag.FlagSet) func() (streamOptions, error) {
	size := fs.String("stream-size", "512MiB", "snapshot size for the stream section")
	runs := fs.Int("stream-runs", 2, "alternating runs in the stream section (0: skip it)")
	return func() (streamOptions, error) {
		n, err := parseSize(*size)
		if err == nil && n <= 0 {
			err = errors.New("-stream-size must be positive")
		}
		return streamOptions{size: n, runs: *runs}, err
	}
}

// streamSection runs on its own node (the native protocol needs the
// rabbitmq_stream plugin, which the other sections' broker may lack).
func (b *bench) streamSection(ctx context.Context, bpr float64) error {
	o := b.o.stream
	if o.runs == 0 {
		return nil
	}
	node, err := localbroker.Start(ctx, localbroker.Options{Root: localbroker.RootFromEnv(), Stream: true})
	if err != nil {
		return fmt.Errorf("stream section: start a node with the stream plugin: %w", err)
	}
	defer node.Close()
	orig := b.url
	b.url = node.URL
	defer func() { b.url = orig }()
	s, err := b.sized(ctx, "stream.snap", o.size, bpr, "")
	if err != nil {
		return err
	}
	defer os.Remove(s.path)
	size := b.o.mss + 8
	n := int((s.bytes + int64(b.o.mss) - 1) / int64(b.o.mss))
	var amqpBoth, amqpLate, nativeBoth, nativeLate, segBoth, segLate []float64
	for i := range o.runs {
		both, late, err := b.rawStreamAMQP(ctx, size, n)
		if err != nil {
			return fmt.Errorf("AMQP 0.9.1 on a stream: %w", err)
		}
		nboth, nlate, err := b.rawStreamNative(ctx, node.StreamPort, size, n)
		if err != nil {
			return fmt.Errorf("native stream protocol: %w", err)
		}
		sboth, slate, err := b.segmqStream(ctx, s)
		if err != nil {
			return fmt.Errorf("segmq on a stream: %w", err)
		}
		b.logf("stream run %d: AMQP %.1f / %.1f, native %.1f / %.1f, segmq %.1f / %.1f MB/s (publish+consume / late consume)", i+1,
			mbps(s.bytes, both), mbps(s.bytes, late), mbps(s.bytes, nboth), mbps(s.bytes, nlate), mbps(s.bytes, sboth), mbps(s.bytes, slate))
		amqpBoth, amqpLate = append(amqpBoth, mbps(s.bytes, both)), append(amqpLate, mbps(s.bytes, late))
		nativeBoth, nativeLate = append(nativeBoth, mbps(s.bytes, nboth)), append(nativeLate, mbps(s.bytes, nlate))
		segBoth, segLate = append(segBoth, mbps(s.bytes, sboth)), append(segLate, mbps(s.bytes, slate))
	}
	runs := func(v []float64) string {
		var out []string
		for _, x := range v {
			out = append(out, fmt.Sprintf("%.0f", x))
		}
		return strings.Join(out, "; ")
	}
	t := table{cols: []string{"client", "publish + consume MB/s", "late consume MB/s", "runs (both)", "runs (late)"}}
	t.add("raw AMQP 0.9.1 (amqp091-go)", fmt.Sprintf("%.1f", median(amqpBoth)), fmt.Sprintf("%.1f", median(amqpLate)), runs(amqpBoth), runs(amqpLate))
	t.add("raw native stream protocol (rabbitmq-stream-go-client, dedup)", fmt.Sprintf("%.1f", median(nativeBoth)), fmt.Sprintf("%.1f", median(nativeLate)), runs(nativeBoth), runs(nativeLate))
	t.add("segmq --queue-type stream", fmt.Sprintf("%.1f", median(segBoth)), fmt.Sprintf("%.1f", median(segLate)), runs(segBoth), runs(segLate))
	b.section("Streams: AMQP 0.9.1 against the native stream protocol",
		fmt.Sprintf("%s snapshot (%d bytes), %d bodies of %d bytes, medians of %d alternating runs on one %s node with the rabbitmq_stream plugin, a fresh stream per run. **publish + consume**: publisher and consumer at once, from the first dial until the last body is received (segmq: producer and consumer binaries, until the file is verified and renamed). **late consume**: a consumer alone, from the stream's first offset, after the publish has finished (segmq: a second consumer command). raw AMQP: confirm window %d, prefetch %d, multiple ack every %d. Native: one producer with a name (deduplication by publishing id), at most %d unconfirmed, the client's own batching; a consumer from the first offset with the client's default credits. segmq reads streams over AMQP 0.9.1: a segmq consumer over the native protocol was measured and was not faster (README, Streams).",
			human(o.size), s.bytes, n, size, o.runs, b.brokerVersion(), b.o.rawWindow, b.o.rawPrefetch, b.o.rawAckEvery, nativeWindow), t)
	return nil
}

const nativeWindow = 1024

// rawStreamAMQP: amqp091-go publishes count bodies to a fresh stream with
// a confirm window while a consumer reads from the first offset; then a
// second consumer reads the full stream alone.
func (b *bench) rawStreamAMQP(ctx context.Context, size, count int) (both, late time.Duration, err error) {
	q := b.queue("stream-amqp")
	defer b.deleteQueues(q)
	conn, err := amqp.Dial(b.url)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
		return 0, 0, err
	}
	consume := func() (<-chan error, error) {
		c, err := amqp.Dial(b.url)
		if err != nil {
			return nil, err
		}
		cch, err := c.Channel()
		if err != nil {
			c.Close()
			return nil, err
		}
		if err := cch.Qos(b.o.rawPrefetch, 0, false); err != nil {
			c.Close()
			return nil, err
		}
		ds, err := cch.Consume(q, "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
		if err != nil {
			c.Close()
			return nil, err
		}
		done := make(chan error, 1)
		go func() {
			defer c.Close()
			for i := 1; i <= count; i++ {
				select {
				case d, ok := <-ds:
					if !ok {
						done <- errors.New("consumer closed")
						return
					}
					if len(d.Body) != size {
						done <- fmt.Errorf("body of %d bytes", len(d.Body))
						return
					}
					if i%b.o.rawAckEvery == 0 || i == count {
						d.Ack(true)
					}
				case <-ctx.Done():
					done <- ctx.Err()
					return
				}
			}
			done <- nil
		}()
		return done, nil
	}
	start := time.Now()
	done, err := consume()
	if err != nil {
		return 0, 0, err
	}
	if err := ch.Confirm(false); err != nil {
		return 0, 0, err
	}
	body := make([]byte, size)
	rand.Read(body)
	var inflight []*amqp.DeferredConfirmation
	for range count {
		if len(inflight) >= b.o.rawWindow {
			if !inflight[0].Wait() {
				return 0, 0, errors.New("nack")
			}
			inflight = inflight[1:]
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body, DeliveryMode: amqp.Persistent})
		if err != nil {
			return 0, 0, err
		}
		inflight = append(inflight, dc)
	}
	for _, dc := range inflight {
		if !dc.Wait() {
			return 0, 0, errors.New("nack")
		}
	}
	if err := <-done; err != nil {
		return 0, 0, err
	}
	both = time.Since(start)
	start = time.Now()
	if done, err = consume(); err != nil {
		return 0, 0, err
	}
	if err := <-done; err != nil {
		return 0, 0, err
	}
	return both, time.Since(start), nil
}

// rawStreamNative is rawStreamAMQP over the native stream protocol.
func (b *bench) rawStreamNative(ctx context.Context, port, size, count int) (both, late time.Duration, err error) {
	env, err := stream.NewEnvironment(stream.NewEnvironmentOptions().SetHost("127.0.0.1").SetPort(port).SetUser("guest").SetPassword("guest").
		// With the default 8 KiB read buffer, deliveries of chunks of 16 KB
		// messages failed the client's CRC check ("Error during the
		// checkSum") and the consumer received nothing (v1.8.3, RabbitMQ 4.0.5).
		SetReadBuffer(1 << 20).SetWriteBuffer(1 << 20))
	if err != nil {
		return 0, 0, err
	}
	defer env.Close()
	q := b.queue("stream-native")
	if err := env.DeclareStream(q, stream.NewStreamOptions()); err != nil {
		return 0, 0, err
	}
	defer env.DeleteStream(q)
	consume := func() (<-chan error, func(), error) {
		done := make(chan error, 1)
		var got atomic.Int64
		c, err := env.NewConsumer(q, func(_ stream.ConsumerContext, m *samqp.Message) {
			if d := m.GetData(); len(d) != size {
				select {
				case done <- fmt.Errorf("body of %d bytes", len(d)):
				default:
				}
				return
			}
			if got.Add(1) == int64(count) {
				done <- nil
			}
		}, stream.NewConsumerOptions().SetOffset(stream.OffsetSpecification{}.First()))
		if err != nil {
			return nil, nil, err
		}
		return done, func() { c.Close() }, nil
	}
	start := time.Now()
	done, stop, err := consume()
	if err != nil {
		return 0, 0, err
	}
	p, err := env.NewProducer(q, stream.NewProducerOptions().SetProducerName("bench"))
	if err != nil {
		stop()
		return 0, 0, err
	}
	confirms := p.NotifyPublishConfirmation()
	body := make([]byte, size)
	rand.Read(body)
	window := make(chan struct{}, nativeWindow)
	confirmed := make(chan error, 1)
	go func() {
		n := 0
		for batch := range confirms {
			for _, c := range batch {
				if !c.IsConfirmed() {
					confirmed <- fmt.Errorf("not confirmed: %v", c.GetError())
					return
				}
				<-window
				if n++; n == count {
					confirmed <- nil
					return
				}
			}
		}
	}()
	for i := range count {
		select {
		case window <- struct{}{}:
		case err := <-confirmed:
			stop()
			p.Close()
			return 0, 0, err
		case <-ctx.Done():
			stop()
			p.Close()
			return 0, 0, ctx.Err()
		}
		m := samqp.NewMessage(body)
		m.SetPublishingId(int64(i + 1))
		if err := p.Send(message.StreamMessage(m)); err != nil {
			stop()
			p.Close()
			return 0, 0, err
		}
	}
	err = <-confirmed
	if err == nil {
		select {
		case err = <-done:
		case <-ctx.Done():
			err = fmt.Errorf("consumer: %w", ctx.Err())
		}
	}
	both = time.Since(start) // closing (a few seconds in this client) is not the transfer
	p.Close()
	stop()
	if err != nil {
		return 0, 0, err
	}
	start = time.Now()
	if done, stop, err = consume(); err != nil {
		return 0, 0, err
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("late consumer: %w", ctx.Err())
	}
	late = time.Since(start)
	stop()
	return both, late, err
}

// segmqStream runs the producer and a consumer at once on a fresh stream
// (like e2e, which deletes its queue), then a second consumer alone.
func (b *bench) segmqStream(ctx context.Context, s snapshot) (both, late time.Duration, err error) {
	q := b.queue("segmq-stream")
	defer b.deleteQueues(q, q+".index")
	env := append(os.Environ(), "AMQP_URL="+b.url)
	common := []string{"--queue", q, "--queue-type", "stream"}
	restore := func(name string) (*exec.Cmd, *strings.Builder, string) {
		out := b.path(name)
		for _, p := range []string{out, out + ".part", out + ".part.state"} {
			os.Remove(p)
		}
		cmd := exec.CommandContext(ctx, filepath.Join(b.o.bin, "consumer"), append([]string{"--out", out, "--timeout", "60s"}, common...)...)
		var log strings.Builder
		cmd.Env, cmd.Stdout, cmd.Stderr = env, &log, &log
		return cmd, &log, out
	}
	check := func(out string, log *strings.Builder, err error) error {
		defer os.Remove(out)
		if err != nil {
			return fmt.Errorf("consumer: %w\n%s", err, log)
		}
		if fi, err := os.Stat(out); err != nil || fi.Size() != s.bytes || !strings.Contains(log.String(), "size and sha256 verified") {
			return fmt.Errorf("consumer exited 0 but restored %v (%v): %s", fi, err, log)
		}
		return nil
	}
	// The stream must exist before the consumer attaches from its first offset.
	os.Remove(s.path + ".segmq-send") // the producer keeps its default state file; a failed run's would block the next
	prod := exec.CommandContext(ctx, filepath.Join(b.o.bin, "producer"), append([]string{"--in", s.path, "--mss", fmt.Sprint(b.o.mss)}, common...)...)
	var plog strings.Builder
	prod.Env, prod.Stdout, prod.Stderr = env, &plog, &plog
	cons, clog, out := restore("restored-stream.bin")
	start := time.Now()
	if err := cons.Start(); err != nil {
		return 0, 0, err
	}
	if err := prod.Start(); err != nil {
		cons.Process.Kill()
		cons.Wait()
		return 0, 0, err
	}
	if err := prod.Wait(); err != nil {
		cons.Process.Kill()
		cons.Wait()
		return 0, 0, fmt.Errorf("producer: %w\n%s", err, plog.String())
	}
	if err := check(out, clog, cons.Wait()); err != nil {
		return 0, 0, err
	}
	both = time.Since(start)
	cons, clog, out = restore("restored-late.bin")
	start = time.Now()
	if err := check(out, clog, cons.Run()); err != nil {
		return 0, 0, fmt.Errorf("late %w", err)
	}
	return both, time.Since(start), nil
}
