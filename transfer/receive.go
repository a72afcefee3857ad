package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
)

// Defaults for ReceiveConfig.
const (
	DefaultPrefetch = 256
	// DefaultAckEvery is a quarter of the prefetch: while a batch is
	// fsynced the broker may still send the other three quarters. A batch
	// the size of the prefetch stops the broker for every fsync; the raw +
	// write table of make bench measures the same choice (issue 13).
	DefaultAckEvery    = 64
	DefaultAckInterval = 250 * time.Millisecond
	// MaxPrefetch is the largest prefetch AMQP 0-9-1 can express (a
	// 16-bit field; amqp091-go would silently truncate a larger one, and
	// 65536 would become 0, which means unlimited).
	MaxPrefetch = 65535
)

// ReceiveConfig configures Receive. Zero values are documented per field.
type ReceiveConfig struct {
	Dial     rabbit.DialConfig
	Topology rabbit.Topology
	Out      string // final path; work happens in Out+".part"; required
	// ReorderWindow is how far ahead of the first missing segment a
	// segment may be placed; 0 means the whole transfer. 1 is strict
	// in-order (the seed's behaviour). Segments beyond it are held, and
	// moved to the queue's tail when too many are held.
	ReorderWindow uint32
	Prefetch      int // unacked deliveries, 1..MaxPrefetch; 0 means DefaultPrefetch
	// Timeout ends the run when no segment has been placed for this long;
	// 0 means wait for ever. The .part and its state are kept.
	Timeout time.Duration
	// Transfer selects a transfer id; "" takes the first one whose
	// segment is accepted (or resumes the one in the .part state).
	Transfer string
	// Restart discards an existing .part and state instead of resuming.
	Restart bool
	// AckEvery is how many placed segments make a batch: fsync the .part,
	// append to its journal, then ack; 0 means DefaultAckEvery. A batch
	// is also flushed when the unacked deliveries reach the prefetch.
	AckEvery int
	// AckInterval is the longest a placed segment waits for its batch;
	// 0 means DefaultAckInterval.
	AckInterval time.Duration
	// MaxMSS bounds the MSS a message's headers may claim (and so what
	// one segment makes the consumer allocate); 0 means segment.MaxMSS,
	// the producer's own limit.
	MaxMSS int
	// SeedFormat also takes seed-format segments (no segmq headers, from
	// a producer in another language). Such a transfer has no size or
	// digest to check, so by default they are set aside, and a stray
	// headerless message can never become the consumer's output.
	SeedFormat bool
	// Standby waits while another consumer holds Out's lock (a hot
	// standby on the same --out), then resumes from the .part it leaves,
	// instead of failing at once. If that consumer restores the file, the
	// standby returns with ReceiveResult.ByOther set.
	Standby bool
	// NoClaim skips the claim in QUEUE.claims (claim.go): for a broker
	// without streams, or a user who may not use that stream, when no
	// other consumer can run on the queue. Without it, a claims stream
	// that cannot be used stops the consumer before its first ack.
	NoClaim  bool
	Log      *slog.Logger
	Progress func(bytes int64, total int64)

	fs vfs.FS // the .part and its journal; nil: the OS (crash tests: a vfs.MemFS)
}

// Validate says what is wrong with c.
func (c ReceiveConfig) Validate() error {
	switch {
	case c.Out == "":
		return errors.New("--out is required")
	case c.Prefetch < 0 || c.Prefetch > MaxPrefetch:
		return fmt.Errorf("--prefetch must be between 1 and %d (AMQP's limit), got %d", MaxPrefetch, c.Prefetch)
	case c.Timeout < 0:
		return fmt.Errorf("--timeout must be >= 0, got %s", c.Timeout)
	case c.AckEvery < 0:
		return fmt.Errorf("--ack-every must be >= 1, got %d", c.AckEvery)
	case c.AckInterval < 0:
		return fmt.Errorf("--ack-interval must be > 0, got %s", c.AckInterval)
	case c.MaxMSS < 0 || c.MaxMSS > segment.MaxMSS:
		return fmt.Errorf("--max-mss must be between 1 and %d, got %d", segment.MaxMSS, c.MaxMSS)
	}
	if c.Transfer != "" {
		if err := CheckTransferID(c.Transfer); err != nil {
			return fmt.Errorf("--transfer: %w", err)
		}
	}
	return c.Topology.Validate()
}

