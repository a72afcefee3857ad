package transfer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
	"github.com/segmq/segmq/snapfile"
)

// Limits on the MSS. RabbitMQ 4.x refuses bodies over 16 MiB by default
// (3.x: 128 MiB), so MaxMSS keeps a whole segment under that.
const (
	DefaultMSS    = 64 << 10
	MaxMSS        = 16<<20 - segment.HeaderSize - 64<<10 // room for header and properties
	DefaultWindow = 256
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SendConfig configures Send. Zero values are documented per field.
type SendConfig struct {
	Dial     rabbit.DialConfig
	Topology rabbit.Topology
	MSS      int    // 0 means DefaultMSS
	Window   int    // publishes awaiting confirmation; 0 means DefaultWindow
	Transfer string // "" means a new random id
	Raw      bool   // send any file; skip the snapshot check
	// Compress is "" (or "none") to send payloads as they are, or
	// EncodingZstd to pack each one into a zstd frame when that is smaller.
	Compress string
	// State is where progress is recorded for Resume; "" means
	// IN.segmq-send beside the input. "-" disables it.
	State string
	// Resume continues the interrupted transfer recorded in State.
	Resume bool
	// Timeout ends the run when no segment has been confirmed for this
	// long, e.g. while the broker stays down; 0 means retry for ever.
	Timeout  time.Duration
	Log      *slog.Logger
	Progress func(bytes int64)
}

// Validate says what is wrong with c.
func (c SendConfig) Validate() error {
	if c.MSS < 0 || c.MSS > MaxMSS {
		return fmt.Errorf("--mss must be between 1 and %d (RabbitMQ refuses larger bodies by default), got %d", MaxMSS, c.MSS)
	}
	if c.Window < 0 {
		return fmt.Errorf("confirm window must be >= 1, got %d", c.Window)
	}
	if c.Compress != "" && c.Compress != "none" && c.Compress != EncodingZstd {
		return fmt.Errorf("--compress must be none or zstd, got %q", c.Compress)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("--timeout must be >= 0, got %s", c.Timeout)
	}
	return c.Topology.Validate()
}

// SendResult describes a finished send.
type SendResult struct {
	Transfer    string
	Segments    uint32
	Bytes       int64
	WireBytes   int64 // payload bytes published this run, after compression (republishes not counted)
	SHA256      string
	Republished int    // segments published again (nacks, reconnects)
	Resumed     uint32 // segments already confirmed by an earlier run
	Reconnects  int
	Elapsed     time.Duration
}

// NewTransferID returns a random 128-bit id in hex.
func NewTransferID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ErrUnfinished: the input has an interrupted transfer and Resume was not asked for.
var ErrUnfinished = errors.New("an interrupted transfer of this file exists")

// Send publishes the file at path as one transfer and returns once every
// segment is confirmed by the broker. It reconnects after a connection
// loss and republishes whatever was not confirmed.
func Send(ctx context.Context, path string, cfg SendConfig) (SendResult, error) {
	if err := cfg.Validate(); err != nil {
		return SendResult{}, err
	}
	if cfg.MSS == 0 {
		cfg.MSS = DefaultMSS
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.State == "" {
		cfg.State = path + ".segmq-send"
	}
	log := cfg.Log
	if log == nil {
		log = discard()
	}
	f, err := os.Open(path)
	if err != nil {
		return SendResult{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return SendResult{}, err
	}
	if !fi.Mode().IsRegular() {
		return SendResult{}, fmt.Errorf("%s is not a regular file", path)
	}
	size := fi.Size()
	p := &publisher{cfg: cfg, log: log, file: f, sha: sha256.New(),
		rebuf:     make([]byte, segment.HeaderSize+cfg.MSS),
		sendState: sendState{Transfer: cfg.Transfer, MSS: cfg.MSS, Size: size, ModTime: fi.ModTime().UnixNano()}}
	if err := p.loadResume(); err != nil {
		return SendResult{}, err
	}
	if p.sendState.Transfer == "" {
		p.sendState.Transfer = NewTransferID()
	}
	p.cfg.Transfer = p.sendState.Transfer
	if !cfg.Raw {
		if _, _, err := snapfile.Check(io.NewSectionReader(f, 0, size)); err != nil {
			return SendResult{}, fmt.Errorf("%s is not a complete snapshot (%w); pass --raw to send any file", path, err)
		}
	}
	if p.split, err = segment.NewSplitter(f, size, cfg.MSS); err != nil {
		return SendResult{}, err
	}
	if err := p.hashPrefix(); err != nil {
		return SendResult{}, err
	}
	if cfg.State != "-" {
		// Record the transfer before the first publish, so that a crash at
		// any point leaves something to resume.
		if err := p.saveState(); err != nil {
			p.stateBroken = true
			log.Warn("cannot record progress; this transfer will not be resumable", "state", cfg.State, "err", err)
		}
	}
	if p.ra, err = startReadAhead(p.split, p.next, p.sha, cfg.Compress == EncodingZstd); err != nil {
		return SendResult{}, err
	}
	defer p.ra.close()
	start := time.Now()
	p.lastConfirm = start
	for attempt := 0; ; attempt++ {
		err := p.session(ctx)
		if err == nil {
			break
		}
		if !retriable(err) || ctx.Err() != nil || !p.connected {
			return SendResult{}, err // a broker never reached is a configuration error: fail fast
		}
		p.res.Reconnects++
		if cfg.Timeout > 0 && time.Since(p.lastConfirm) > cfg.Timeout {
			return SendResult{}, fmt.Errorf("gave up after %s without a confirm: %w; %d of %d segments confirmed; run again with --resume to continue",
				cfg.Timeout, err, p.sendState.Confirmed, p.split.Total())
		}
		log.Warn("connection to the broker lost; reconnecting", "err", err, "attempt", attempt+1, "unconfirmed", len(p.inflight))
		// Nothing in flight on the dead channel can be confirmed any more.
		for _, pd := range p.inflight {
			p.retry = append(p.retry, pd.seq)
		}
		p.inflight = p.inflight[:0]
		if err := backoff(ctx, attempt); err != nil {
			return SendResult{}, err
		}
	}
	p.removeState()
	p.res.Transfer, p.res.Segments, p.res.Bytes, p.res.SHA256 = p.cfg.Transfer, p.split.Total(), size, p.sum
	p.res.Elapsed = time.Since(start)
	return p.res, nil
}

// session publishes on one connection until done or the connection fails.
func (p *publisher) session(ctx context.Context) error {
	conn, ch, err := openSession(ctx, p.cfg.Dial, p.cfg.Topology, &p.connected)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return lost(fmt.Errorf("enable publisher confirms: %w", err))
	}
	p.ch = ch
	p.returns = ch.NotifyReturn(make(chan amqp.Return, 16))
	p.closed = ch.NotifyClose(make(chan *amqp.Error, 1))
	p.blocked = conn.NotifyBlocked(make(chan amqp.Blocking, 4))

	// First what an earlier session left unconfirmed, then the rest.
	for len(p.retry) > 0 {
		seq := p.retry[0]
		if err := p.drain(ctx, p.cfg.Window-1); err != nil {
			return err
		}
		if err := p.republish(ctx, seq); err != nil {
			return err
		}
		p.retry = p.retry[1:]
		p.res.Republished++
	}
	for p.next < p.split.Total() {
		if err := p.drain(ctx, p.cfg.Window-1); err != nil {
			return err
		}
		var b block
		var ok bool
		select {
		case b, ok = <-p.ra.blocks:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return errors.New("internal error: the read-ahead stopped before the last segment")
		}
		if b.err != nil {
			return b.err
		}
		if b.sum != "" {
			p.sum = b.sum
		}
		err := p.publish(ctx, b.seq, b.body, b.crc, b.packed)
		p.ra.release(b)
		p.next++
		if err != nil {
			// Taken from the read-ahead but not sent: the next session
			// sends it again, read afresh.
			p.retry = append(p.retry, b.seq)
			return err
		}
		p.res.WireBytes += int64(len(b.body) - segment.HeaderSize)
		if p.cfg.Progress != nil {
			p.cfg.Progress(int64(b.seq)*int64(p.cfg.MSS) + int64(b.plain))
		}
	}
	if err := p.drain(ctx, 0); err != nil {
		return err
	}
	if err := ch.Close(); err != nil {
		return lost(fmt.Errorf("close channel: %w", err))
	}
	if err := conn.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return lost(fmt.Errorf("close connection: %w", err))
	}
	return nil
}

type pending struct {
	seq uint32
	dc  *amqp.DeferredConfirmation
}

type publisher struct {
	cfg   SendConfig
	log   *slog.Logger
	file  *os.File
	split *segment.Splitter
	ra    *readAhead // first-time publishes come from here, in order
	rebuf []byte     // a body being republished

	ch       *amqp.Channel
	returns  <-chan amqp.Return
	closed   <-chan *amqp.Error
	blocked  <-chan amqp.Blocking
	inflight []pending // FIFO, at most cfg.Window
	retry    []uint32  // unconfirmed when a session died; published first

	next uint32    // next seq to publish for the first time
	sha  hash.Hash // over the payloads before next; the read-ahead owns it once started
	sum  string    // the file's SHA-256, once the last segment has been read

	sendState
	connected   bool // a session has reached the broker; only then reconnect
	lastConfirm time.Time
	lastSave    time.Time
	stateBroken bool
	res         SendResult
}

// SegmentHeaders returns the headers segmq's producer puts on a segment:
// transfer id, MSS, file size, the payload's CRC-32C and, when known
// (sha256 != ""), the file's SHA-256.
func SegmentHeaders(transfer string, mss int, size int64, payload []byte, sha256 string) amqp.Table {
	return segmentHeaders(transfer, mss, size, crc32.Checksum(payload, castagnoli), sha256, false)
}

func segmentHeaders(transfer string, mss int, size int64, crc uint32, sha256 string, zstd bool) amqp.Table {
	h := amqp.Table{
		HdrTransfer: transfer,
		HdrMSS:      int64(mss),
		HdrSize:     size,
		HdrCRC:      int64(crc),
	}
	if sha256 != "" {
		h[HdrSHA256] = sha256
	}
	if zstd {
		h[HdrEncoding] = EncodingZstd
	}
	return h
}

// republish reads segment seq again and publishes it.
func (p *publisher) republish(ctx context.Context, seq uint32) error {
	body, err := p.split.Segment(seq, p.rebuf)
	if err != nil {
		return err
	}
	return p.publish(ctx, seq, body, crc32.Checksum(body[segment.HeaderSize:], castagnoli), false)
}

// publish sends one body. The caller may reuse body afterwards:
// amqp091-go has written the frames when PublishWithDeferredConfirm
// returns. The caller bounds the window with drain.
func (p *publisher) publish(ctx context.Context, seq uint32, body []byte, crc uint32, packed bool) error {
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", p.cfg.Topology.Name(), true, false, amqp.Publishing{
		Headers:      segmentHeaders(p.cfg.Transfer, p.cfg.MSS, p.sendState.Size, crc, p.sum, packed),
		ContentType:  "application/octet-stream",
		DeliveryMode: amqp.Persistent,
		MessageId:    p.cfg.Transfer + "/" + strconv.FormatUint(uint64(seq), 10),
		AppId:        "segmq",
		Body:         body,
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A publish fails only when the channel or connection is gone; the
		// close notification says why.
		return p.channelGone(fmt.Errorf("publish segment %d: %w", seq, err))
	}
	p.inflight = append(p.inflight, pending{seq: seq, dc: dc})
	return nil
}

