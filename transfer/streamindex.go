package transfer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
)

// The index of a stream (Q.index, see package rabbit and doc.go). Each
// message is small: an empty body and these headers.
const (
	// HdrKind marks segmq's stream markers: KindStart and KindDone in
	// Q.index, KindDone in Q itself, KindProbe in Q.index. A segment has
	// no HdrKind.
	HdrKind = "segmq-kind"
	// HdrTotal is the number of segments (index entries only).
	HdrTotal = "segmq-total"
	// HdrStarted is when the producer started (or resumed) publishing, in
	// Unix milliseconds by the producer's clock (index entries only).
	HdrStarted = "segmq-started"

	KindStart = "start" // before a producer's first publish of a transfer (and of each resume)
	KindDone  = "done"  // after every segment of the transfer was confirmed
	KindProbe = "probe" // a consumer's end-of-index mark: ignored by everyone
	// KindLocated: a consumer restored the transfer and records the
	// stream offset of the first segment it placed (HdrOffset), so that
	// later restores start there instead of at the start time less StreamSkew.
	KindLocated = "located"
	HdrOffset   = "segmq-offset"
)

// StreamSkew is how far before a transfer's recorded start a consumer
// starts reading the stream: the start is the producer's clock, the
// stream's timestamps the broker's.
const StreamSkew = 10 * time.Second

// StreamTransfer is one transfer in a stream, as its index records it.
type StreamTransfer struct {
	Transfer string
	Run      string
	Size     int64
	MSS      int
	Segments uint32
	Started  time.Time // the first start entry (producer's clock)
	Finished time.Time // the done entry; zero when not complete
	SHA256   string    // from the done entry
	// First is the stream offset where every segment of the transfer can
	// be read from, as a consumer that restored it recorded; -1 unknown.
	First    int64
	Complete bool // every segment was confirmed by the broker (a done entry exists)
	// Expired: retention has removed the oldest part of the stream up to
	// a later transfer, so this one's segments are gone.
	Expired bool
}

// indexEntry builds an index (or marker) message.
func indexEntry(kind string, e StreamTransfer) amqp.Publishing {
	h := amqp.Table{HdrKind: kind, HdrTransfer: e.Transfer, HdrRun: e.Run, HdrSize: e.Size, HdrMSS: int64(e.MSS),
		HdrTotal: int64(e.Segments), HdrStarted: e.Started.UnixMilli()}
	if e.SHA256 != "" {
		h[HdrSHA256] = e.SHA256
	}
	return amqp.Publishing{Headers: h, DeliveryMode: amqp.Persistent, Timestamp: time.Now(), AppId: "segmq",
		MessageId: e.Transfer + "/" + kind}
}

// publishConfirmed publishes msgs in order on a channel of conn, each
// confirmed before the next.
func publishConfirmed(ctx context.Context, conn *amqp.Connection, queue []string, msgs []amqp.Publishing) error {
	ch, err := conn.Channel()
	if err != nil {
		return lost(fmt.Errorf("open channel: %w", err))
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return lost(fmt.Errorf("enable publisher confirms: %w", err))
	}
	for i, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue[i], true, false, m)
		if err != nil {
			return lost(fmt.Errorf("publish to %s: %w", queue[i], err))
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return lost(fmt.Errorf("the broker nacked a marker for %s", queue[i]))
		}
	}
	return nil
}

// announce records a transfer's start or end in its stream: KindStart in
// Q.index; KindDone first in Q (after every segment) and then in Q.index.
// It has its own connection, and reconnects like Send.
func announce(ctx context.Context, log *slog.Logger, dial rabbit.DialConfig, topo rabbit.Topology, kind string, e StreamTransfer) error {
	queues := []string{topo.IndexQueue()}
	msgs := []amqp.Publishing{indexEntry(kind, e)}
	if kind == KindDone {
		queues = []string{topo.Name(), topo.IndexQueue()}
		msgs = []amqp.Publishing{indexEntry(kind, e), indexEntry(kind, e)}
	}
	connected, n := false, 0
	return reconnect(ctx, log, dial, topo, &connected, &n, func(ctx context.Context, conn *amqp.Connection, _ *amqp.Channel) error {
		return publishConfirmed(ctx, conn, queues, msgs)
	}, func(error) error { return nil })
}

// ListStream returns the transfers in a stream, oldest first, from its
// index alone: no segment is read.
func ListStream(ctx context.Context, dial rabbit.DialConfig, topo rabbit.Topology) ([]StreamTransfer, error) {
	if !topo.IsStream() {
		return nil, errors.New("--list needs --queue-type stream: only a stream keeps transfers after they are restored")
	}
	if err := topo.Validate(); err != nil {
		return nil, err
	}
	connected := false
	conn, ch, err := openSession(ctx, dial, topo, &connected)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ch.Close()
	list, err := readIndex(ctx, conn, topo)
	if err != nil {
		return nil, err
	}
	markExpired(ctx, conn, topo, list)
	return list, nil
}

