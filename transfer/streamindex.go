package transfer

import (
	"context"
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
	// Q.index and in Q, KindProbe in either. A segment has no HdrKind.
	HdrKind = "segmq-kind"
	// HdrTotal is the number of segments (index entries only).
	HdrTotal = "segmq-total"
	// HdrStarted is when the producer started (or resumed) publishing, in
	// Unix milliseconds by the producer's clock (index entries only; shown
	// by --list, never used to find anything).
	HdrStarted = "segmq-started"
	// HdrOffset and HdrMarker: the stream offset in Q of the transfer's
	// start marker, published before its first segment, and that
	// marker's message id (random: it identifies the stream the offset
	// belongs to). HdrEndOffset and HdrEndMarker: the same for its done
	// marker, published after its last confirm (done entries only).
	HdrOffset    = "segmq-offset"
	HdrMarker    = "segmq-marker"
	HdrEndOffset = "segmq-end-offset"
	HdrEndMarker = "segmq-end-marker"

	KindStart = "start" // before a producer's first publish of a transfer (and of each resume)
	KindDone  = "done"  // after every segment of the transfer was confirmed
	KindProbe = "probe" // a reader's own mark, to know it has seen a stream's end: ignored by everyone
)

// StreamTransfer is one transfer in a stream, as its index records it.
type StreamTransfer struct {
	Transfer string
	Run      string
	Size     int64
	MSS      int
	Segments uint32
	Started  time.Time // the first start entry (producer's clock; display only)
	Finished time.Time // the done entry; zero when not complete
	SHA256   string    // from the done entry
	// Start is the offset in Q of the start marker of the transfer's
	// first producer run: every segment of the transfer follows it.
	// StartID is that marker's message id; "" means Start is unknown.
	Start   int64
	StartID string
	// End and EndID: the same for the done marker ("" until complete).
	End      int64
	EndID    string
	Complete bool // every segment was confirmed by the broker (a done entry exists)
	// Expired: the transfer's start marker is no longer in Q (retention
	// removed it, or Q was deleted and recreated); Gone says which.
	Expired bool
	Gone    string
}

// indexEntry builds an index entry (or a marker: the same headers).
func indexEntry(kind string, e StreamTransfer) amqp.Publishing {
	h := amqp.Table{HdrKind: kind, HdrTransfer: e.Transfer, HdrRun: e.Run, HdrSize: e.Size, HdrMSS: int64(e.MSS),
		HdrTotal: int64(e.Segments), HdrStarted: e.Started.UnixMilli()}
	if e.SHA256 != "" {
		h[HdrSHA256] = e.SHA256
	}
	if e.StartID != "" {
		h[HdrOffset], h[HdrMarker] = e.Start, e.StartID
	}
	if e.EndID != "" {
		h[HdrEndOffset], h[HdrEndMarker] = e.End, e.EndID
	}
	return amqp.Publishing{Headers: h, DeliveryMode: amqp.Persistent, Timestamp: time.Now(), AppId: "segmq",
		MessageId: e.Transfer + "/" + kind}
}

// ErrHeadGone: the stream no longer holds the first segments of a
// transfer the producer has just published (its retention is too small
// for it): no consumer can restore it.
var ErrHeadGone = errors.New("the stream no longer holds the transfer's first segments")

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

