package transfer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
)

// streamReceiver restores one transfer from a stream (doc.go, "Streams").
// A stream is read, never consumed: acks are credit only, nack requeues
// nothing, nothing is moved or dead-lettered. Every delivery is either
// this transfer's segment, placed at its offset whatever the order, or
// skipped; the journal records the stream offset to go on from.
type streamReceiver struct {
	cfg  ReceiveConfig
	part *partFile
	cls  classifier
	z    receiver // only its zstd decoder (unpack)
	res  ReceiveResult

	sel     *StreamTransfer // the transfer chosen from the index; nil: the first accepted
	next    int64           // offset to read from next; -1: not known yet
	start   any             // where this run started reading (for the rewind)
	rewound bool            // already read again from the first offset once
	placed  int             // placed since the last persist
	lastP   time.Time       // last placement (or start), for --timeout
	lastF   time.Time       // last persist
	connect bool
}

// receiveStream is Receive for --queue-type stream.
func receiveStream(ctx context.Context, cfg ReceiveConfig) (ReceiveResult, error) {
	if cfg.ReorderWindow != 0 {
		return ReceiveResult{}, errors.New("--window does not apply to a stream: nothing can be requeued there, and every segment is written at its offset whatever the order")
	}
	log := cfg.Log
	if log == nil {
		log = discard()
	}
	cfg.Log = log
	r := &streamReceiver{cfg: cfg, cls: classifier{want: cfg.Transfer, maxMSS: cfg.MaxMSS, seed: cfg.SeedFormat}, next: -1}
	r.z.log = log
	part, err := openPart(cfg.fs, cfg.Out, cfg.Restart, cfg.Transfer, 0, log)
	if de := (*doneError)(nil); errors.As(err, &de) {
		log.Info("nothing to receive", "reason", err)
		return ReceiveResult{Transfer: de.transfer, Segments: de.total, Bytes: de.size, SHA256: de.sha, Verified: true}, nil
	}
	if err != nil {
		return ReceiveResult{}, err
	}
	defer part.close()
	r.part = part
	defer func() {
		if r.z.zstd != nil {
			r.z.zstd.Close()
		}
	}()
	if b := part.bound(); b != nil {
		r.cls.digest = part.sha
		r.res.Transfer, r.res.Run, r.res.Resumed = b.Transfer, b.Run, part.resumed
		r.next = part.offset
		log.Info("resuming transfer", "transfer", b.Transfer, "segments", part.asm.Received(), "of", part.asm.Total(), "part", part.path, "stream_offset", part.offset)
	}
	start := time.Now()
	r.lastP, r.lastF = start, start
	err = reconnect(ctx, log, cfg.Dial, cfg.Topology, &r.connect, &r.res.Reconnects, r.session, func(err error) error {
		if perr := r.persist(); perr != nil {
			return perr
		}
		if cfg.Timeout > 0 && time.Since(r.lastP) > cfg.Timeout {
			return r.incomplete(fmt.Errorf("gave up reconnecting after %s: %w", cfg.Timeout, err))
		}
		return nil
	})
	r.res.Elapsed = time.Since(start)
	if err != nil {
		if perr := r.persist(); perr != nil {
			log.Warn("could not record progress", "err", perr)
		}
		if !errors.Is(err, ErrIncomplete) && (retriable(err) && r.connect || ctx.Err() != nil) {
			err = r.incomplete(err)
		}
		return r.res, err
	}
	return r.res, nil
}

// persist makes what is placed durable and records the offset after the
// last delivery handled.
func (r *streamReceiver) persist() error {
	r.lastF = time.Now()
	if r.part.bound() != nil && r.next >= 0 {
		r.part.setOffset(r.next)
	}
	r.placed = 0
	return r.part.persist()
}

// session reads the stream on one channel until the transfer is complete.
func (r *streamReceiver) session(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel) error {
	if r.sel == nil {
		if err := r.choose(ctx, conn); err != nil {
			return err
		}
	}
	from := r.from()
	for {
		rewind, err := r.read(ctx, ch, from)
		if err != nil || !rewind {
			return err
		}
		r.rewound, from = true, "first"
		if ch, err = conn.Channel(); err != nil {
			return lost(fmt.Errorf("open channel: %w", err))
		}
		defer ch.Close()
	}
}

