package transfer

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/fsutil"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
)

// Defaults for ReceiveConfig.
const (
	DefaultPrefetch      = 256
	DefaultFsyncEvery    = 256
	DefaultFsyncInterval = 250 * time.Millisecond
)

// ReceiveConfig configures Receive. Zero values are documented per field.
type ReceiveConfig struct {
	Dial     rabbit.DialConfig
	Topology rabbit.Topology
	Out      string // final path; work happens in Out+".part"; required
	// Window is the reorder window in segments; 0 means the whole
	// transfer. 1 is strict in-order (the seed's behaviour).
	Window   uint32
	Prefetch int // unacked deliveries; 0 means DefaultPrefetch
	// Timeout ends the run when no segment has been placed for this long;
	// 0 means wait for ever. The .part and its state are kept.
	Timeout time.Duration
	// Transfer selects a transfer id; "" takes the first one that arrives
	// (or resumes the one in the .part state).
	Transfer string
	// Restart discards an existing .part and state instead of resuming.
	Restart       bool
	FsyncEvery    int           // segments between fsync+ack; 0 means DefaultFsyncEvery
	FsyncInterval time.Duration // longest wait before fsync+ack; 0 means DefaultFsyncInterval
	Log           *slog.Logger
	Progress      func(bytes int64, total int64)
}

// Validate says what is wrong with c.
func (c ReceiveConfig) Validate() error {
	switch {
	case c.Out == "":
		return errors.New("--out is required")
	case c.Prefetch < 0:
		return fmt.Errorf("--prefetch must be >= 1, got %d", c.Prefetch)
	case c.Timeout < 0:
		return fmt.Errorf("--timeout must be >= 0, got %s", c.Timeout)
	}
	return c.Topology.Validate()
}

// ReceiveResult describes a finished transfer.
type ReceiveResult struct {
	Transfer     string // "" for a seed-format transfer
	Segments     uint32
	Bytes        int64
	SHA256       string
	Verified     bool // the producer sent a SHA-256 and it matched
	Resumed      uint32
	Reconnects   int
	Duplicates   int
	Requeued     int
	DeadLettered int
	Elapsed      time.Duration
}

// ErrIncomplete wraps the reason a transfer ended before it was whole.
var ErrIncomplete = errors.New("transfer incomplete")

// ErrDigest: the assembled file does not match the producer's SHA-256 or size.
var ErrDigest = errors.New("assembled file does not match the producer's digest")

// receiver is the state of one Receive.
type receiver struct {
	cfg       ReceiveConfig
	log       *slog.Logger
	ch        *amqp.Channel
	tag       string // consumer tag of the current session
	part      *os.File
	partPath  string
	statePath string

	locked bool
	st     partState
	asm    *segment.Assembler
	hash   *hasher // the SHA-256 of the assembled prefix
	zstd   *zstd.Decoder

	unacked    []uint64 // placed or duplicate, awaiting fsync+ack
	lastFlush  time.Time
	parked     []parkedSeg
	parkCap    int // < prefetch, or parked deliveries would fill every slot and nothing could arrive
	unproduct  int // deliveries since the last placement that made no progress
	backoff    time.Duration
	lastPlaced time.Time
	connected  bool // a session has reached the broker; only then reconnect
	res        ReceiveResult
}

type parkedSeg struct {
	d       amqp.Delivery
	h       segment.Header
	payload []byte
	buf     *[]byte // payload's pooled buffer (a decoded payload), or nil
}