// announce records a transfer's start or end. KindStart: a start marker
// in Q (before any segment), then an entry in Q.index with the marker's
// offset. KindDone (after every segment was confirmed): the done marker in
// Q; then, if the start marker is no longer in Q, ErrHeadGone and no done
// entry (the index keeps saying incomplete); else the done entry in
// Q.index with both offsets. It has its own connection, and reconnects
// like Send.
func announce(ctx context.Context, log *slog.Logger, dial rabbit.DialConfig, topo rabbit.Topology, kind string, e StreamTransfer) error {
	connected, n := false, 0
	return reconnect(ctx, log, dial, topo, &connected, &n, func(ctx context.Context, conn *amqp.Connection, _ *amqp.Channel) error {
		e := e
		if kind == KindDone {
			list, err := readIndex(ctx, conn, topo)
			if err != nil {
				return err
			}
			for _, x := range list {
				if x.Transfer == e.Transfer && x.Run == e.Run && x.StartID != "" {
					e.Start, e.StartID = x.Start, x.StartID
				}
			}
		}
		m := indexEntry(kind, e)
		m.MessageId += "/" + NewTransferID() // unique: it identifies this stream at that offset
		off, err := publishLocated(ctx, conn, topo.Name(), m)
		if err != nil {
			return err
		}
		if kind == KindStart {
			e.Start, e.StartID = off, m.MessageId
		} else {
			e.End, e.EndID = off, m.MessageId
			if e.StartID != "" {
				gone, err := checkMarker(ctx, conn, topo.Name(), e.Start, e.StartID)
				if err != nil {
					return err
				}
				if gone != "" {
					return fmt.Errorf("%w: its start marker at offset %d: %s; when retention removed it, the stream keeps less than the transfer (this producer asked for %s at declaration; an existing stream keeps its own): use a stream with more retention (another --queue with larger --stream-max-bytes/--stream-max-age)",
						ErrHeadGone, e.Start, gone, topo.Retention)
				}
			}
		}
		return publishConfirmed(ctx, conn, []string{topo.IndexQueue()}, []amqp.Publishing{indexEntry(kind, e)})
	}, func(error) error { return nil })
}

// publishLocated publishes m to the stream queue, confirmed, and returns
// its offset: a reader attached at "next" before the publish sees every
// message appended after it, m among them. No clock is involved.
func publishLocated(ctx context.Context, conn *amqp.Connection, queue string, m amqp.Publishing) (int64, error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, lost(fmt.Errorf("open channel: %w", err))
	}
	defer ch.Close()
	const prefetch = 256
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return 0, lost(fmt.Errorf("set prefetch: %w", err))
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	deliveries, err := ch.Consume(queue, "", false, false, false, false, amqp.Table{"x-stream-offset": "next"})
	if err != nil {
		return 0, lost(fmt.Errorf("read %s: %w", queue, err))
	}
	if err := publishConfirmed(ctx, conn, []string{queue}, []amqp.Publishing{m}); err != nil {
		return 0, err
	}
	for n := 1; ; n++ {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return 0, lost(fmt.Errorf("the broker ended the reader of %s", queue))
			}
			if d.MessageId == m.MessageId {
				off, ok := asInt(d.Headers["x-stream-offset"])
				if !ok {
					return 0, fmt.Errorf("%s: the broker gave no x-stream-offset", queue)
				}
				return off, nil
			}
			if n%(prefetch/2) == 0 {
				if err := d.Ack(true); err != nil {
					return 0, lost(fmt.Errorf("ack: %w", err))
				}
			}
		case e := <-closed:
			return 0, closeError(e)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// peek returns the offset and message id of the first message at or after
// from in queue (from: an offset, or "first"). When nothing comes within
// a second (the stream ends before from), it publishes a probe of its own
// and waits for that: probe then says the stream has nothing at or after
// from except it. One small message in the stream, only in that case.
func peek(ctx context.Context, conn *amqp.Connection, queue string, from any) (off int64, id string, probe bool, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, "", false, lost(fmt.Errorf("open channel: %w", err))
	}
	defer ch.Close()
	if err := ch.Qos(64, 0, false); err != nil {
		return 0, "", false, lost(fmt.Errorf("set prefetch: %w", err))
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	deliveries, err := ch.Consume(queue, "", false, false, false, false, amqp.Table{"x-stream-offset": from})
	if err != nil {
		return 0, "", false, lost(fmt.Errorf("read %s: %w", queue, err))
	}
	low, _ := from.(int64)
	nonce := NewTransferID()
	wait := time.NewTimer(time.Second)
	defer wait.Stop()
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return 0, "", false, lost(fmt.Errorf("the broker ended the reader of %s", queue))
			}
			if err := d.Ack(false); err != nil {
				return 0, "", false, lost(fmt.Errorf("ack: %w", err))
			}
			off, _ := asInt(d.Headers["x-stream-offset"])
			if d.MessageId == nonce {
				return off, d.MessageId, true, nil
			}
			if off >= low {
				return off, d.MessageId, false, nil
			}
		case <-wait.C:
			p := amqp.Publishing{Headers: amqp.Table{HdrKind: KindProbe}, MessageId: nonce, Timestamp: time.Now(), AppId: "segmq"}
			if err := publishConfirmed(ctx, conn, []string{queue}, []amqp.Publishing{p}); err != nil {
				return 0, "", false, fmt.Errorf("probe %s: %w", queue, err)
			}
		case e := <-closed:
			return 0, "", false, closeError(e)
		case <-ctx.Done():
			return 0, "", false, ctx.Err()
		}
	}
}