// drain waits for confirms until at most keep publishes are in flight.
// A nacked segment is read again and republished.
func (p *publisher) drain(ctx context.Context, keep int) error {
	for len(p.inflight) > keep {
		head := p.inflight[0]
		ok, err := p.wait(ctx, head.dc)
		if err != nil {
			return err
		}
		p.inflight = p.inflight[1:]
		if !ok {
			p.res.Republished++
			p.log.Warn("broker nacked a segment; republishing", "seq", head.seq)
			if err := p.republish(ctx, head.seq); err != nil {
				return err
			}
			continue
		}
		p.lastConfirm = time.Now()
		p.confirmed()
	}
	return nil
}

func (p *publisher) wait(ctx context.Context, dc *amqp.DeferredConfirmation) (bool, error) {
	for {
		select {
		case <-dc.Done():
			ack := dc.Acked()
			select { // a return arrives before the ack of the same message
			case r, ok := <-p.returns:
				if ok {
					return false, returned(r)
				}
			default:
			}
			if !ack && p.ch.IsClosed() {
				return false, p.channelGone(errors.New("channel closed before the confirm"))
			}
			return ack, nil
		case r, ok := <-p.returns:
			if !ok { // closed with the channel
				return false, p.channelGone(errors.New("channel closed"))
			}
			return false, returned(r)
		case b, ok := <-p.blocked:
			if !ok {
				p.blocked = nil // closed with the connection; the closed channel below reports it
				continue
			}
			if b.Active {
				p.log.Warn("broker blocked publishing (memory or disk alarm); waiting", "reason", b.Reason)
			} else {
				p.log.Info("broker unblocked publishing")
			}
		case e := <-p.closed:
			return false, p.explain(closeError(e))
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// channelGone explains an operation that failed because the channel is
// closed: it waits briefly for the close notification, which carries the
// broker's reason, and classifies it. With no reason the connection is lost.
func (p *publisher) channelGone(cause error) error {
	select {
	case e := <-p.closed:
		if e != nil {
			return p.explain(closeError(e))
		}
	case <-time.After(time.Second):
	}
	return lost(cause)
}

func returned(r amqp.Return) error {
	return fmt.Errorf("segment %s was returned unroutable (%d %s): does queue %q exist?", r.MessageId, r.ReplyCode, r.ReplyText, r.RoutingKey)
}

// explain adds advice to the broker's refusal of an oversized body.
func (p *publisher) explain(err error) error {
	if strings.Contains(err.Error(), "larger than configured max size") {
		return fmt.Errorf("%w: the broker's max_message_size is smaller than a segment; lower --mss (now %d)", err, p.cfg.MSS)
	}
	return err
}