// readIndex reads Q.index from its first message to its end. A stream
// has no "end" a consumer is told about (queue.declare-ok counts 0
// messages for a stream), so the reader first publishes a probe with a
// nonce of its own, confirmed, and reads until the probe comes back.
// Cost: one message of about 200 bytes per reader in Q.index, which its
// retention removes.
func readIndex(ctx context.Context, conn *amqp.Connection, topo rabbit.Topology) ([]StreamTransfer, error) {
	nonce := NewTransferID()
	probe := amqp.Publishing{Headers: amqp.Table{HdrKind: KindProbe}, MessageId: nonce, Timestamp: time.Now(), AppId: "segmq"}
	if err := publishConfirmed(ctx, conn, []string{topo.IndexQueue()}, []amqp.Publishing{probe}); err != nil {
		return nil, fmt.Errorf("probe %s: %w", topo.IndexQueue(), err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, lost(fmt.Errorf("open channel: %w", err))
	}
	defer ch.Close()
	const prefetch = 512
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return nil, lost(fmt.Errorf("set prefetch: %w", err))
	}
	tag := "segmq-index-" + nonce
	deliveries, err := ch.Consume(topo.IndexQueue(), tag, false, false, false, false, amqp.Table{"x-stream-offset": "first"})
	if err != nil {
		return nil, lost(fmt.Errorf("read %s: %w", topo.IndexQueue(), err))
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	var list []StreamTransfer
	at := map[doneKey]int{}
	unacked := 0
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
			if !ok {
				return nil, lost(fmt.Errorf("the broker ended the reader of %s", topo.IndexQueue()))
			}
		case e := <-closed:
			return nil, closeError(e)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if unacked++; unacked >= prefetch/2 {
			if err := d.Ack(true); err != nil {
				return nil, lost(fmt.Errorf("ack: %w", err))
			}
			unacked = 0
		}
		kind, _ := d.Headers[HdrKind].(string)
		if kind == KindProbe {
			if d.MessageId == nonce {
				break
			}
			continue
		}
		e, ok := parseEntry(d.Headers)
		if !ok || (kind != KindStart && kind != KindDone && kind != KindLocated) {
			continue // not segmq's, or from a newer segmq: not ours to judge
		}
		k := doneKey{e.Transfer, e.Run}
		i, seen := at[k]
		if !seen {
			at[k] = len(list)
			e.First = -1
			list = append(list, e)
			i = len(list) - 1
		}
		if off, ok := asInt(d.Headers[HdrOffset]); kind == KindLocated && ok && off >= 0 && list[i].First < 0 {
			list[i].First = off
		}
		if kind == KindDone && !list[i].Complete {
			list[i].Complete, list[i].SHA256 = true, e.SHA256
			list[i].Finished = d.Timestamp
		}
		if kind == KindStart && !seen {
			list[i].Started = e.Started
		}
	}
	if err := ch.Cancel(tag, false); err != nil {
		return nil, lost(fmt.Errorf("cancel: %w", err))
	}
	for range deliveries {
	}
	return list, nil
}

func parseEntry(h amqp.Table) (StreamTransfer, bool) {
	var e StreamTransfer
	e.Transfer, _ = h[HdrTransfer].(string)
	e.Run, _ = h[HdrRun].(string)
	if CheckTransferID(e.Transfer) != nil {
		return e, false
	}
	size, ok1 := asInt(h[HdrSize])
	mss, ok2 := asInt(h[HdrMSS])
	total, ok3 := asInt(h[HdrTotal])
	started, ok4 := asInt(h[HdrStarted])
	if !ok1 || !ok2 || !ok3 || !ok4 || size < 0 || mss < 1 || total < 1 || total > int64(^uint32(0)) {
		return e, false
	}
	e.Size, e.MSS, e.Segments, e.Started = size, int(mss), uint32(total), time.UnixMilli(started)
	e.SHA256, _ = h[HdrSHA256].(string)
	return e, true
}

// markExpired peeks at the stream's oldest retained message: when
// retention has removed anything (its offset is not 0), the transfers
// recorded before that message's transfer are gone, and so is the head of
// that transfer itself unless the message is its segment 0 (the producer
// publishes in order) or lies at or before its located offset. One
// delivery is read; an empty stream or no answer within 3 s marks nothing.
func markExpired(ctx context.Context, conn *amqp.Connection, topo rabbit.Topology, list []StreamTransfer) {
	if len(list) == 0 {
		return
	}
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	if ch.Qos(1, 0, false) != nil {
		return
	}
	deliveries, err := ch.Consume(topo.Name(), "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
	if err != nil {
		return
	}
	var d amqp.Delivery
	select {
	case d = <-deliveries:
	case <-time.After(3 * time.Second):
		return
	case <-ctx.Done():
		return
	}
	off, _ := asInt(d.Headers["x-stream-offset"])
	if off == 0 {
		return
	}
	tr, _ := d.Headers[HdrTransfer].(string)
	run, _ := d.Headers[HdrRun].(string)
	for i := range list {
		if list[i].Transfer == tr && list[i].Run == run {
			seq := uint32(0)
			if len(d.Body) >= 4 {
				seq = binary.LittleEndian.Uint32(d.Body)
			}
			if _, marker := d.Headers[HdrKind]; marker || (seq > 0 && (list[i].First < 0 || list[i].First < off)) {
				list[i].Expired = true
			}
			return
		}
		list[i].Expired = true
	}
}

// pickTransfer chooses what to restore: with want, its newest complete
// run, else its newest run; without, the newest complete transfer not
// expired, else the newest one still being published. nil: the index
// names none.
func pickTransfer(list []StreamTransfer, want string) *StreamTransfer {
	var newest, complete *StreamTransfer
	for i := range list {
		e := &list[i]
		if (want != "" && e.Transfer != want) || e.Expired {
			continue
		}
		newest = e
		if e.Complete {
			complete = e
		}
	}
	if complete != nil {
		return complete
	}
	return newest
}

// streamEntry describes the transfer p sends, for the stream's index.
func (p *publisher) streamEntry(started time.Time) StreamTransfer {
	return StreamTransfer{Transfer: p.st.Transfer, Run: p.st.Run, Size: p.size, MSS: p.cfg.MSS, Segments: p.split.Total(),
		Started: started, SHA256: p.sum}
}