// choose picks the transfer from the index: the bound one (a resume), or
// --transfer's newest run, or the newest complete transfer; and checks
// that what it will read is still in the stream (not removed by
// retention, not in a stream deleted and recreated since): a transfer
// that is gone is an error, never a wait for ever.
func (r *streamReceiver) choose(ctx context.Context, conn *amqp.Connection) error {
	list, err := readIndex(ctx, conn, r.cfg.Topology)
	if err != nil {
		return err
	}
	q := r.cfg.Topology.Name()
	if b := r.part.bound(); b != nil {
		for i := range list {
			if list[i].Transfer == b.Transfer && list[i].Run == b.Run {
				r.sel = &list[i]
			}
		}
		if r.sel == nil {
			r.sel = &StreamTransfer{Transfer: b.Transfer, Run: b.Run}
			return nil
		}
		return r.checkResume(ctx, conn)
	}
	if err := markExpired(ctx, conn, r.cfg.Topology, list); err != nil {
		return err
	}
	if r.sel = pickTransfer(list, r.cfg.Transfer); r.sel != nil {
		state := "complete"
		if !r.sel.Complete {
			state = "still being published"
		}
		r.cfg.Log.Info("restoring transfer from the stream", "transfer", r.sel.Transfer, "run", r.sel.Run, "size", r.sel.Size, "segments", r.sel.Segments, "state", state, "started", r.sel.Started.Format(time.RFC3339))
		return nil
	}
	if r.cfg.Transfer != "" {
		for i := len(list) - 1; i >= 0; i-- {
			if list[i].Transfer == r.cfg.Transfer {
				return fmt.Errorf("transfer %s (run %s) cannot be restored from stream %s: %s", list[i].Transfer, list[i].Run, q, list[i].Gone)
			}
		}
	} else if n := len(list); n > 0 {
		return fmt.Errorf("the %d transfers in stream %s have all expired (retention removed their segments, or the stream was deleted and recreated)", n, q)
	}
	return nil
}

// checkResume checks a resumed transfer against the stream: its start
// marker still at the offset the index recorded, or at least its done
// marker (the head is gone but the tail, where the missing segments may
// be, is there). Else the stream cannot give what OUT.part lacks. A
// journal offset past the done marker is brought back to it, so that the
// marker is read and the missing segments named.
func (r *streamReceiver) checkResume(ctx context.Context, conn *amqp.Connection) error {
	e, q := r.sel, r.cfg.Topology.Name()
	gone := ""
	if e.StartID != "" {
		var err error
		if gone, err = checkMarker(ctx, conn, q, e.Start, e.StartID); err != nil {
			return err
		}
	}
	if e.EndID != "" {
		endGone, err := checkMarker(ctx, conn, q, e.End, e.EndID)
		if err != nil {
			return err
		}
		if endGone == "" {
			gone = ""
			if r.next > e.End {
				r.next = e.End
			}
		} else if gone == "" {
			gone = "its end marker: " + endGone
		}
	}
	if gone != "" {
		return fmt.Errorf("%w: transfer %s (run %s) is no longer in stream %s: %s; %d of %d segments are in %s (kept), the others cannot be restored from this stream",
			ErrIncomplete, e.Transfer, e.Run, q, gone, r.part.asm.Received(), r.part.asm.Total(), r.part.path)
	}
	return nil
}

// from is where to start reading: the recorded offset on a resume, just
// after the chosen transfer's start marker, else the stream's first
// message (nothing chosen: the first transfer to arrive is taken).
func (r *streamReceiver) from() any {
	switch {
	case r.next >= 0:
		r.start = r.next
	case r.sel != nil && r.sel.StartID != "":
		r.start = r.sel.Start + 1
	default:
		r.start = "first"
	}
	return r.start
}