// ReceiveResult describes a finished transfer.
type ReceiveResult struct {
	Transfer     string // "" for a seed-format transfer
	Run          string // the transfer's segmq-run; "" if the producer sent none
	Segments     uint32
	Bytes        int64
	SHA256       string
	Verified     bool // the producer sent a SHA-256 and it matched
	Resumed      uint32
	Reconnects   int
	Duplicates   int
	Requeued     int // given back with nack(requeue) after a failed write
	SetAside     int // other transfers' segments (and held ones) moved to the queue's tail
	Stale        int // leftover copies of transfers already restored (in the registry), acked and dropped
	Conflicts    int // copies of a placed segment with other bytes, dead-lettered (counted in DeadLettered too)
	DeadLettered int
	// Streams only (stream.go): messages read, other transfers' skipped,
	// malformed copies of this transfer's segments skipped.
	Deliveries, Skipped, Corrupt int
	Elapsed                      time.Duration
	// ByOther: a standby found Out restored by the consumer it stood by
	// for; nothing was received.
	ByOther bool
}

// ErrIncomplete wraps the reason a transfer ended before it was whole.
var ErrIncomplete = errors.New("transfer incomplete")

// ErrDigest: the assembled file does not match the producer's digest or size.
var ErrDigest = errors.New("assembled file does not match the producer's digest")

// HdrMoved counts how often a consumer moved a message to the queue's
// tail; informational.
const HdrMoved = "segmq-moved"

// receiver is the state of one Receive. The part file owns the disk;
// the classifier decides; the acker owns delivery tags; the receiver
// moves deliveries between them.
type receiver struct {
	cfg  ReceiveConfig
	log  *slog.Logger
	part *partFile
	cls  classifier
	zstd *zstd.Decoder
	// zstdLimit is the decoder's limit: the bound transfer's MSS (or the
	// candidate's), at least 1 MiB.
	zstdLimit int

	// Per session (channel).
	conn    *amqp.Connection
	ch      *amqp.Channel
	tag     string // consumer tag
	acks    *acker
	returns <-chan amqp.Return
	placed  []uint64   // delivery tags placed (or duplicate) since the last persist
	batch   *batchSync // the last batch, being made durable in the background
	spare   []uint64   // a reaped batch's tags, reused for placed
	parked  []heldSeg  // beyond the reorder window, unacked
	moves   []move     // copies published to the tail, awaiting confirm

	parkCap    int
	unproduct  int // set-asides since the last placement, or the last pause
	passLen    int // set-asides that make one pass through the queue (0: not measured)
	backoff    time.Duration
	asides     map[string]int   // set-asides by reason, for the hint
	staleSeen  map[doneKey]bool // transfers whose leftovers were reported
	hinted     bool
	lastFlush  time.Time
	lastPlaced time.Time
	connected  bool // a session has reached the broker; only then reconnect
	limited    bool // the queue is subject to the broker's default delivery limit
	warnedLim  bool
	warnedDone bool
	ownerID    string // host:absolute --out, in claims
	claimed    bool   // this process's claim on the bound run is the registry's first
	claimErr   error  // another owner's claim is first: never ack
	res        ReceiveResult
}

// heldSeg is a decoded segment of the bound transfer held for later.
type heldSeg struct {
	d       amqp.Delivery
	m       meta
	h       segment.Header
	payload []byte
	buf     *[]byte // payload's pooled buffer (a decoded payload), or nil
}

// move is a delivery whose copy was published to the queue's tail; the
// original is acked once the copy is confirmed.
type move struct {
	tag uint64
	dc  *amqp.DeferredConfirmation
}

// Receive consumes one transfer from the queue into cfg.Out.
func Receive(ctx context.Context, cfg ReceiveConfig) (ReceiveResult, error) {
	if err := cfg.Validate(); err != nil {
		return ReceiveResult{}, err
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = DefaultPrefetch
	}
	if cfg.AckEvery == 0 {
		cfg.AckEvery = DefaultAckEvery
	}
	if cfg.AckInterval == 0 {
		cfg.AckInterval = DefaultAckInterval
	}
	if cfg.MaxMSS == 0 {
		cfg.MaxMSS = segment.MaxMSS
	}
	if cfg.Topology.IsStream() {
		return receiveStream(ctx, cfg)
	}
	r := &receiver{cfg: cfg, log: cfg.Log, cls: classifier{want: cfg.Transfer, maxMSS: cfg.MaxMSS, seed: cfg.SeedFormat},
		parkCap: max(cfg.Prefetch-1, 0), backoff: minBackoff, asides: map[string]int{}, staleSeen: map[doneKey]bool{}}
	if r.log == nil {
		r.log = discard()
	}
	part, byOther, err := r.open(ctx)
	if byOther {
		return ReceiveResult{ByOther: true}, nil
	}
	if de := (*doneError)(nil); errors.As(err, &de) {
		r.log.Info("nothing to receive", "reason", err)
		return ReceiveResult{Transfer: de.transfer, Segments: de.total, Bytes: de.size, SHA256: de.sha, Verified: true}, nil
	}
	if err != nil {
		return ReceiveResult{}, err
	}
	defer part.close()
	r.part = part
	defer func() {
		if r.zstd != nil {
			r.zstd.Close()
		}
	}()
	if b := part.bound(); b != nil {
		r.cls.digest = part.sha
		r.res.Transfer, r.res.Run, r.res.Resumed = b.Transfer, b.Run, part.resumed
		r.log.Info("resuming transfer", "transfer", b.Transfer, "segments", part.asm.Received(), "of", part.asm.Total(), "part", part.path)
	}

	start := time.Now()
	r.lastPlaced, r.lastFlush = start, start
	err = reconnectInfo(ctx, r.log, r.cfg.Dial, r.cfg.Topology, &r.connected, &r.res.Reconnects, r.session, func(err error) error {
		// The channel is gone, and with it every unacked delivery: the
		// broker will deliver them again. Keep what is on disk.
		if perr := r.part.persist(); perr != nil {
			return perr
		}
		if r.cfg.Timeout > 0 && time.Since(r.lastPlaced) > r.cfg.Timeout {
			return r.incomplete(fmt.Errorf("gave up reconnecting after %s: %w", r.cfg.Timeout, err))
		}
		return nil
	})
	r.res.Elapsed = time.Since(start)
	if err != nil {
		// What is placed is kept for a resume (the session has already
		// acked it when its channel was still open).
		if perr := r.part.persist(); perr != nil {
			r.log.Warn("could not record progress", "err", perr)
		}
		if !errors.Is(err, ErrIncomplete) && (retriable(err) && r.connected || ctx.Err() != nil) {
			err = r.incomplete(err)
		}
		return r.res, err
	}
	return r.res, nil
}

