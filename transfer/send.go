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
	"slices"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/journal"
	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
	"github.com/segmq/segmq/snapfile"
)

// Defaults and limits for SendConfig. MaxMSS is segment.MaxMSS: one set
// of limits for both ends.
const (
	// DefaultMSS makes each body (8-byte header and payload) exactly
	// 64 KiB. amqp091-go reads a body frame in 64 KiB chunks: one byte
	// more and it grows the buffer and copies the 64 KiB again (about a
	// tenth of the consumer's CPU at an MSS of 65536, issue 13).
	DefaultMSS           = 64<<10 - segment.HeaderSize
	MaxMSS               = segment.MaxMSS
	DefaultConfirmWindow = 256
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SendConfig configures Send. Zero values are documented per field.
type SendConfig struct {
	Dial          rabbit.DialConfig
	Topology      rabbit.Topology
	MSS           int    // 0 means DefaultMSS
	ConfirmWindow int    // publishes awaiting confirmation; 0 means DefaultConfirmWindow
	Transfer      string // "" means a new random id
	Raw           bool   // send any file; skip the snapshot check
	// Compress is "" (or CompressNone) to send payloads as they are;
	// EncodingS2 or EncodingZstd to pack each one when that is smaller;
	// CompressAuto to pack with S2 only while it pays (see CompressAuto).
	Compress string
	// State is where progress is recorded for Resume; "" means
	// IN.segmq-send beside the input. "-" disables it.
	State string
	// Resume continues the interrupted transfer recorded in State.
	Resume bool
	// Timeout ends the run when no segment has been confirmed for this
	// long: while the broker stays down, or keeps refusing (nacking)
	// publishes; 0 means retry for ever.
	Timeout time.Duration
	// Rehash hashes the file even when a sidecar (IN.sha256, written by
	// snapshot gen and dump) records its SHA-256 for its current size and
	// mtime; by default that digest is sent and the file is not hashed.
	Rehash   bool
	Log      *slog.Logger
	Progress func(bytes int64)

	stateFS vfs.FS // the state journal's; nil: the OS (crash tests: a vfs.MemFS)
}

// Validate says what is wrong with c.
func (c SendConfig) Validate() error {
	if c.MSS < 0 || c.MSS > MaxMSS {
		return fmt.Errorf("--mss must be between 1 and %d (RabbitMQ 4 refuses larger bodies by default), got %d", MaxMSS, c.MSS)
	}
	if c.ConfirmWindow < 0 {
		return fmt.Errorf("--confirm-window must be >= 1, got %d", c.ConfirmWindow)
	}
	if err := checkCompress(c.Compress); err != nil {
		return err
	}
	if c.Timeout < 0 {
		return fmt.Errorf("--timeout must be >= 0, got %s", c.Timeout)
	}
	if c.Transfer != "" {
		if err := CheckTransferID(c.Transfer); err != nil {
			return fmt.Errorf("--transfer: %w", err)
		}
	}
	return c.Topology.Validate()
}

// SendResult describes a finished send.
type SendResult struct {
	Transfer    string
	Run         string // the run nonce sent in segmq-run
	Segments    uint32
	Bytes       int64
	WireBytes   int64 // payload bytes published this run, after compression (republishes not counted)
	SHA256      string
	DigestFrom  string // the sidecar the SHA-256 was taken from; "" when the file was hashed
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

// knownDigest stands in for the SHA-256 when the digest is known before
// the send (a sidecar): it hashes nothing and sums to that digest.
type knownDigest []byte

func (k knownDigest) Write(p []byte) (int, error) { return len(p), nil }
func (k knownDigest) Sum(b []byte) []byte         { return append(b, k...) }
func (knownDigest) Reset()                        {}
func (knownDigest) Size() int                     { return sha256.Size }
func (knownDigest) BlockSize() int                { return sha256.BlockSize }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ErrUnfinished: the input has an interrupted transfer and Resume was not asked for.
var ErrUnfinished = errors.New("an interrupted transfer of this file exists")

// Send publishes the file at path as one transfer and returns once every
// segment is confirmed by the broker. It reconnects after a connection
// loss and republishes whatever was not confirmed.
//
// The input is read once up front (the framing check and a fold of every
// segment's CRC-32C) and once to send. The SHA-256 that goes on the last
// segment is computed over the bytes sent, and is only published if they
// fold to the same CRCs as the bytes checked; a republished segment is
// re-read and must have the CRC it had. So a file that changes during the
// send fails it (ErrInputChanged) instead of arriving "verified".
func Send(ctx context.Context, path string, cfg SendConfig) (SendResult, error) {
	if err := cfg.Validate(); err != nil {
		return SendResult{}, err
	}
	if cfg.MSS == 0 {
		cfg.MSS = DefaultMSS
	}
	if cfg.ConfirmWindow == 0 {
		cfg.ConfirmWindow = DefaultConfirmWindow
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
	p := &publisher{cfg: cfg, log: log, file: f, size: fi.Size(), sha: sha256.New(), fold: newCRCFold(cfg.MSS),
		rebuf: make([]byte, segment.HeaderSize+cfg.MSS), out: map[uint32]uint32{}, wholeAt: map[uint32]uint32{}}
	// The limits first: a file the consumer could not take is never sent.
	if p.split, err = segment.NewSplitter(f, p.size, cfg.MSS); err != nil {
		return SendResult{}, fmt.Errorf("%s: %w", path, err)
	}
	resumed, confirmed, err := p.loadResume()
	if err != nil {
		return SendResult{}, err
	}
	// The digest sidecar, if it still describes the file (size, mtime):
	// its SHA-256 is sent instead of hashing the file.
	side, sideErr := snapfile.Digest{}, error(os.ErrNotExist)
	if !cfg.Rehash {
		side, sideErr = snapfile.ReadSidecar(path, fi)
	}
	scanned, err := scanInput(path, f, p.size, cfg.MSS, cfg.Raw)
	if err != nil {
		return SendResult{}, err
	}
	if sideErr == nil && side.HasCRC && scanned.whole != side.CRC32C {
		// Changed in place since the writer wrote it, its mtime set back
		// (or the sidecar is another file's): its digest would be a lie
		// the consumer refuses at the end; refuse it here, with nothing
		// (more) published.
		if resumed != nil {
			return SendResult{}, fmt.Errorf("%w: cannot resume transfer %s: %s does not have the CRC-32C that %s recorded when it was written (%08x, the file's %08x), although its size and mtime still match: it was changed in place and its mtime set back; nothing more was published; delete %s and run again with --rehash to send the file as it is now, as a new transfer",
				ErrInputChanged, resumed.Transfer, path, path+snapfile.SidecarSuffix, side.CRC32C, scanned.whole, cfg.State)
		}
		return SendResult{}, fmt.Errorf("%w: %s does not have the CRC-32C that %s recorded when it was written (%08x, the file's %08x), although its size and mtime still match: it was changed in place and its mtime set back; nothing was published; run again with --rehash to send the file as it is now",
			ErrInputChanged, path, path+snapfile.SidecarSuffix, side.CRC32C, scanned.whole)
	}
	fold := scanned.sum()
	p.st = sendState{Transfer: cfg.Transfer, MSS: cfg.MSS, Size: p.size, Fold: fold}
	if resumed != nil {
		if resumed.Fold != fold {
			return SendResult{}, fmt.Errorf("cannot resume transfer %s: the input's content changed since it was interrupted; delete %s to start a new transfer", resumed.Transfer, cfg.State)
		}
		// The run too, even "" (a state file from a producer older than
		// segmq-run, whose segments carry none): the resumed segments must
		// be the same transfer as those already published.
		p.st.Transfer, p.st.Run, p.next, p.saved = resumed.Transfer, resumed.Run, confirmed, confirmed
		p.res.Resumed = confirmed
		log.Info("resuming transfer", "transfer", resumed.Transfer, "run", resumed.Run, "confirmed", confirmed)
	}
	if p.st.Transfer == "" {
		p.st.Transfer = NewTransferID()
	}
	if resumed == nil {
		p.st.Run = NewRun() // a new run even when --transfer reuses an id
	}
	switch {
	case sideErr == nil:
		raw, _ := hex.DecodeString(side.SHA256)
		p.sha, p.res.DigestFrom = knownDigest(raw), path+snapfile.SidecarSuffix
		log.Info("sending the SHA-256 recorded beside the file; the file is not hashed again (--rehash hashes it)", "sidecar", p.res.DigestFrom, "sha256", side.SHA256)
	case !errors.Is(sideErr, os.ErrNotExist):
		log.Warn("ignoring the digest sidecar; hashing the file", "reason", sideErr)
	}
	if err := p.hashPrefix(); err != nil {
		return SendResult{}, err
	}
	p.savedCRC = p.fold.whole
	if resumed != nil {
		if err := p.checkPublished(resumed); err != nil {
			return SendResult{}, err
		}
	}
	if p.next == p.split.Total() {
		p.sum = hashHex(p.sha)
	}
	if cfg.Topology.IsStream() {
		// A compressed transfer may fit: the check after the last confirm decides.
		if b := cfg.Topology.Retention.Bytes(); b > 0 && p.size > b && (cfg.Compress == "" || cfg.Compress == CompressNone) {
			return SendResult{}, fmt.Errorf("stream %s: the file (%d bytes) is larger than the stream's retention (--stream-max-bytes %d): retention would remove its first segments before its last is published, and no consumer could restore it; use a larger --stream-max-bytes (for a new stream: retention is set when it is created) or none",
				cfg.Topology.Name(), p.size, b)
		}
		// Before the state file: a stream that cannot be declared leaves nothing to resume.
		if err := announce(ctx, log, cfg.Dial, cfg.Topology, KindStart, p.streamEntry(time.Now())); err != nil {
			return SendResult{}, fmt.Errorf("stream %s: %w", cfg.Topology.Name(), err)
		}
	}
	if cfg.State != "-" {
		// Record the transfer before the first publish, so that a crash at
		// any point leaves something to resume.
		if p.jr, err = journal.CreateFS(vfs.Or(cfg.stateFS), cfg.State, 'P', p.stateRecords()...); err != nil {
			p.jr = nil
			log.Warn("cannot record progress; this transfer will not be resumable", "state", cfg.State, "err", err)
		}
	}
	defer func() {
		if p.jr != nil {
			p.jr.Close()
		}
	}()
	if p.ra, err = startReadAhead(p.split, p.next, p.sha, p.fold, fold, cfg.Compress); err != nil {
		return SendResult{}, err
	}
	defer p.ra.close()
	start := time.Now()
	p.lastConfirm = start
	err = reconnect(ctx, log, cfg.Dial, cfg.Topology, &p.connected, &p.res.Reconnects, p.session, func(err error) error {
		// Nothing in flight on the dead channel can be confirmed any more:
		// it is all published again, in order, before anything new.
		for _, pd := range p.inflight {
			p.retry = append(p.retry, pd.seq)
		}
		p.inflight = p.inflight[:0]
		slices.Sort(p.retry)
		// A new connection is a new start: what went back in line was
		// lost with the channel, not refused by the broker.
		p.nackDelay = 0
		return p.checkTimeout(err)
	})
	if err != nil {
		if errors.Is(err, ErrInputChanged) {
			err = p.abandon(err)
		}
		return SendResult{}, err
	}
	p.saveWatermark(true)
	if cfg.Topology.IsStream() {
		if err := announce(ctx, log, cfg.Dial, cfg.Topology, KindDone, p.streamEntry(start)); errors.Is(err, ErrHeadGone) {
			return SendResult{}, fmt.Errorf("every segment is confirmed, but no consumer can restore transfer %s from stream %s (its index does not record it complete): %w", p.st.Transfer, cfg.Topology.Name(), err)
		} else if err != nil {
			return SendResult{}, fmt.Errorf("every segment is confirmed, but the transfer's end could not be recorded in %s (consumers see it as incomplete): %w; run again with --resume to record it", cfg.Topology.IndexQueue(), err)
		}
	}
	p.removeState()
	p.res.Transfer, p.res.Run, p.res.Segments, p.res.Bytes, p.res.SHA256 = p.st.Transfer, p.st.Run, p.split.Total(), p.size, p.sum
	p.res.Elapsed = time.Since(start)
	return p.res, nil
}

// checkPublished refuses a resume of a file whose bytes differ from those
// the interrupted run published: the segments below its watermark
// ('V'), and any it published above it ('U'). The first are read already
// (hashPrefix); the others, at most a confirm window and a moment of
// confirms, are read here.
func (p *publisher) checkPublished(st *sendState) error {
	refuse := func(n uint32, was, now uint32) error {
		return fmt.Errorf("cannot resume transfer %s: the %d segments already published are not the file's first bytes now (their CRC-32C %08x, the file's %08x): it changed since; delete %s to start a new transfer",
			st.Transfer, n, was, now, p.cfg.State)
	}
	if st.hasPrefixCRC && st.prefixCRC != p.savedCRC {
		return refuse(p.next, st.prefixCRC, p.savedCRC)
	}
	if !st.hasPub || st.pubSeq < p.next {
		return nil
	}
	if st.pubSeq >= p.split.Total() {
		return fmt.Errorf("cannot resume transfer %s: %s records segment %d published, of %d: it belongs to another file; delete it to start a new transfer", st.Transfer, p.cfg.State, st.pubSeq, p.split.Total())
	}
	crc := p.savedCRC
	for seq := p.next; seq <= st.pubSeq; seq++ {
		body, err := p.split.Segment(seq, p.rebuf)
		if err != nil {
			return p.inputError(err)
		}
		payload := body[segment.HeaderSize:]
		crc = crc32cCombine(crc, crc32.Checksum(payload, castagnoli), crc32cShift(int64(len(payload))))
	}
	if crc != st.pubCRC {
		return refuse(st.pubSeq+1, st.pubCRC, crc)
	}
	// The resumed run publishes none of them with other bytes; its own
	// 'U' records go on from there.
	p.pubSeq, p.pubCRC, p.hasPub = st.pubSeq, st.pubCRC, true
	return nil
}

// abandon ends a transfer that can never complete: its last segment was
// refused (the input changed, or is not a snapshot), so what was published
// is of bytes no resume could vouch for. The state file goes, so that a
// rerun starts a new transfer.
func (p *publisher) abandon(err error) error {
	state := ""
	if p.jr != nil {
		p.removeState()
		state = "its state file is removed: "
	}
	return fmt.Errorf("%w. Transfer %s is abandoned: the %d segments of it already published stay in %s, and no consumer will complete it; %srun again with --rehash to send the file as it is now, as a new transfer",
		err, p.st.Transfer, p.next, p.cfg.Topology.Name(), state)
}

// checkTimeout ends the run once no segment has been confirmed for
// cfg.Timeout.
func (p *publisher) checkTimeout(cause error) error {
	if p.cfg.Timeout <= 0 || time.Since(p.lastConfirm) <= p.cfg.Timeout {
		return nil
	}
	if cause == nil {
		cause = errors.New("no confirm")
	}
	return fmt.Errorf("gave up after %s without a confirm: %w; %d of %d segments confirmed; run again with --resume to continue",
		p.cfg.Timeout, cause, p.confirmedCount(), p.split.Total())
}

func (p *publisher) confirmedCount() uint32 {
	return p.next - uint32(len(p.out))
}

// session publishes on one channel until every segment is confirmed or
// the connection fails. Each pass of the loop does one thing: take in
// confirms down to the window, else republish the oldest outstanding
// segment that needs it, else publish the next new one, else wait for the
// last confirms.
func (p *publisher) session(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel) error {
	if err := ch.Confirm(false); err != nil {
		return lost(fmt.Errorf("enable publisher confirms: %w", err))
	}
	p.ch = ch
	p.returns = ch.NotifyReturn(make(chan amqp.Return, 16))
	p.closed = ch.NotifyClose(make(chan *amqp.Error, 1))
	p.blocked = conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	for {
		if err := p.checkTimeout(nil); err != nil {
			return err
		}
		if err := p.drain(ctx, p.cfg.ConfirmWindow-1); err != nil {
			return err
		}
		switch {
		case len(p.retry) > 0:
			if err := p.pause(ctx); err != nil {
				return err
			}
			if err := p.republish(ctx, p.retry[0]); err != nil {
				return err // still outstanding, still first in line
			}
			p.retry = p.retry[1:]
			p.res.Republished++
		case p.next < p.split.Total():
			if err := p.publishNext(ctx); err != nil {
				return err
			}
		case len(p.inflight) > 0:
			if err := p.drain(ctx, 0); err != nil {
				return err
			}
		default:
			if err := ch.Close(); err != nil {
				return lost(fmt.Errorf("close channel: %w", err))
			}
			if err := conn.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				return lost(fmt.Errorf("close connection: %w", err))
			}
			return nil
		}
	}
}

// publishNext takes the next segment from the read-ahead and publishes it.
func (p *publisher) publishNext(ctx context.Context) error {
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
		return p.inputError(b.err)
	}
	if b.sum != "" {
		p.sum = b.sum
	}
	// Outstanding from now until confirmed, whatever happens next.
	p.out[b.seq] = b.rawCRC
	if p.jr != nil {
		p.wholeAt[b.seq] = b.whole
	}
	p.notePublished(b.seq, b.whole)
	p.next++
	err := p.publish(ctx, b.seq, b.body, b.crc, b.enc)
	p.ra.release(b)
	if err != nil {
		// Taken from the read-ahead but not sent: published again, read
		// afresh, by the next session.
		p.retry = append(p.retry, b.seq)
		return err
	}
	p.res.WireBytes += int64(len(b.body) - segment.HeaderSize)
	if p.cfg.Progress != nil {
		p.cfg.Progress(int64(b.seq)*int64(p.cfg.MSS) + int64(b.plain))
	}
	return nil
}

// pause waits before a republish after a nack: the broker refused the
// last publish (a full queue with reject-publish, a resource limit), and
// asking again at once only spins. It is reset by the next confirm.
func (p *publisher) pause(ctx context.Context) error {
	if p.nackDelay == 0 {
		return nil
	}
	select {
	case <-time.After(p.nackDelay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type pending struct {
	seq uint32
	dc  *amqp.DeferredConfirmation
}

type publisher struct {
	cfg   SendConfig
	log   *slog.Logger
	file  *os.File
	size  int64
	split *segment.Splitter
	ra    *readAhead // first-time publishes come from here, in order
	rebuf []byte     // a body being republished

	ch      *amqp.Channel
	returns <-chan amqp.Return
	closed  <-chan *amqp.Error
	blocked <-chan amqp.Blocking

	// out is every outstanding segment: published (or taken to publish)
	// and not yet confirmed, with the CRC-32C of its payload as first
	// read. A seq leaves it only on the broker's ack.
	out      map[uint32]uint32
	inflight []pending // published on this channel, FIFO, at most ConfirmWindow
	retry    []uint32  // outstanding and to be published again, in order

	next      uint32            // next seq to take from the read-ahead
	sha       hash.Hash         // over the payloads before next; the read-ahead owns it once started
	fold      *crcFold          // likewise, the CRC fold
	savedCRC  uint32            // CRC-32C of the payloads of segments [0, saved)
	wholeAt   map[uint32]uint32 // seq -> CRC-32C of segments [0, seq], from publish until saved
	pubSeq    uint32            // the highest seq recorded as published (recPublished), if hasPub
	pubCRC    uint32            // CRC-32C of segments [0, pubSeq]
	hasPub    bool
	sum       string        // the file's SHA-256, once the last segment has been read
	nackDelay time.Duration // wait before the next republish after a nack

	st          sendState
	jr          *journal.Journal // nil: progress is not recorded
	saved       uint32           // the watermark last recorded
	connected   bool             // a session has reached the broker; only then reconnect
	lastConfirm time.Time
	lastSave    time.Time
	res         SendResult
}

// inputError explains a read that failed because the file shrank.
func (p *publisher) inputError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		now := int64(-1)
		if fi, serr := p.file.Stat(); serr == nil {
			now = fi.Size()
		}
		return fmt.Errorf("%w: %s was %d bytes when checked and is now %d (%v); nothing was published from the missing bytes", ErrInputChanged, p.file.Name(), p.size, now, err)
	}
	return err
}

// SegmentHeaders returns the headers segmq's producer puts on a segment:
// transfer id, MSS, file size, the payload's CRC-32C and, when known
// (sha256 != ""), the file's SHA-256.
func SegmentHeaders(transfer string, mss int, size int64, payload []byte, sha256 string) amqp.Table {
	return segmentHeaders(transfer, "", mss, size, crc32.Checksum(payload, castagnoli), sha256, "")
}

// SegmentHeadersRun is SegmentHeaders with a run nonce (HdrRun).
func SegmentHeadersRun(transfer, run string, mss int, size int64, payload []byte, sha256 string) amqp.Table {
	return segmentHeaders(transfer, run, mss, size, crc32.Checksum(payload, castagnoli), sha256, "")
}

func segmentHeaders(transfer, run string, mss int, size int64, crc uint32, sha256 string, enc string) amqp.Table {
	h := amqp.Table{
		HdrTransfer: transfer,
		HdrMSS:      int64(mss),
		HdrSize:     size,
		HdrCRC:      int64(crc),
	}
	if run != "" {
		h[HdrRun] = run
	}
	if sha256 != "" {
		h[HdrSHA256] = sha256
	}
	if enc != "" {
		h[HdrEncoding] = enc
	}
	return h
}

// republish reads segment seq again and publishes it, unpacked. The bytes
// must be those first read: the same CRC-32C.
func (p *publisher) republish(ctx context.Context, seq uint32) error {
	body, err := p.split.Segment(seq, p.rebuf)
	if err != nil {
		return p.inputError(err)
	}
	crc := crc32.Checksum(body[segment.HeaderSize:], castagnoli)
	if want := p.out[seq]; crc != want {
		return fmt.Errorf("%w: segment %d (offset %d) reads back with CRC-32C %08x, %08x when first sent", ErrInputChanged, seq, int64(seq)*int64(p.cfg.MSS), crc, want)
	}
	err = p.publish(ctx, seq, body, crc, "")
	if err == nil {
		p.log.Debug("republished", "seq", seq)
	}
	return err
}

// publish sends one body. The caller may reuse body afterwards:
// amqp091-go has written the frames when PublishWithDeferredConfirm
// returns. The caller bounds the window with drain.
func (p *publisher) publish(ctx context.Context, seq uint32, body []byte, crc uint32, enc string) error {
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", p.cfg.Topology.Name(), true, false, amqp.Publishing{
		Headers:      segmentHeaders(p.st.Transfer, p.st.Run, p.cfg.MSS, p.size, crc, p.sum, enc),
		ContentType:  "application/octet-stream",
		DeliveryMode: amqp.Persistent,
		MessageId:    p.st.Transfer + "/" + strconv.FormatUint(uint64(seq), 10),
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

// drain takes in confirms until at most keep publishes are in flight. A
// confirmed segment leaves the outstanding set; a nacked one goes to the
// retry queue (it stays outstanding) and the next republish waits.
func (p *publisher) drain(ctx context.Context, keep int) error {
	for len(p.inflight) > 0 {
		head := p.inflight[0]
		if len(p.inflight) <= keep {
			// Within the window: take in only confirms already here, so
			// the watermark, --timeout and the nack pause see them now.
			select {
			case <-head.dc.Done():
			default:
				return nil
			}
		}
		ok, err := p.wait(ctx, head.dc)
		if err != nil {
			return err
		}
		p.inflight = p.inflight[1:]
		if !ok {
			p.retry = append(p.retry, head.seq)
			p.nackDelay = min(max(2*p.nackDelay, 50*time.Millisecond), 5*time.Second)
			p.log.Warn("broker nacked a segment; republishing after a pause", "seq", head.seq, "pause", p.nackDelay)
			continue
		}
		delete(p.out, head.seq)
		p.lastConfirm, p.nackDelay = time.Now(), 0
		p.saveWatermark(false)
	}
	return nil
}

func (p *publisher) wait(ctx context.Context, dc *amqp.DeferredConfirmation) (bool, error) {
	var timeout <-chan time.Time
	if p.cfg.Timeout > 0 {
		t := time.NewTimer(max(p.cfg.Timeout-time.Since(p.lastConfirm), 0) + time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
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
		case <-timeout:
			if err := p.checkTimeout(errors.New("waiting for a confirm")); err != nil {
				return false, err
			}
			timeout = time.After(10 * time.Millisecond)
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
