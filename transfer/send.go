package transfer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	return c.Topology.Validate()
}

// SendResult describes a finished send.
type SendResult struct {
	Transfer    string
	Segments    uint32
	Bytes       int64
	SHA256      string
	Republished int
	Elapsed     time.Duration
}

// NewTransferID returns a random 128-bit id in hex.
func NewTransferID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Send publishes the file at path as one transfer and returns once every
// segment is confirmed by the broker.
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
	if cfg.Transfer == "" {
		cfg.Transfer = NewTransferID()
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
	if !cfg.Raw {
		if _, _, err := snapfile.Check(io.NewSectionReader(f, 0, size)); err != nil {
			return SendResult{}, fmt.Errorf("%s is not a complete snapshot (%w); pass --raw to send any file", path, err)
		}
	}
	split, err := segment.NewSplitter(f, size, cfg.MSS)
	if err != nil {
		return SendResult{}, err
	}

	conn, err := rabbit.Dial(ctx, cfg.Dial)
	if err != nil {
		return SendResult{}, err
	}
	defer conn.Close()
	if err := rabbit.Declare(conn, cfg.Topology); err != nil {
		return SendResult{}, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return SendResult{}, err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return SendResult{}, fmt.Errorf("enable publisher confirms: %w", err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))

	p := &publisher{
		ch: ch, cfg: cfg, split: split, log: log, size: size,
		buf: make([]byte, segment.HeaderSize+cfg.MSS), rebuf: make([]byte, segment.HeaderSize+cfg.MSS), returns: returns, closed: closed, blocked: blocked,
	}
	start := time.Now()
	sha := sha256.New()
	var sum string
	for seq := uint32(0); seq < split.Total(); seq++ {
		if err := p.drain(ctx, cfg.Window-1); err != nil {
			return SendResult{}, err
		}
		body, err := split.Segment(seq, p.buf)
		if err != nil {
			return SendResult{}, err
		}
		sha.Write(body[segment.HeaderSize:])
		if seq == split.Total()-1 {
			sum = hex.EncodeToString(sha.Sum(nil))
		}
		if err := p.publish(ctx, seq, body, sum); err != nil {
			return SendResult{}, err
		}
		if cfg.Progress != nil {
			cfg.Progress(int64(seq)*int64(cfg.MSS) + int64(len(body)-segment.HeaderSize))
		}
	}
	if err := p.drain(ctx, 0); err != nil {
		return SendResult{}, err
	}
	if err := ch.Close(); err != nil {
		return SendResult{}, fmt.Errorf("close channel: %w", err)
	}
	if err := conn.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return SendResult{}, fmt.Errorf("close connection: %w", err)
	}
	return SendResult{Transfer: cfg.Transfer, Segments: split.Total(), Bytes: size, SHA256: sum,
		Republished: p.republished, Elapsed: time.Since(start)}, nil
}

type pending struct {
	seq uint32
	dc  *amqp.DeferredConfirmation
}

type publisher struct {
	ch          *amqp.Channel
	cfg         SendConfig
	split       *segment.Splitter
	log         *slog.Logger
	size        int64
	buf         []byte    // the body being published
	rebuf       []byte    // a body being republished
	inflight    []pending // FIFO, at most cfg.Window
	sha         string    // the file's SHA-256, once known
	republished int
	returns     <-chan amqp.Return
	closed      <-chan *amqp.Error
	blocked     <-chan amqp.Blocking
}

func (p *publisher) headers(payload []byte) amqp.Table {
	h := amqp.Table{
		HdrTransfer: p.cfg.Transfer,
		HdrMSS:      int64(p.cfg.MSS),
		HdrSize:     p.size,
		HdrCRC:      int64(crc32.Checksum(payload, castagnoli)),
	}
	if p.sha != "" {
		h[HdrSHA256] = p.sha
	}
	return h
}

// publish sends one body. The caller may reuse body afterwards:
// amqp091-go has written the frames when PublishWithDeferredConfirm
// returns. The caller bounds the window with drain.
func (p *publisher) publish(ctx context.Context, seq uint32, body []byte, sha string) error {
	if sha != "" {
		p.sha = sha
	}
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", p.cfg.Topology.Name(), true, false, amqp.Publishing{
		Headers:      p.headers(body[segment.HeaderSize:]),
		ContentType:  "application/octet-stream",
		DeliveryMode: amqp.Persistent,
		MessageId:    p.cfg.Transfer + "/" + strconv.FormatUint(uint64(seq), 10),
		AppId:        "segmq",
		Body:         body,
	})
	if err != nil {
		return p.explain(fmt.Errorf("publish segment %d: %w", seq, err))
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
			p.republished++
			p.log.Warn("broker nacked a segment; republishing", "seq", head.seq)
			body, err := p.split.Segment(head.seq, p.rebuf)
			if err != nil {
				return err
			}
			if err := p.publish(ctx, head.seq, body, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *publisher) wait(ctx context.Context, dc *amqp.DeferredConfirmation) (bool, error) {
	for {
		select {
		case <-dc.Done():
			ack := dc.Acked()
			select { // a return arrives before the ack of the same message
			case r := <-p.returns:
				return false, returned(r)
			default:
			}
			return ack, nil
		case r := <-p.returns:
			return false, returned(r)
		case b := <-p.blocked:
			if b.Active {
				p.log.Warn("broker blocked publishing (memory or disk alarm); waiting", "reason", b.Reason)
			} else {
				p.log.Info("broker unblocked publishing")
			}
		case e := <-p.closed:
			return false, p.explain(fmt.Errorf("channel closed by the broker: %v", e))
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
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
