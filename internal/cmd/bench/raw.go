package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// raw is the baseline: what the broker allows one amqp091-go publisher
// and one consumer to move through one fresh durable queue. count bodies
// of size bytes, persistent, published with a confirm window while the
// consumer takes them with prefetch and acks every ackEvery (multiple).
// The clock runs from the first dial to the last delivery.
//
// With out != "", the consumer also does what any restore must: it writes
// each body to the file out at its offset, and every ackEvery deliveries
// it fsyncs and only then acks. That is the baseline of a machine whose
// broker and restored file share one disk ("raw + write"); its cadence
// decides how long the broker waits, so the ratio section runs several
// and takes the best as the ceiling.
func (b *bench) raw(ctx context.Context, queueType string, size, count int, out string, ackEvery int) (time.Duration, error) {
	if b.o.rawProcs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(b.o.rawProcs))
	}
	q := b.queue("raw")
	start := time.Now()
	pub, err := amqp.DialConfig(b.url, amqp.Config{Properties: amqp.Table{"connection_name": "bench raw publisher"}})
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	con, err := amqp.DialConfig(b.url, amqp.Config{Properties: amqp.Table{"connection_name": "bench raw consumer"}})
	if err != nil {
		return 0, err
	}
	defer con.Close()
	pch, err := pub.Channel()
	if err != nil {
		return 0, err
	}
	if _, err := pch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": queueType}); err != nil {
		return 0, err
	}
	defer b.deleteQueues(q)
	if err := pch.Confirm(false); err != nil {
		return 0, err
	}
	cch, err := con.Channel()
	if err != nil {
		return 0, err
	}
	if err := cch.Qos(b.o.rawPrefetch, 0, false); err != nil {
		return 0, err
	}
	var args amqp.Table
	if queueType == "stream" { // read from its start, as segmq's consumer does
		args = amqp.Table{"x-stream-offset": "first"}
	}
	deliveries, err := cch.ConsumeWithContext(ctx, q, "", false, false, false, false, args)
	if err != nil {
		return 0, err
	}
	var f *os.File
	if ackEvery < 1 {
		return 0, fmt.Errorf("raw baseline: ack every %d", ackEvery)
	}
	if out != "" {
		if f, err = os.Create(out); err != nil {
			return 0, err
		}
		defer os.Remove(out)
		defer f.Close()
	}
	consumed := make(chan error, 1)
	go func() {
		n := 0
		for d := range deliveries {
			if f != nil {
				if _, err := f.WriteAt(d.Body, int64(n)*int64(size)); err != nil {
					consumed <- err
					return
				}
			}
			n++
			if n%ackEvery == 0 || n == count {
				if f != nil {
					if err := f.Sync(); err != nil {
						consumed <- err
						return
					}
				}
				if err := d.Ack(true); err != nil {
					consumed <- err
					return
				}
			}
			if n == count {
				consumed <- nil
				return
			}
		}
		consumed <- errors.New("raw consumer: deliveries closed early")
	}()

	body := make([]byte, size)
	rand.Read(body)
	window := make([]*amqp.DeferredConfirmation, 0, b.o.rawWindow)
	wait := func(dc *amqp.DeferredConfirmation) error {
		ok, err := dc.WaitContext(ctx)
		if err == nil && !ok {
			err = errors.New("raw publisher: nacked")
		}
		return err
	}
	for i := range count {
		if len(window) == b.o.rawWindow {
			if err := wait(window[0]); err != nil {
				return 0, err
			}
			window = window[1:]
		}
		dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream", Body: body,
			MessageId: fmt.Sprint(i),
		})
		if err != nil {
			return 0, err
		}
		window = append(window, dc)
	}
	for _, dc := range window {
		if err := wait(dc); err != nil {
			return 0, err
		}
	}
	select {
	case err := <-consumed:
		if err != nil {
			return 0, err
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return time.Since(start), nil
}

// queue returns a fresh queue name.
func (b *bench) queue(kind string) string {
	b.seq++
	return fmt.Sprintf("bench-%s-%d-%d", kind, os.Getpid(), b.seq)
}

// deleteQueues removes queues (and segmq's dead-letter exchange and
// queue for each), so that runs do not leave broker state behind.
func (b *bench) deleteQueues(names ...string) {
	conn, err := amqp.Dial(b.url)
	if err != nil {
		b.logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	for _, q := range names {
		for _, name := range []string{q, q + ".dead"} {
			if ch, err := conn.Channel(); err == nil {
				ch.QueueDelete(name, false, false, false)
				ch.Close()
			}
		}
		if ch, err := conn.Channel(); err == nil {
			ch.ExchangeDelete(q+".dlx", false, false)
			ch.Close()
		}
	}
}

// brokerVersion reads the server properties of a connection.
func (b *bench) brokerVersion() string {
	conn, err := amqp.Dial(b.url)
	if err != nil {
		return "unknown"
	}
	defer conn.Close()
	return fmt.Sprintf("%v %v", conn.Properties["product"], conn.Properties["version"])
}