// checkMarker says whether the marker id is still at offset off in queue:
// "" if it is, else why not.
func checkMarker(ctx context.Context, conn *amqp.Connection, queue string, off int64, id string) (string, error) {
	got, gid, probe, err := peek(ctx, conn, queue, off)
	switch {
	case err != nil:
		return "", err
	case probe:
		return fmt.Sprintf("stream %s was deleted and recreated since (it no longer reaches offset %d)", queue, off), nil
	case got == off && gid == id:
		return "", nil
	case got == off:
		return fmt.Sprintf("stream %s was deleted and recreated since (another message is at offset %d)", queue, off), nil
	}
	return fmt.Sprintf("retention removed it (stream %s now starts at offset %d)", queue, got), nil
}

// markExpired marks the transfers whose start marker is no longer in Q.
// One read gives Q's first retained offset: a start offset before it is
// gone. Among the others, the oldest is checked to be the very marker the
// index recorded (Q may have been deleted and recreated: its offsets start
// at 0 again); if it is, Q has not been recreated since, and every later
// transfer is in it too; if not, the next one is checked. Typically two
// short reads, whatever the number of transfers. Transfers with no
// recorded start offset are not judged.
func markExpired(ctx context.Context, conn *amqp.Connection, topo rabbit.Topology, list []StreamTransfer) error {
	var known []int
	for i := range list {
		if list[i].StartID != "" {
			known = append(known, i)
		}
	}
	if len(known) == 0 {
		return nil
	}
	first, _, _, err := peek(ctx, conn, topo.Name(), "first")
	if err != nil {
		return err
	}
	checked := false
	for _, i := range known {
		e := &list[i]
		if e.Start < first {
			e.Expired, e.Gone = true, fmt.Sprintf("retention removed its first segments (stream %s now starts at offset %d)", topo.Name(), first)
			continue
		}
		if checked {
			continue
		}
		gone, err := checkMarker(ctx, conn, topo.Name(), e.Start, e.StartID)
		if err != nil {
			return err
		}
		if gone == "" {
			checked = true
			continue
		}
		e.Expired, e.Gone = true, gone
	}
	return nil
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
	conn, err := rabbit.Dial(ctx, dial)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// Listing creates nothing: a misspelt --queue is an error, not two
	// new streams with a week's retention.
	for _, q := range []string{topo.Name(), topo.IndexQueue()} {
		ch, err := conn.Channel()
		if err != nil {
			return nil, lost(fmt.Errorf("open channel: %w", err))
		}
		_, err = ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if ae := (*amqp.Error)(nil); errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return nil, fmt.Errorf("there is no stream %s on this broker (nothing was created): check --queue; the producer creates it", q)
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", q, err)
		}
		ch.Close()
	}
	list, err := readIndex(ctx, conn, topo)
	if err != nil {
		return nil, err
	}
	if err := markExpired(ctx, conn, topo, list); err != nil {
		return nil, err
	}
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
		if !ok || (kind != KindStart && kind != KindDone) {
			continue // not segmq's, or from a newer segmq: not ours to judge
		}
		k := doneKey{e.Transfer, e.Run}
		i, seen := at[k]
		if !seen {
			at[k] = len(list)
			n := e
			n.StartID, n.EndID = "", ""
			list = append(list, n)
			i = len(list) - 1
		}
		if list[i].StartID == "" && e.StartID != "" {
			// The first start entry's (a done entry repeats it).
			list[i].Start, list[i].StartID = e.Start, e.StartID
		}
		if kind == KindDone && !list[i].Complete {
			list[i].Complete, list[i].SHA256 = true, e.SHA256
			list[i].Finished = d.Timestamp
			list[i].End, list[i].EndID = e.End, e.EndID
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
	if off, ok := asInt(h[HdrOffset]); ok && off >= 0 {
		if id, _ := h[HdrMarker].(string); id != "" {
			e.Start, e.StartID = off, id
		}
	}
	if off, ok := asInt(h[HdrEndOffset]); ok && off >= 0 {
		if id, _ := h[HdrEndMarker].(string); id != "" {
			e.End, e.EndID = off, id
		}
	}
	return e, true
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