// read consumes from offset from until the transfer is complete. It
// returns rewind when the transfer's done marker came with segments
// missing and reading again from the first offset may find them.
func (r *streamReceiver) read(ctx context.Context, ch *amqp.Channel, from any) (rewind bool, err error) {
	if err := ch.Qos(r.cfg.Prefetch, 0, false); err != nil {
		return false, lost(fmt.Errorf("set prefetch: %w", err))
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	tag := fmt.Sprintf("segmq-stream-%d-%d", os.Getpid(), time.Now().UnixNano())
	q := r.cfg.Topology.Name()
	deliveries, err := ch.Consume(q, tag, false, false, false, false, amqp.Table{"x-stream-offset": from})
	if err != nil {
		return false, lost(fmt.Errorf("consume stream %s: %w", q, err))
	}
	r.cfg.Log.Info("reading stream", "queue", q, "from", from, "broker", rabbit.Redact(r.cfg.Dial.URL), "transfer", r.want())
	// Acks are credit: the broker sends at most Prefetch unacked
	// deliveries. They say nothing about what is durable; the offset in
	// the journal does.
	credit := max(r.cfg.Prefetch/2, 1)
	var lastTag uint64
	unacked := 0
	ack := func() error {
		if unacked == 0 {
			return nil
		}
		unacked = 0
		if err := ch.Ack(lastTag, true); err != nil {
			return lost(fmt.Errorf("ack: %w", err))
		}
		return nil
	}
	stop := func() error {
		if err := ch.Cancel(tag, false); err != nil {
			return lost(fmt.Errorf("cancel consumer: %w", err))
		}
		for range deliveries {
		}
		return nil
	}
	tick := time.NewTicker(min(r.cfg.AckInterval, 100*time.Millisecond))
	defer tick.Stop()
	for {
		if b := r.part.bound(); b != nil && r.part.asm.Complete() {
			if err := r.persist(); err != nil {
				return false, err
			}
			if err := stop(); err != nil {
				r.cfg.Log.Debug("cancel after the last segment", "err", err)
			}
			return false, r.finish()
		}
		select {
		case d, ok := <-deliveries:
			if !ok {
				return false, lost(fmt.Errorf("the broker ended the consumer (restart, or stream %s deleted)", q))
			}
			lastTag = d.DeliveryTag
			unacked++
			r.res.Deliveries++
			missing, err := r.handle(d)
			if err != nil {
				return false, err
			}
			if missing {
				if err := r.persist(); err != nil {
					return false, err
				}
				if err := stop(); err != nil {
					return false, err
				}
				if s, _ := r.start.(string); s != "first" && !r.rewound {
					r.cfg.Log.Warn("the transfer's end marker came with segments missing; reading the stream again from its first message", "missing", r.part.asm.Missing(nil, 5), "read_from", r.start)
					return true, nil
				}
				return false, r.incomplete(fmt.Errorf("the stream holds no more of this transfer (its end marker was read): the missing segments were removed by retention or never confirmed"))
			}
			if unacked >= credit {
				if err := ack(); err != nil {
					return false, err
				}
			}
			if r.placed >= r.cfg.AckEvery {
				if err := r.persist(); err != nil {
					return false, err
				}
			}
		case e := <-closed:
			return false, closeError(e)
		case <-tick.C:
			if err := ack(); err != nil {
				return false, err
			}
			if time.Since(r.lastF) >= r.cfg.AckInterval {
				if err := r.persist(); err != nil {
					return false, err
				}
			}
			if r.cfg.Timeout > 0 && time.Since(r.lastP) > r.cfg.Timeout {
				return false, r.incomplete(fmt.Errorf("timed out: no segment for %s", r.cfg.Timeout))
			}
		case <-ctx.Done():
			return false, r.incomplete(ctx.Err())
		}
	}
}

func (r *streamReceiver) want() string {
	if r.sel != nil {
		return r.sel.Transfer + " (run " + orNone(r.sel.Run) + ")"
	}
	return orFirst(r.cfg.Transfer, r.part.bound())
}

// handle takes one delivery: a segment of the transfer is placed, anything
// else skipped. missing reports the transfer's done marker read while
// segments are missing.
func (r *streamReceiver) handle(d amqp.Delivery) (missing bool, err error) {
	if off, ok := asInt(d.Headers["x-stream-offset"]); ok {
		r.next = off + 1
	}
	tr, _ := d.Headers[HdrTransfer].(string)
	run, _ := d.Headers[HdrRun].(string)
	mine := func() bool {
		if b := r.part.bound(); b != nil {
			return tr == b.Transfer && run == b.Run
		}
		return r.sel != nil && tr == r.sel.Transfer && run == r.sel.Run
	}
	if kind, ok := d.Headers[HdrKind].(string); ok {
		// A marker: the done marker of this transfer comes after every
		// segment the producer had confirmed. With segments missing, the
		// offset recorded is the marker's own: a rerun reads it again
		// (and says what is missing) instead of waiting past it.
		missing = kind == KindDone && mine() && r.part.bound() != nil && !r.part.asm.Complete()
		if missing && r.next > 0 {
			r.next--
		}
		return missing, nil
	}
	if (r.sel != nil || r.part.bound() != nil) && !mine() {
		r.res.Skipped++
		return false, nil
	}
	v := r.cls.classify(r.part.bound(), d.Headers, d.Body)
	switch v.act {
	case actDead:
		// A stream cannot dead-letter: the bad copy stays, and is skipped.
		r.res.Corrupt++
		r.cfg.Log.Warn("segment skipped: malformed", "reason", v.reason, "transfer", v.m.Transfer, "message_id", d.MessageId, "stream_offset", r.next-1)
		return false, nil
	case actAside, actStale:
		r.res.Skipped++
		return false, nil
	}
	payload, buf := v.payload, (*[]byte)(nil)
	if v.m.Encoding != "" {
		if buf, err = r.z.unpack(v.m.Encoding, v.payload, v.m.MSS); err != nil {
			r.res.Corrupt++
			r.cfg.Log.Warn("segment skipped: payload does not decode", "encoding", v.m.Encoding, "err", err, "message_id", d.MessageId)
			return false, nil
		}
		payload = *buf
		if err := checkShape(v.h, len(payload), v.m); err != nil {
			unpackBufs.Put(buf)
			r.res.Corrupt++
			r.cfg.Log.Warn("segment skipped: decoded payload", "err", err, "message_id", d.MessageId)
			return false, nil
		}
	}
	if r.part.bound() == nil {
		b := binding{Transfer: v.m.Transfer, Run: v.m.Run, MSS: v.m.MSS, Size: v.m.Size}
		if !v.m.raw() {
			b.Total = v.h.Total
		}
		if err := r.part.bind(b); err != nil {
			return false, err
		}
		r.res.Transfer, r.res.Run = b.Transfer, b.Run
		r.cfg.Log.Info("receiving transfer", "transfer", b.Transfer, "run", b.Run, "mss", b.MSS, "size", b.Size, "segments", v.h.Total)
	}
	o, err := r.part.place(v.h, payload, buf)
	var se *segment.SegmentError
	switch {
	case errors.As(err, &se):
		r.res.Corrupt++
		r.cfg.Log.Warn("segment skipped", "reason", se.Error(), "message_id", d.MessageId)
		return false, nil
	case err != nil:
		// The offset recorded stays before this segment: a rerun reads it again.
		r.next = -1
		return false, r.incomplete(fmt.Errorf("write %s: %w", r.part.path, err))
	}
	switch o {
	case segment.Placed:
		if v.m.SHA256 != "" && r.cls.digest == "" {
			r.part.setDigest(v.m.SHA256)
			r.cls.digest = v.m.SHA256
		}
		r.placed++
		r.lastP = time.Now()
		if r.cfg.Progress != nil {
			size, _ := r.part.asm.Size()
			r.cfg.Progress(int64(r.part.asm.Received())*int64(max(r.part.asm.MSS(), 1)), size)
		}
	case segment.Duplicate:
		if buf != nil {
			unpackBufs.Put(buf)
		}
		r.res.Duplicates++ // a republished copy (the producer is at-least-once); the SHA-256 decides
	}
	return false, nil
}

func (r *streamReceiver) incomplete(why error) error {
	have := "no segment of " + r.want() + " received"
	if b := r.part.bound(); b != nil {
		have = fmt.Sprintf("%d of %d segments of transfer %q received", r.part.asm.Received(), r.part.asm.Total(), b.Transfer)
		if miss := r.part.asm.Missing(nil, 5); len(miss) > 0 {
			have += fmt.Sprintf(", first missing %v", miss)
		}
		return fmt.Errorf("%w: %w; %s; %s kept, run again to resume from stream offset %d", ErrIncomplete, why, have, r.part.path, r.part.offset)
	}
	return fmt.Errorf("%w: %w; %s", ErrIncomplete, why, have)
}

// finish checks the assembled file and puts it at its final path.
func (r *streamReceiver) finish() error {
	sum, n, err := r.part.commit()
	r.res.Segments, r.res.Bytes, r.res.SHA256 = r.part.asm.Total(), n, sum
	if err != nil {
		return err
	}
	r.res.Verified = !r.part.bound().raw()
	return nil
}