// Receive consumes one transfer from the queue into cfg.Out.
func Receive(ctx context.Context, cfg ReceiveConfig) (ReceiveResult, error) {
	if err := cfg.Validate(); err != nil {
		return ReceiveResult{}, err
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = DefaultPrefetch
	}
	if cfg.FsyncEvery == 0 {
		cfg.FsyncEvery = DefaultFsyncEvery
	}
	if cfg.FsyncInterval == 0 {
		cfg.FsyncInterval = DefaultFsyncInterval
	}
	r := &receiver{cfg: cfg, log: cfg.Log, partPath: cfg.Out + ".part", statePath: cfg.Out + ".part.state",
		parkCap: cfg.Prefetch - 1, backoff: 10 * time.Millisecond}
	if r.log == nil {
		r.log = discard()
	}
	if err := r.openPart(); err != nil {
		return ReceiveResult{}, err
	}
	defer r.part.Close()
	r.hash = newHasher(r.part)
	defer r.hash.stop()
	defer func() {
		if r.zstd != nil {
			r.zstd.Close()
		}
	}()

	start := time.Now()
	r.lastPlaced, r.lastFlush = start, start
	var err error
	for attempt := 0; ; attempt++ {
		err = r.session(ctx)
		if err == nil || !retriable(err) || ctx.Err() != nil || !r.connected {
			break // a broker never reached is a configuration error: fail fast
		}
		r.res.Reconnects++
		// The channel is gone, and with it every unacked delivery: the
		// broker will deliver them again. Keep what is on disk.
		r.parked = nil
		if perr := r.persist(); perr != nil {
			err = perr
			break
		}
		r.unacked = r.unacked[:0]
		if r.cfg.Timeout > 0 && time.Since(r.lastPlaced) > r.cfg.Timeout {
			err = r.incomplete(fmt.Errorf("gave up reconnecting after %s: %w", r.cfg.Timeout, err))
			break
		}
		r.log.Warn("connection to the broker lost; reconnecting", "err", err, "attempt", attempt+1)
		if berr := backoff(ctx, attempt); berr != nil {
			err = r.incomplete(berr)
			break
		}
	}
	r.res.Elapsed = time.Since(start)
	if err != nil {
		// Ack what is safely on disk, so a restart does not redo it.
		if ferr := r.flush(); ferr != nil {
			r.log.Debug("could not ack progress on the way out", "err", ferr)
		}
		if retriable(err) && r.connected {
			err = r.incomplete(err)
		}
		return r.res, err
	}
	return r.res, nil
}

// session consumes on one connection until the transfer is complete, a
// final error, or the connection fails (a retriable error).
func (r *receiver) session(ctx context.Context) error {
	conn, ch, err := openSession(ctx, r.cfg.Dial, r.cfg.Topology, &r.connected)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer ch.Close()
	r.ch = ch
	if err := ch.Qos(r.cfg.Prefetch, 0, false); err != nil {
		return lost(fmt.Errorf("set prefetch: %w", err))
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	r.tag = fmt.Sprintf("segmq-consumer-%d-%d", os.Getpid(), time.Now().UnixNano())
	deliveries, err := ch.ConsumeWithContext(ctx, r.cfg.Topology.Name(), r.tag, false, false, false, false, nil)
	if err != nil {
		return lost(fmt.Errorf("consume %s: %w", r.cfg.Topology.Name(), err))
	}
	if err := r.loop(ctx, deliveries, closed); err != nil {
		return err
	}
	if err := ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		r.log.Warn("close channel", "err", err)
	}
	return nil
}