// session consumes on one channel until the transfer is complete, a
// final error, or the connection fails (a retriable error). Before it
// closes a channel that still works, it makes what it placed durable and
// acks it, so a rerun does not receive it again.
func (r *receiver) session(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel, info sessionInfo) (err error) {
	// A batch still being made durable belongs to the last channel: its
	// delivery tags mean nothing on this one, and the broker redelivers it.
	if err := r.part.waitSync(); err != nil {
		return err
	}
	r.conn, r.ch, r.acks = conn, ch, &acker{ch: ch}
	r.placed, r.parked, r.moves, r.batch = r.placed[:0], nil, nil, nil
	if err := ch.Qos(r.cfg.Prefetch, 0, false); err != nil {
		return lost(fmt.Errorf("set prefetch: %w", err))
	}
	if err := ch.Confirm(false); err != nil { // for moves to the tail
		return lost(fmt.Errorf("enable publisher confirms: %w", err))
	}
	if err := r.readDone(conn); err != nil {
		return err
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	r.returns = ch.NotifyReturn(make(chan amqp.Return, 16))
	r.tag = fmt.Sprintf("segmq-consumer-%d-%d", os.Getpid(), time.Now().UnixNano())
	// Not ConsumeWithContext: on cancel, its goroutine sends basic.cancel
	// while the deferred channel close waits for its close-ok, and
	// amqp091-go 1.16 can hand that reply to the wrong caller, leaving
	// Close (and Ctrl-C) blocked for ever. The loop watches ctx itself.
	deliveries, err := ch.Consume(r.cfg.Topology.Name(), r.tag, false, false, false, false, nil)
	if err != nil {
		return lost(fmt.Errorf("consume %s: %w", r.cfg.Topology.Name(), err))
	}
	if err := r.checkQueue(info); err != nil {
		return err
	}
	r.log.Info("waiting for segments", "queue", r.cfg.Topology.Name(), "broker", info.URL, "transfer", orFirst(r.cfg.Transfer, r.part.bound()))
	err = r.loop(ctx, deliveries, closed)
	if err != nil && !retriable(err) {
		// The channel still works: settle what can be settled.
		if ferr := r.flush(true); ferr != nil {
			r.log.Debug("could not ack progress on the way out", "err", ferr)
		}
	}
	return err
}

func orFirst(want string, b *binding) string {
	switch {
	case want != "":
		return want
	case b != nil:
		return b.Transfer
	}
	return "the first to arrive"
}

func (r *receiver) loop(ctx context.Context, deliveries <-chan amqp.Delivery, closed <-chan *amqp.Error) error {
	tick := time.NewTicker(min(r.cfg.AckInterval, 100*time.Millisecond))
	defer tick.Stop()
	for {
		if b := r.part.bound(); b != nil && r.part.asm.Complete() {
			if err := r.settle(ctx, deliveries); err != nil {
				return err
			}
			return r.finish()
		}
		select {
		case d, ok := <-deliveries:
			if !ok {
				return lost(fmt.Errorf("the broker ended the consumer (restart, or queue %s deleted)", r.cfg.Topology.Name()))
			}
			if err := r.handle(ctx, d); err != nil {
				return err
			}
			if n, _ := asInt(d.Headers["x-delivery-count"]); n >= riskyDeliveries && r.limited {
				// Near the broker's delivery limit: ack it now, not with
				// the batch, so a lost connection cannot return it again.
				if err := r.flush(false); err != nil {
					return err
				}
			} else if err := r.maybeFlush(); err != nil {
				return err
			}
		case <-r.batchDone():
			if err := r.ackDurable(); err != nil {
				return err
			}
		case e := <-closed:
			return closeError(e)
		case ret := <-r.returns:
			return lost(fmt.Errorf("a segment moved to the tail was returned unroutable (%d %s): was queue %s deleted?", ret.ReplyCode, ret.ReplyText, r.cfg.Topology.Name()))
		case <-tick.C:
			if time.Since(r.lastFlush) >= r.cfg.AckInterval || len(r.moves) > 0 {
				if err := r.flushBackground(); err != nil {
					return err
				}
			}
			if r.cfg.Timeout > 0 && time.Since(r.lastPlaced) > r.cfg.Timeout {
				return r.incomplete(fmt.Errorf("timed out: no segment for %s", r.cfg.Timeout))
			}
		case <-ctx.Done():
			return r.incomplete(ctx.Err())
		}
	}
}

// settle handles what the broker has already sent ahead (prefetch) once
// the transfer is complete: duplicates are acked, malformed segments
// dead-lettered, other transfers' segments moved to the tail. It cancels
// the consumer first; the broker sends every delivery before the
// cancel-ok, and amqp091-go closes the deliveries channel after the last
// of them, so nothing is left in flight and nothing is waited for by a
// timer. What is still in the queue stays there.
func (r *receiver) settle(ctx context.Context, deliveries <-chan amqp.Delivery) error {
	if err := r.ch.Cancel(r.tag, false); err != nil {
		return lost(fmt.Errorf("cancel consumer: %w", err))
	}
	for d := range deliveries {
		if err := r.handle(ctx, d); err != nil {
			return err
		}
	}
	return r.flush(true)
}

func (r *receiver) incomplete(why error) error {
	have := "no segment of " + orFirst(r.cfg.Transfer, nil) + " received"
	if b := r.part.bound(); b != nil {
		have = fmt.Sprintf("%d of %d segments of transfer %q received", r.part.asm.Received(), r.part.asm.Total(), b.Transfer)
		if miss := r.part.asm.Missing(nil, 5); len(miss) > 0 {
			have += fmt.Sprintf(", first missing %v", miss)
		}
	}
	if r.res.SetAside > 0 {
		have += fmt.Sprintf("; %d segments of other transfers (or beyond the window) moved to the queue's tail", r.res.SetAside)
	}
	if n := r.deadDepth(); n > 0 {
		have += fmt.Sprintf("; %s holds %d messages: what was dead-lettered (malformed, or past a quorum queue's delivery limit) waits there", r.cfg.Topology.DeadQueue(), n)
	}
	if r.part.bound() == nil {
		return fmt.Errorf("%w: %w; %s", ErrIncomplete, why, have)
	}
	return fmt.Errorf("%w: %w; %s; %s kept, run again to resume", ErrIncomplete, why, have, r.part.path)
}

func (r *receiver) handle(ctx context.Context, d amqp.Delivery) error {
	r.acks.track(d.DeliveryTag)
	v := r.cls.classify(r.part.bound(), d.Headers, d.Body)
	switch v.act {
	case actDead:
		return r.dead(d, v.reason, v.m.Transfer)
	case actAside:
		r.asides[v.reason]++
		return r.setAside(ctx, d)
	case actStale:
		return r.dropStale(d, v.m)
	}
	s := heldSeg{d: d, m: v.m, h: v.h, payload: v.payload}
	if v.m.Encoding != "" {
		buf, err := r.unpack(v.m.Encoding, v.payload, v.m.MSS)
		if err != nil {
			return r.dead(d, fmt.Sprintf("%s payload does not decode within %d bytes: %v", v.m.Encoding, unpackLimit(v.m.Encoding, v.m.MSS), err), v.m.Transfer)
		}
		s.payload, s.buf = *buf, buf
		if err := checkShape(v.h, len(s.payload), v.m); err != nil {
			unpackBufs.Put(buf)
			return r.dead(d, fmt.Sprintf("decoded payload: %v", err), v.m.Transfer)
		}
	}
	if r.part.bound() == nil {
		b := binding{Transfer: v.m.Transfer, Run: v.m.Run, MSS: v.m.MSS, Size: v.m.Size}
		if !v.m.raw() {
			b.Total = v.h.Total
		}
		if err := r.part.bind(b); err != nil {
			return err
		}
		r.res.Transfer, r.res.Run = b.Transfer, b.Run
		r.log.Info("receiving transfer", "transfer", b.Transfer, "run", b.Run, "raw", b.raw(), "mss", b.MSS, "size", b.Size, "segments", v.h.Total)
	}
	return r.place(ctx, s)
}

// place offers a segment to the part file, then what it unblocked from
// the held segments. It never acks: flush does, after persisting.
func (r *receiver) place(ctx context.Context, s heldSeg) error {
	o, err := r.offer(s)
	if err != nil {
		return err
	}
	if o == segment.NotYet {
		return r.hold(ctx, s)
	}
	if o != segment.Placed {
		return nil
	}
	// Each pass places what the last one unblocked; the lot only shrinks.
	for progress := true; progress && len(r.parked) > 0; {
		progress = false
		kept := r.parked[:0]
		for _, p := range r.parked {
			po, err := r.offer(p)
			if err != nil {
				return err
			}
			if po == segment.NotYet {
				kept = append(kept, p)
				continue
			}
			progress = progress || po == segment.Placed
		}
		clear(r.parked[len(kept):])
		r.parked = kept
	}
	return nil
}

// offer gives one segment to the part file and books the outcome.
func (r *receiver) offer(s heldSeg) (segment.Outcome, error) {
	o, err := r.part.place(s.h, s.payload, s.buf)
	var se *segment.SegmentError
	switch {
	case errors.As(err, &se):
		return 0, r.dead(s.d, se.Error(), s.m.Transfer)
	case err != nil:
		// Could not write (disk full, I/O error): give it back and stop;
		// what is on disk is persisted and acked on the way out.
		r.res.Requeued++
		r.acks.settled(s.d.DeliveryTag)
		if nerr := s.d.Nack(false, true); nerr != nil {
			r.log.Warn("nack after write error", "err", nerr)
		}
		return 0, r.incomplete(fmt.Errorf("write %s: %w", r.part.path, err))
	}
	switch o {
	case segment.Placed:
		if s.m.SHA256 != "" && r.cls.digest == "" {
			r.part.setDigest(s.m.SHA256) // accepted: now the transfer's digest
			r.cls.digest = s.m.SHA256
		}
		r.placed = append(r.placed, s.d.DeliveryTag)
		r.unproduct, r.passLen, r.backoff, r.lastPlaced = 0, 0, minBackoff, time.Now()
		if r.cfg.Progress != nil {
			size, _ := r.part.asm.Size()
			r.cfg.Progress(int64(r.part.asm.Received())*int64(max(r.part.asm.MSS(), 1)), size)
		}
	case segment.Duplicate:
		same, err := r.part.samePayload(s.h.Seq, s.payload)
		if s.buf != nil {
			unpackBufs.Put(s.buf)
		}
		if err != nil {
			return 0, r.incomplete(fmt.Errorf("read back %s: %w", r.part.path, err))
		}
		if !same {
			// Two copies of one segment that disagree, both with good
			// CRCs: one of them is not the producer's. Which one cannot
			// be known here, so the second is kept in the dead-letter
			// queue, not dropped; the SHA-256 decides at the end.
			r.res.Conflicts++
			return 0, r.dead(s.d, fmt.Sprintf("segment %d conflicts with the copy already placed (same headers, other bytes); kept here in case that one was wrong", s.h.Seq), s.m.Transfer)
		}
		r.res.Duplicates++
		r.placed = append(r.placed, s.d.DeliveryTag) // acked with the next batch
	}
	return o, nil
}

// hold keeps a segment that cannot be placed yet (beyond the reorder
// window); when too many are held, the oldest goes to the queue's tail.
func (r *receiver) hold(ctx context.Context, s heldSeg) error {
	r.parked = append(r.parked, s)
	if len(r.parked) <= r.parkCap {
		return nil
	}
	old := r.parked[0]
	r.parked = r.parked[1:]
	if old.buf != nil {
		unpackBufs.Put(old.buf)
	}
	return r.setAside(ctx, old.d)
}

const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// setAside moves a delivery to the queue's tail: a persistent copy is
// published (mandatory, confirmed) and the original is acked once the
// broker has confirmed the copy. RabbitMQ puts a requeued message back at
// the head, so nack(requeue) could never get past a backlog of another
// transfer, and on quorum queues every requeue counts toward the
// delivery limit; a copy at the tail does neither. A crash between the
// confirm and the ack leaves a duplicate, never a loss.
//
// Set-asides are paced by passes: once as many have gone by without a
// placement as the queue held (measured), a whole pass through the queue
// found nothing to take, and the consumer pauses (50 ms, doubling to 30 s)
// before the next pass. A pass that places anything resets the pause, so
// a transfer interleaved with another, or --window 1 with any arrival
// order, is never slowed; a queue holding only other transfers' segments
// is moved once per pause, not spun.
func (r *receiver) setAside(ctx context.Context, d amqp.Delivery) error {
	r.res.SetAside++
	r.unproduct++
	if r.unproduct > r.cfg.Prefetch {
		if r.passLen == 0 {
			r.passLen = r.measurePass()
		}
		if r.unproduct > r.passLen {
			r.hint()
			select {
			case <-time.After(r.backoff):
			case <-ctx.Done():
				return r.incomplete(ctx.Err())
			}
			r.backoff = min(2*r.backoff, maxBackoff)
			r.unproduct, r.passLen = 0, 0
		}
	}
	h := amqp.Table{}
	for k, v := range d.Headers {
		h[k] = v
	}
	n, _ := asInt(h[HdrMoved])
	h[HdrMoved] = n + 1
	dc, err := r.ch.PublishWithDeferredConfirmWithContext(ctx, "", r.cfg.Topology.Name(), true, false, amqp.Publishing{
		Headers: h, Body: d.Body, DeliveryMode: amqp.Persistent, MessageId: d.MessageId,
		ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, AppId: d.AppId, Timestamp: d.Timestamp,
	})
	if err != nil {
		if ctx.Err() != nil {
			return r.incomplete(ctx.Err())
		}
		return lost(fmt.Errorf("move a segment to the tail: %w", err))
	}
	r.moves = append(r.moves, move{tag: d.DeliveryTag, dc: dc})
	return nil
}

// measurePass returns how many set-asides make one pass through the
// queue: the ready messages (asked of the broker on a channel of its own)
// plus what the broker has already sent ahead.
func (r *receiver) measurePass() int {
	ch, err := r.conn.Channel()
	if err != nil {
		return 2 * r.cfg.Prefetch
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(r.cfg.Topology.Name(), true, false, false, false, nil)
	if err != nil {
		return 2 * r.cfg.Prefetch
	}
	return q.Messages + r.cfg.Prefetch
}

// deadDepth is the number of messages in the dead-letter queue, or 0
// when it cannot be asked (no live connection).
func (r *receiver) deadDepth() int {
	if r.conn == nil || r.conn.IsClosed() {
		return 0
	}
	ch, err := r.conn.Channel()
	if err != nil {
		return 0
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(r.cfg.Topology.DeadQueue(), true, false, false, false, nil)
	if err != nil {
		return 0
	}
	return q.Messages
}

// hint says once why the consumer is moving segments and pausing.
func (r *receiver) hint() {
	if r.hinted {
		return
	}
	r.hinted = true
	var why []string
	for reason, n := range r.asides {
		why = append(why, fmt.Sprintf("%d of %s", n, reason))
	}
	slices.Sort(why)
	next := uint32(0)
	if r.part.bound() != nil {
		next = r.part.asm.Next()
	}
	r.log.Warn("a whole pass through the queue found nothing to take; moving what is not ours to the tail and pausing between passes. One queue per transfer avoids this",
		"waiting_for", orFirst(r.cfg.Transfer, r.part.bound()), "next", next, "window", r.cfg.ReorderWindow, "set_aside", strings.Join(why, "; "))
}

// settleMoves acks the originals of confirmed copies; with wait, it waits
// for every copy. A nacked copy leaves its original to be requeued.
func (r *receiver) settleMoves(wait bool) error {
	kept := r.moves[:0]
	for i, m := range r.moves {
		if !wait {
			select {
			case <-m.dc.Done():
			default:
				kept = append(kept, r.moves[i:]...)
				r.moves = kept
				return nil
			}
		}
		select {
		case <-m.dc.Done():
		case <-time.After(30 * time.Second):
			return lost(errors.New("no confirm for a segment moved to the tail in 30s"))
		}
		if m.dc.Acked() {
			r.acks.done(m.tag)
			continue
		}
		if r.ch.IsClosed() {
			return lost(errors.New("channel closed before a move to the tail was confirmed"))
		}
		r.log.Warn("the broker nacked a copy moved to the tail; requeueing the original")
		r.res.Requeued++
		r.acks.settled(m.tag)
		if err := r.ch.Nack(m.tag, false, true); err != nil {
			return lost(fmt.Errorf("nack: %w", err))
		}
	}
	r.moves = kept[:0]
	return nil
}

// dead rejects a delivery without requeue: the broker routes it to the
// dead-letter queue.
func (r *receiver) dead(d amqp.Delivery, reason, transfer string) error {
	r.res.DeadLettered++
	r.log.Warn("segment dead-lettered", "reason", reason, "queue", r.cfg.Topology.DeadQueue(), "transfer", transfer, "message_id", d.MessageId, "bytes", len(d.Body))
	r.acks.settled(d.DeliveryTag)
	if err := d.Nack(false, false); err != nil {
		return lost(fmt.Errorf("nack: %w", err))
	}
	return nil
}

// maybeFlush flushes a full batch in the background, or at once when the
// unsettled deliveries fill the prefetch: then the broker sends nothing
// more until some are acked.
func (r *receiver) maybeFlush() error {
	full := r.acks.unsettled() >= r.cfg.Prefetch
	switch {
	case full:
		return r.flush(true)
	case len(r.placed) >= r.cfg.AckEvery:
		return r.flushBackground()
	}
	return nil
}

// flush persists what is placed, and only then acks it, together with
// the originals of confirmed moves. With wait it also waits for every
// outstanding move to be confirmed.
func (r *receiver) flush(wait bool) error {
	r.lastFlush = time.Now()
	if err := r.startBatch(); err != nil {
		return err
	}
	if err := r.reap(true); err != nil {
		return err
	}
	if err := r.settleMoves(wait); err != nil {
		return err
	}
	return r.ack()
}

// batchSync is a batch of deliveries whose segments are being made
// durable in the background (partFile.startSync); they are acked when it
// is done, never before.
type batchSync struct {
	sync *pendingSync
	tags []uint64
}

// flushBackground acks the last batch once it is durable (waiting for it
// if need be), then starts making what is placed since durable in the
// background and returns: the next batch is received and written while
// the disk syncs this one, where flush would stop for it. The loop acks
// the batch when it is done (ackDurable).
func (r *receiver) flushBackground() error {
	r.lastFlush = time.Now()
	if err := r.startBatch(); err != nil {
		return err
	}
	if err := r.settleMoves(false); err != nil {
		return err
	}
	return r.ack()
}

// startBatch waits for the last batch (reap), then starts making what is
// placed since durable in the background, as the next batch; with nothing
// new to persist (duplicates only) its deliveries are done at once.
func (r *receiver) startBatch() error {
	if err := r.reap(true); err != nil {
		return err
	}
	if s := r.part.startSync(); s != nil {
		r.batch = &batchSync{sync: s, tags: r.placed}
		r.placed = r.spare[:0]
		r.spare = nil
		return nil
	}
	for _, t := range r.placed {
		r.acks.done(t)
	}
	r.placed = r.placed[:0]
	return nil
}

// batchDone is closed when the background batch is durable; nil (never
// ready) when there is none.
func (r *receiver) batchDone() <-chan struct{} {
	if r.batch == nil {
		return nil
	}
	return r.batch.sync.done
}

// reap waits for the background batch (without block: only if it is
// already done) and marks its deliveries safe to ack; an error of its
// fsync or journal append is returned, and nothing of it is acked.
func (r *receiver) reap(block bool) error {
	b := r.batch
	if b == nil {
		return nil
	}
	if !block {
		select {
		case <-b.sync.done:
		default:
			return nil
		}
	}
	r.batch = nil
	if err := r.part.waitSync(); err != nil {
		return err
	}
	for _, t := range b.tags {
		r.acks.done(t)
	}
	r.spare = b.tags[:0]
	return nil
}

// ackDurable acks the background batch if it is durable.
func (r *receiver) ackDurable() error {
	if err := r.reap(false); err != nil {
		return err
	}
	return r.ack()
}

// ack acks what is done. The first ack that may carry segments of the
// bound run is preceded by its claim (checkClaim): after the first batch
// is durable, so that a consumer that cannot persist (a full disk) leaves
// no claim behind to block other --outs.
func (r *receiver) ack() error {
	if !r.claimed && r.part.bound() != nil && r.acks.anyDone() {
		if err := r.checkClaim(); err != nil {
			return err
		}
	}
	return r.acks.ackDone()
}

// finish checks the assembled file and puts it at its final path.
func (r *receiver) finish() error {
	sum, n, err := r.part.commit()
	r.res.Segments, r.res.Bytes, r.res.SHA256 = r.part.asm.Total(), n, sum
	if err != nil {
		if r.res.Conflicts > 0 && errors.Is(err, ErrDigest) {
			err = fmt.Errorf("%w; %d copies of placed segments with other bytes went to %s: one of each pair is not the producer's", err, r.res.Conflicts, r.cfg.Topology.DeadQueue())
		}
		return err
	}
	if r.part.bound().raw() {
		r.log.Info("seed-format transfer: no size or digest to check against; assembled as raw bytes")
	} else {
		r.res.Verified = true
		r.markDone()
	}
	return nil
}

// dropStale acks and drops a leftover copy of a transfer a consumer has
// already restored: the producer is at-least-once (a --resume from a
// trailing watermark, a republish after a lost connection), and the copies
// left behind would otherwise capture the next consumer that takes "the
// first to arrive". It is acked with the next batch; nothing is written.
func (r *receiver) dropStale(d amqp.Delivery, m meta) error {
	r.res.Stale++
	if k := (doneKey{m.Transfer, m.Run}); !r.staleSeen[k] {
		r.staleSeen[k] = true
		r.log.Info(fmt.Sprintf("transfer %s (run %s) was already restored; dropping its leftover copies", m.Transfer, orNone(m.Run)),
			"transfer", m.Transfer, "run", m.Run, "registry", r.cfg.Topology.DoneQueue())
	}
	r.acks.done(d.DeliveryTag)
	// Clearing leftovers is progress: --timeout must not run out while
	// the consumer works through a backlog of them.
	r.lastPlaced = time.Now()
	return nil
}

func orNone(run string) string {
	if run == "" {
		return "none"
	}
	return run
}

// readDone reads the registry of completed transfers (QUEUE.done) on a
// channel of its own: basic.get without ack until it is empty (at most
// rabbit.DoneMax markers), then the channel is closed and the broker
// requeues every marker; nothing is consumed. A registry that cannot be
// read is a warning: the consumer then works as before it existed.
func (r *receiver) readDone(conn *amqp.Connection) error {
	q := r.cfg.Topology.DoneQueue()
	done, _, gerr := r.readRegistry(conn)
	if gerr != nil {
		if conn.IsClosed() {
			return lost(fmt.Errorf("read %s: %w", q, gerr))
		}
		r.log.Warn("cannot read the registry of completed transfers; leftover copies of restored transfers will not be recognised", "queue", q, "err", gerr)
		return nil
	}
	r.cls.done = done
	r.log.Debug("registry of completed transfers read", "queue", q, "transfers", len(done))
	return nil
}

// markDone records the transfer just restored in the registry
// (QUEUE.done): one persistent, confirmed marker, so that later consumers
// drop the leftover copies of its segments. Failing that is a warning:
// the file is restored whatever happens here.
func (r *receiver) markDone() {
	b := r.part.bound()
	q := r.cfg.Topology.DoneQueue()
	warn := func(err error) {
		r.log.Warn("restored, but could not record it in the registry of completed transfers; a leftover copy of its segments may be taken by the next consumer", "queue", q, "transfer", b.Transfer, "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := r.ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{
		Headers:      amqp.Table{HdrTransfer: b.Transfer, HdrRun: b.Run, HdrSize: r.res.Bytes, HdrSHA256: r.res.SHA256},
		Body:         []byte(b.Transfer + "/" + b.Run),
		ContentType:  "text/plain",
		DeliveryMode: amqp.Persistent,
		Timestamp:    time.Now(),
		AppId:        "segmq",
	})
	if err != nil {
		warn(err)
		return
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		if err == nil {
			err = errors.New("the broker nacked the marker")
		}
		warn(err)
		return
	}
	r.log.Debug("recorded in the registry of completed transfers", "queue", q, "transfer", b.Transfer, "run", b.Run)
}

// unpackBufs recycles decoded payloads: the hasher gives them back.
var unpackBufs sync.Pool

// zstdLimit is what one frame may decode to: the MSS, but at least 1 MiB
// (zstd's smallest window is 1 KiB, and other encoders pick windows up to
// 1 MiB for small inputs); the shape check then holds it to the MSS.
func zstdLimit(mss int) int { return max(mss, 1<<20) }

// unpackLimit is what one payload in encoding enc may decode to. An S2
// block states its decoded length up front, so it is held to the MSS
// before anything is allocated.
func unpackLimit(enc string, mss int) int {
	if enc == EncodingS2 {
		return mss
	}
	return zstdLimit(mss)
}

// unpack decodes one payload (a zstd frame or an S2 block) into a pooled
// buffer. Neither decoder may produce more than unpackLimit: zstd refuses
// frames that declare, or grow to, more than zstdLimit, and an S2 block
// whose stated length is over the MSS is refused unread, so a small
// hostile payload cannot claim memory.
func (r *receiver) unpack(enc string, src []byte, mss int) (*[]byte, error) {
	if enc == EncodingS2 {
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, err
		}
		if n > mss {
			return nil, fmt.Errorf("the block states %d bytes", n)
		}
		buf := getUnpackBuf(mss)
		out, err := s2.Decode((*buf)[:n], src)
		if err != nil {
			unpackBufs.Put(buf)
			return nil, err
		}
		*buf = out
		return buf, nil
	}
	if r.zstd == nil || r.zstdLimit != zstdLimit(mss) {
		if r.zstd != nil {
			r.zstd.Close()
		}
		var err error
		r.zstdLimit = zstdLimit(mss)
		r.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(uint64(r.zstdLimit)))
		if err != nil {
			r.zstd = nil
			return nil, err
		}
	}
	buf := getUnpackBuf(mss)
	out, err := r.zstd.DecodeAll(src, (*buf)[:0])
	if err != nil {
		unpackBufs.Put(buf)
		return nil, err
	}
	if len(out) > zstdLimit(mss) {
		return nil, fmt.Errorf("decoded to %d bytes", len(out))
	}
	*buf = out
	return buf, nil
}

// getUnpackBuf returns a pooled buffer with room for mss bytes.
func getUnpackBuf(mss int) *[]byte {
	buf, _ := unpackBufs.Get().(*[]byte)
	if buf == nil || cap(*buf) < mss {
		b := make([]byte, 0, mss)
		buf = &b
	}
	return buf
}