// openPart opens <out>.part, resuming from its state when there is one.
func (r *receiver) openPart() error {
	if r.cfg.Restart {
		for _, p := range []string{r.partPath, r.statePath} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	st, asmState, err := loadState(r.statePath)
	switch {
	case errors.Is(err, errNoState):
		// No state: nothing was ever acked into a .part here, so any
		// .part is leftover bytes that nobody depends on.
		r.part, err = os.OpenFile(r.partPath, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
		return err
	case err != nil:
		return err
	}
	if r.cfg.Transfer != "" && st.Transfer != r.cfg.Transfer {
		return fmt.Errorf("%s holds part of transfer %q, not %q; pass --restart to discard it", r.partPath, st.Transfer, r.cfg.Transfer)
	}
	if r.part, err = os.OpenFile(r.partPath, os.O_RDWR, 0o644); err != nil {
		return fmt.Errorf("state file %s exists but its .part does not (%w); pass --restart to start over", r.statePath, err)
	}
	if err := r.lock(st); err != nil {
		return err
	}
	if err := r.asm.UnmarshalBinary(asmState); err != nil {
		return fmt.Errorf("%s: %w; pass --restart to start over", r.statePath, err)
	}
	r.res.Resumed = r.asm.Received()
	r.log.Info("resuming transfer", "transfer", st.Transfer, "segments", r.asm.Received(), "of", r.asm.Total(), "part", r.partPath)
	return nil
}

// lock binds the receiver to one transfer.
func (r *receiver) lock(st partState) error {
	cfg := segment.Config{Window: r.cfg.Window}
	if st.Transfer != "" {
		cfg.MSS, cfg.Size, cfg.SizeKnown = st.MSS, st.Size, st.HasSize
	}
	a, err := segment.NewAssembler(r.part, cfg)
	if err != nil {
		return err
	}
	r.asm, r.st, r.locked = a, st, true
	r.res.Transfer = st.Transfer
	return nil
}

func (r *receiver) loop(ctx context.Context, deliveries <-chan amqp.Delivery, closed <-chan *amqp.Error) error {
	tick := time.NewTicker(r.cfg.FsyncInterval)
	defer tick.Stop()
	for {
		if r.locked && r.asm.Complete() {
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
		case e := <-closed:
			return closeError(e)
		case <-tick.C:
			if time.Since(r.lastFlush) >= r.cfg.FsyncInterval {
				if err := r.flush(); err != nil {
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
// dead-lettered, other transfers' segments requeued. It cancels the
// consumer first; the broker sends every delivery before the cancel-ok,
// and amqp091-go closes the deliveries channel after the last of them,
// so nothing is left in flight and nothing is waited for by a timer.
// What is still in the queue stays there.
func (r *receiver) settle(ctx context.Context, deliveries <-chan amqp.Delivery) error {
	if err := r.ch.Cancel(r.tag, false); err != nil {
		r.log.Debug("cancel consumer", "err", err)
		return nil // the channel is gone, and with it what it held
	}
	for d := range deliveries {
		if err := r.handle(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

func (r *receiver) incomplete(why error) error {
	have := "no segment received"
	if r.locked {
		have = fmt.Sprintf("%d of %d segments of transfer %q received", r.asm.Received(), r.asm.Total(), r.st.Transfer)
		if miss := r.asm.Missing(nil, 5); len(miss) > 0 {
			have += fmt.Sprintf(", first missing %v", miss)
		}
	}
	return fmt.Errorf("%w: %w; %s; %s kept, run again to resume", ErrIncomplete, why, have, r.partPath)
}

// dead rejects a delivery without requeue: the broker routes it to the
// dead-letter queue.
func (r *receiver) dead(d amqp.Delivery, reason string, args ...any) error {
	r.res.DeadLettered++
	r.log.Warn("segment dead-lettered", append([]any{"reason", reason, "queue", r.cfg.Topology.DeadQueue(), "message_id", d.MessageId, "bytes", len(d.Body)}, args...)...)
	if err := d.Nack(false, false); err != nil {
		return fmt.Errorf("nack: %w", err)
	}
	return nil
}

// requeue gives a delivery back, one message, never multiple. Requeues
// that are not interleaved with progress are paced: the broker returns a
// requeued message at once, and we must not spin.
func (r *receiver) requeue(ctx context.Context, d amqp.Delivery) error {
	r.res.Requeued++
	r.unproduct++
	if r.unproduct > r.cfg.Prefetch {
		if r.backoff == 10*time.Millisecond {
			r.log.Warn("segments requeued without progress; backing off. If they belong to this transfer, the reorder window or prefetch is too small for the arrival order (raise --window or --prefetch)",
				"window", r.cfg.Window, "prefetch", r.cfg.Prefetch, "next", r.asm.Next())
		}
		select {
		case <-time.After(r.backoff):
		case <-ctx.Done():
		}
		r.backoff = min(2*r.backoff, time.Second)
	}
	if err := d.Nack(false, true); err != nil {
		return fmt.Errorf("nack: %w", err)
	}
	return nil
}

func (r *receiver) handle(ctx context.Context, d amqp.Delivery) error {
	m, err := parseMeta(d.Headers)
	if err != nil {
		return r.dead(d, err.Error())
	}
	h, payload, err := segment.Decode(d.Body)
	if err != nil {
		return r.dead(d, err.Error(), "transfer", m.Transfer)
	}
	if !r.locked {
		if r.cfg.Transfer != "" && m.Transfer != r.cfg.Transfer {
			return r.requeue(ctx, d)
		}
		if err := r.lock(partState{Transfer: m.Transfer, MSS: m.MSS, Size: m.Size, HasSize: m.HasSize}); err != nil {
			return r.dead(d, err.Error(), "transfer", m.Transfer)
		}
		r.log.Info("receiving transfer", "transfer", m.Transfer, "raw", m.raw(), "mss", m.MSS, "size", m.Size, "segments", h.Total)
	}
	if m.Transfer != r.st.Transfer {
		return r.requeue(ctx, d) // another transfer's segment: not ours to take, not ours to lose
	}
	if !m.raw() {
		if m.MSS != r.st.MSS || m.HasSize != r.st.HasSize || m.Size != r.st.Size {
			return r.dead(d, fmt.Sprintf("headers disagree with the transfer: mss %d size %d, transfer has mss %d size %d", m.MSS, m.Size, r.st.MSS, r.st.Size), "seq", h.Seq)
		}
		if m.HasCRC {
			if got := crc32.Checksum(payload, castagnoli); got != m.CRC {
				return r.dead(d, fmt.Sprintf("payload CRC-32C %08x, header says %08x", got, m.CRC), "seq", h.Seq)
			}
		}
		if m.SHA256 != "" {
			if r.st.SHA256 != "" && r.st.SHA256 != m.SHA256 {
				return r.dead(d, "segment carries a different file SHA-256 than an earlier one", "seq", h.Seq)
			}
			r.st.SHA256 = m.SHA256
		}
		if m.Encoding == EncodingZstd {
			buf, err := r.unpack(payload)
			if err != nil {
				return r.dead(d, fmt.Sprintf("zstd payload does not decode within %d bytes: %v", max(r.st.MSS, 1<<20), err), "seq", h.Seq)
			}
			return r.place(ctx, parkedSeg{d: d, h: h, payload: *buf, buf: buf})
		}
	}
	return r.place(ctx, parkedSeg{d: d, h: h, payload: payload})
}

// unpackBufs recycles decoded payloads: the hasher gives them back.
var unpackBufs sync.Pool

// unpack decodes one zstd frame into a pooled buffer. The decoder refuses
// frames that declare, or grow to, more than the MSS or 1 MiB, whichever
// is larger (zstd's smallest window is 1 KiB, and other encoders pick
// windows up to 1 MiB for small inputs), so a small hostile frame cannot
// claim memory; the assembler then holds the payload to the MSS.
func (r *receiver) unpack(src []byte) (*[]byte, error) {
	if r.zstd == nil {
		var err error
		r.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(uint64(max(r.st.MSS, 1<<20))))
		if err != nil {
			return nil, err
		}
	}
	buf, _ := unpackBufs.Get().(*[]byte)
	if buf == nil || cap(*buf) < r.st.MSS {
		b := make([]byte, 0, r.st.MSS)
		buf = &b
	}
	out, err := r.zstd.DecodeAll(src, (*buf)[:0])
	if err != nil {
		return nil, err
	}
	*buf = out
	return buf, nil
}

// place offers a segment to the assembler. The same parkedSeg comes back
// here from the parking lot.
func (r *receiver) place(ctx context.Context, p parkedSeg) error {
	d, h, payload := p.d, p.h, p.payload
	o, err := r.asm.Add(h, payload)
	var se *segment.SegmentError
	switch {
	case errors.As(err, &se):
		return r.dead(d, se.Error(), "transfer", r.st.Transfer)
	case err != nil:
		// Could not write (disk full, I/O error): give it back and stop;
		// what is on disk is flushed and acked by the caller.
		if nerr := d.Nack(false, true); nerr != nil {
			r.log.Warn("nack after write error", "err", nerr)
		}
		return r.incomplete(fmt.Errorf("write %s: %w", r.partPath, err))
	}
	switch o {
	case segment.Placed:
		r.advanceHash(h.Seq, payload, p.buf)
		r.unacked = append(r.unacked, d.DeliveryTag)
		r.unproduct, r.backoff, r.lastPlaced = 0, 10*time.Millisecond, time.Now()
		if r.cfg.Progress != nil {
			r.cfg.Progress(int64(r.asm.Received())*int64(max(r.asm.MSS(), 1)), r.st.Size)
		}
		if err := r.retryParked(ctx); err != nil {
			return err
		}
		if len(r.unacked) >= r.cfg.FsyncEvery {
			return r.flush()
		}
	case segment.Duplicate:
		r.res.Duplicates++
		r.unacked = append(r.unacked, d.DeliveryTag)
	case segment.NotYet:
		return r.park(ctx, p)
	}
	return nil
}

// park holds a segment that cannot be placed yet; when the lot is full,
// the oldest goes back to the queue.
func (r *receiver) park(ctx context.Context, p parkedSeg) error {
	r.parked = append(r.parked, p)
	if len(r.parked) <= r.parkCap {
		return nil
	}
	old := r.parked[0]
	r.parked = r.parked[1:]
	return r.requeue(ctx, old.d)
}

func (r *receiver) retryParked(ctx context.Context) error {
	for progress := true; progress && len(r.parked) > 0; {
		progress = false
		lot := r.parked
		r.parked = nil
		for i, p := range lot {
			before := r.asm.Received()
			if err := r.place(ctx, p); err != nil {
				r.parked = append(r.parked, lot[i+1:]...)
				return err
			}
			progress = progress || r.asm.Received() > before
		}
	}
	return nil
}

// advanceHash hands the hasher the part of the file that has become
// contiguous since the last call: payload (segment seq, just placed) from
// memory, the rest as ranges to read back from the .part.
func (r *receiver) advanceHash(seq uint32, payload []byte, buf *[]byte) {
	h, next := r.hash, r.asm.Next()
	if h.next >= next {
		return
	}
	mss := int64(r.asm.MSS())
	from := int64(-1) // start of a range still to read back
	readBack := func(to int64) {
		if from >= 0 && to > from {
			h.add(hashJob{off: from, n: to - from})
		}
		from = -1
	}
	for s := h.next; s < next; s++ {
		off := int64(s) * mss
		if s == seq && payload != nil {
			readBack(off)
			h.add(hashJob{off: off, payload: payload, buf: buf})
		} else if from < 0 {
			from = off
		}
	}
	end := int64(next) * mss
	if next == r.asm.Total() { // the last segment is placed, so the size is known
		end, _ = r.asm.Size()
	}
	readBack(end)
	h.next = next
}

// persist makes every placed segment durable and records the received set.
func (r *receiver) persist() error {
	if !r.locked {
		return nil
	}
	if err := r.part.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", r.partPath, err)
	}
	state, err := r.asm.MarshalBinary()
	if err == nil {
		err = saveState(r.statePath, r.st, state)
	}
	if err != nil {
		return fmt.Errorf("save %s: %w", r.statePath, err)
	}
	return nil
}

// flush persists, and only then acks.
func (r *receiver) flush() error {
	r.lastFlush = time.Now()
	if len(r.unacked) == 0 || !r.locked {
		return nil
	}
	if err := r.persist(); err != nil {
		return err
	}
	var err error
	// A multiple ack would also ack parked deliveries with lower tags, so
	// it is used only when nothing is parked.
	if len(r.parked) == 0 {
		maxTag := r.unacked[0]
		for _, t := range r.unacked {
			maxTag = max(maxTag, t)
		}
		err = r.ch.Ack(maxTag, true)
	} else {
		for _, t := range r.unacked {
			if err = r.ch.Ack(t, false); err != nil {
				break
			}
		}
	}
	if err != nil {
		return lost(fmt.Errorf("ack: %w", err))
	}
	r.unacked = r.unacked[:0]
	return nil
}

// finish checks the assembled file and puts it at its final path.
func (r *receiver) finish() error {
	if err := r.flush(); err != nil {
		return err
	}
	size, _ := r.asm.Size()
	if err := r.part.Truncate(size); err != nil { // a resumed .part may be longer
		return err
	}
	r.advanceHash(0, nil, nil) // a resumed transfer may be complete without a placement
	sum, n, err := r.hash.sum()
	if err != nil {
		return err
	}
	r.res.Segments, r.res.Bytes, r.res.SHA256 = r.asm.Total(), n, sum
	if r.st.HasSize && n != r.st.Size {
		return fmt.Errorf("%w: size %d, producer said %d; %s kept for inspection, %s untouched", ErrDigest, n, r.st.Size, r.partPath, r.cfg.Out)
	}
	if r.st.SHA256 != "" {
		if sum != r.st.SHA256 {
			return fmt.Errorf("%w: sha256 %s, producer said %s; %s kept for inspection, %s untouched", ErrDigest, sum, r.st.SHA256, r.partPath, r.cfg.Out)
		}
		r.res.Verified = true
	} else if !r.st.HasSize {
		r.log.Info("seed-format transfer: no size or digest to check against; assembled as raw bytes")
	} else {
		r.log.Warn("the producer sent no SHA-256; only the size was checked")
	}
	if err := r.part.Sync(); err != nil {
		return err
	}
	if err := r.part.Close(); err != nil {
		return err
	}
	if err := fsutil.Commit(r.partPath, r.cfg.Out); err != nil {
		return err
	}
	if err := os.Remove(r.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Warn("remove state", "err", err)
	}
	return nil
}
