package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Config configures an Assembler. The zero value of every field means
// "learn it from the segments" or "no limit", as documented per field.
type Config struct {
	// MSS is the payload size of every segment but the last. 0 means
	// unknown: it is learnt from the first non-final segment, which is all
	// a seed-format producer (no headers) lets us know.
	MSS int
	// Total is the number of segments. 0 means learn it from the first
	// segment; after that every segment must agree.
	Total uint32
	// Size is the file size in bytes, or -1 (or 0 with SizeKnown false)
	// when unknown. When known, the last payload must match it.
	Size      int64
	SizeKnown bool
	// Window is the reorder window: a segment with seq >= Next()+Window is
	// answered NotYet. 0 means the whole transfer (never NotYet for
	// reasons of order).
	Window uint32
	// MaxTotal bounds Total; 0 means MaxTotal, so a forged total can
	// never allocate more than a 16 MiB received set.
	MaxTotal uint32
}

// Validate says what is wrong with c, if anything.
func (c Config) Validate() error {
	if c.MSS < 0 {
		return fmt.Errorf("%w: got %d", ErrBadMSS, c.MSS)
	}
	if c.SizeKnown && c.Size < 0 {
		return fmt.Errorf("segment: negative size %d", c.Size)
	}
	if c.SizeKnown && c.MSS == 0 {
		return errors.New("segment: a known size needs a known MSS")
	}
	max := c.maxTotal()
	if c.Total > max {
		return fmt.Errorf("%w: total %d > %d", ErrTotalTooLarge, c.Total, max)
	}
	if c.SizeKnown && c.Total != 0 && !totalFits(c.Size, c.MSS, c.Total) {
		return fmt.Errorf("segment: total %d does not fit size %d at MSS %d", c.Total, c.Size, c.MSS)
	}
	return nil
}

func (c Config) maxTotal() uint32 {
	if c.MaxTotal == 0 {
		return MaxTotal
	}
	return c.MaxTotal
}

// totalFits reports whether total segments of mss bytes can carry size
// bytes under the wire contract: ceil(size/mss) segments (1 for an empty
// file), or one more, empty, when size is a non-zero multiple of mss.
func totalFits(size int64, mss int, total uint32) bool {
	want, err := Count(size, mss)
	if err != nil {
		return false
	}
	return total == want || (size > 0 && size%int64(mss) == 0 && uint64(total) == uint64(want)+1)
}

// Outcome says what Add did with a segment.
type Outcome int

const (
	// Placed: the payload was written at its offset and recorded.
	Placed Outcome = iota + 1
	// Duplicate: the segment was already received; nothing was written.
	Duplicate
	// NotYet: the segment is valid but cannot be placed now (outside the
	// reorder window, or its offset is unknown until the MSS is learnt).
	// The caller should give it back (requeue) and offer it again later.
	NotYet
)

func (o Outcome) String() string {
	switch o {
	case Placed:
		return "placed"
	case Duplicate:
		return "duplicate"
	case NotYet:
		return "not-yet"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// SegmentError reports a segment that can never be placed. Err is one of
// the package's sentinels; match it with errors.Is.
type SegmentError struct {
	Header     Header
	PayloadLen int
	Err        error
	Detail     string
}

func (e *SegmentError) Error() string {
	s := fmt.Sprintf("%v (seq %d, total %d, payload %d bytes)", e.Err, e.Header.Seq, e.Header.Total, e.PayloadLen)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *SegmentError) Unwrap() error { return e.Err }

// Assembler places segments received in any order into an io.WriterAt.
// Its memory is the received-set bitmap, total/8 bytes. It is not safe for
// concurrent use.
type Assembler struct {
	w        io.WriterAt
	cfg      Config
	mss      int
	total    uint32
	size     int64 // valid when sizeKnown
	sizeKnwn bool
	recv     []uint64
	count    uint32
	next     uint32 // lowest seq not yet received
}

// NewAssembler returns an Assembler writing to w.
func NewAssembler(w io.WriterAt, cfg Config) (*Assembler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Assembler{w: w, cfg: cfg, mss: cfg.MSS, size: cfg.Size, sizeKnwn: cfg.SizeKnown}
	if cfg.Total != 0 {
		a.setTotal(cfg.Total)
	}
	return a, nil
}

func (a *Assembler) setTotal(t uint32) {
	a.total = t
	a.recv = make([]uint64, (uint64(t)+63)/64)
}

func (a *Assembler) has(seq uint32) bool { return a.recv[seq/64]&(1<<(seq%64)) != 0 }
func (a *Assembler) mark(seq uint32)     { a.recv[seq/64] |= 1 << (seq % 64) }

func (a *Assembler) reject(h Header, n int, err error, detail string) (Outcome, error) {
	return 0, &SegmentError{Header: h, PayloadLen: n, Err: err, Detail: detail}
}

// check is every rule a segment must meet to be placed, given what the
// Assembler knows (MSS, total, size). It changes nothing.
func (a *Assembler) check(h Header, n int) error {
	if err := h.Valid(); err != nil {
		return &SegmentError{Header: h, PayloadLen: n, Err: err}
	}
	total := a.total
	if total == 0 {
		if max := a.cfg.maxTotal(); h.Total > max {
			return &SegmentError{Header: h, PayloadLen: n, Err: ErrTotalTooLarge, Detail: fmt.Sprintf("limit %d", max)}
		}
		if a.sizeKnwn && !totalFits(a.size, a.mss, h.Total) {
			return &SegmentError{Header: h, PayloadLen: n, Err: ErrTotalMismatch, Detail: fmt.Sprintf("size %d at MSS %d", a.size, a.mss)}
		}
		total = h.Total
	} else if h.Total != total {
		return &SegmentError{Header: h, PayloadLen: n, Err: ErrTotalMismatch, Detail: fmt.Sprintf("transfer has total %d", total)}
	}
	last := h.Seq == total-1
	if a.mss != 0 && n > a.mss {
		return &SegmentError{Header: h, PayloadLen: n, Err: ErrPayloadTooLarge, Detail: fmt.Sprintf("MSS %d", a.mss)}
	}
	if a.mss != 0 && !last && n != a.mss {
		return &SegmentError{Header: h, PayloadLen: n, Err: ErrShortPayload, Detail: fmt.Sprintf("MSS %d", a.mss)}
	}
	if last && a.sizeKnwn {
		if want := a.size - int64(total-1)*int64(a.mss); int64(n) != want {
			return &SegmentError{Header: h, PayloadLen: n, Err: ErrSizeMismatch, Detail: fmt.Sprintf("size %d needs a last payload of %d bytes", a.size, want)}
		}
	}
	return nil
}

// CheckShape applies the Assembler's rules to one segment of a transfer
// whose MSS and size are declared (segmq's headers), without an
// Assembler: total within MaxTotal and consistent with size and MSS, seq
// below total, every payload but the last exactly MSS bytes, the last
// exactly what the size leaves. It returns a *SegmentError or nil.
func CheckShape(h Header, payloadLen, mss int, size int64) error {
	if mss < 1 || size < 0 {
		return &SegmentError{Header: h, PayloadLen: payloadLen, Err: ErrBadMSS, Detail: fmt.Sprintf("mss %d size %d", mss, size)}
	}
	a := Assembler{mss: mss, size: size, sizeKnwn: true}
	return a.check(h, payloadLen)
}

// Add offers one segment. It returns Placed, Duplicate or NotYet, or a
// *SegmentError for a segment that can never be placed (the caller should
// dead-letter it), or an I/O error from the WriterAt (the segment was not
// recorded; the caller may offer it again).
func (a *Assembler) Add(h Header, payload []byte) (Outcome, error) {
	n := len(payload)
	if err := a.check(h, n); err != nil {
		return 0, err
	}
	if a.total == 0 {
		a.setTotal(h.Total)
	}
	last := h.Seq == a.total-1
	if a.has(h.Seq) {
		return Duplicate, nil
	}
	if a.cfg.Window != 0 && uint64(h.Seq) >= uint64(a.next)+uint64(a.cfg.Window) {
		return NotYet, nil
	}
	if a.mss == 0 {
		if last && a.total > 1 {
			return NotYet, nil // its offset needs the MSS, which only a non-final segment tells
		}
		if !last {
			if n == 0 {
				return a.reject(h, n, ErrShortPayload, "a non-final segment cannot be empty")
			}
			a.mss = n // learnt from the first non-final segment
		}
	}
	off := int64(h.Seq) * int64(a.mss)
	if n > 0 {
		if _, err := a.w.WriteAt(payload, off); err != nil {
			return 0, fmt.Errorf("segment: write seq %d at offset %d: %w", h.Seq, off, err)
		}
	}
	if last {
		a.size = off + int64(n)
		a.sizeKnwn = true
	}
	a.mark(h.Seq)
	a.count++
	for a.next < a.total && a.has(a.next) {
		a.next++
	}
	return Placed, nil
}

// Complete reports whether every segment has been placed.
func (a *Assembler) Complete() bool { return a.total != 0 && a.count == a.total }

// Received is the number of distinct segments placed.
func (a *Assembler) Received() uint32 { return a.count }

// Total is the number of segments, or 0 before the first segment.
func (a *Assembler) Total() uint32 { return a.total }

// Next is the lowest seq not yet received (Total when complete).
func (a *Assembler) Next() uint32 { return a.next }

// MSS is the segment size, or 0 while it is unknown.
func (a *Assembler) MSS() int { return a.mss }

// Size is the file size, when known (from the config or the last segment).
func (a *Assembler) Size() (int64, bool) { return a.size, a.sizeKnwn }

// Missing appends to dst up to max seqs not yet received, lowest first.
func (a *Assembler) Missing(dst []uint32, max int) []uint32 {
	for seq := a.next; seq < a.total && len(dst) < max; seq++ {
		if !a.has(seq) {
			dst = append(dst, seq)
		}
	}
	return dst
}

// Run is a run of consecutive segments: seqs First .. First+N-1.
type Run struct{ First, N uint32 }

// Facts are what an Assembler knows of its transfer: the MSS, the total
// and the size, each 0 (size: SizeKnown false) while unknown.
type Facts struct {
	MSS       int
	Total     uint32
	Size      int64
	SizeKnown bool
}

// Facts returns what the Assembler has learnt so far.
func (a *Assembler) Facts() Facts {
	return Facts{MSS: a.mss, Total: a.total, Size: a.size, SizeKnown: a.sizeKnwn}
}

// Replay records runs of segments as received, without writing anything,
// together with the facts an earlier Assembler had learnt when it placed
// them. It is how a saved journal of placements is applied on resume.
// Facts must agree with what this Assembler knows; runs must lie within
// the total.
func (a *Assembler) Replay(f Facts, runs []Run) error {
	switch {
	case f.MSS < 0 || (a.mss != 0 && f.MSS != 0 && f.MSS != a.mss):
		return fmt.Errorf("%w: saved MSS %d, transfer MSS %d", ErrBadState, f.MSS, a.mss)
	case a.total != 0 && f.Total != 0 && f.Total != a.total:
		return fmt.Errorf("%w: saved total %d, transfer total %d", ErrBadState, f.Total, a.total)
	case f.Total > a.cfg.maxTotal():
		return fmt.Errorf("%w: saved total %d over the limit", ErrBadState, f.Total)
	case a.sizeKnwn && f.SizeKnown && f.Size != a.size:
		return fmt.Errorf("%w: saved size %d, transfer size %d", ErrBadState, f.Size, a.size)
	}
	if a.total == 0 && f.Total != 0 {
		a.setTotal(f.Total)
	}
	if a.mss == 0 {
		a.mss = f.MSS
	}
	if !a.sizeKnwn && f.SizeKnown {
		a.size, a.sizeKnwn = f.Size, true
	}
	for _, r := range runs {
		if uint64(r.First)+uint64(r.N) > uint64(a.total) {
			return fmt.Errorf("%w: run %d+%d outside total %d", ErrBadState, r.First, r.N, a.total)
		}
		for seq := r.First; seq < r.First+r.N; seq++ {
			if !a.has(seq) {
				a.mark(seq)
				a.count++
			}
		}
	}
	for a.next < a.total && a.has(a.next) {
		a.next++
	}
	return nil
}

// Saved received sets start with this magic, then a version byte.
const stateMagic = "SGMQRSET"
const stateVersion = 1

// MarshalBinary saves the received set (with MSS, total and size) so that
// a later Assembler can resume the transfer.
//
//	magic[8] version[1] flags[1] mss u32 total u32 size u64 count u32 bitmap...
func (a *Assembler) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 30+8*len(a.recv))
	b = append(b, stateMagic...)
	b = append(b, stateVersion)
	var flags byte
	if a.sizeKnwn {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(a.mss))
	b = binary.LittleEndian.AppendUint32(b, a.total)
	b = binary.LittleEndian.AppendUint64(b, uint64(a.size))
	b = binary.LittleEndian.AppendUint32(b, a.count)
	for _, w := range a.recv {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b, nil
}

// ErrBadState is returned by UnmarshalBinary for a saved set that is
// corrupt or does not match the Assembler's configuration.
var ErrBadState = errors.New("segment: bad saved received set")

// UnmarshalBinary restores a received set saved by MarshalBinary. The
// saved MSS, total and size must agree with what the Assembler was
// configured with (where configured).
func (a *Assembler) UnmarshalBinary(b []byte) error {
	const fixed = 8 + 1 + 1 + 4 + 4 + 8 + 4
	if len(b) < fixed || string(b[:8]) != stateMagic || b[8] != stateVersion {
		return fmt.Errorf("%w: bad magic or version", ErrBadState)
	}
	flags := b[9]
	mss := int(binary.LittleEndian.Uint32(b[10:]))
	total := binary.LittleEndian.Uint32(b[14:])
	size := int64(binary.LittleEndian.Uint64(b[18:]))
	count := binary.LittleEndian.Uint32(b[26:])
	words := b[fixed:]
	if total > a.cfg.maxTotal() || uint64(len(words)) != 8*((uint64(total)+63)/64) {
		return fmt.Errorf("%w: %d bitmap bytes for total %d", ErrBadState, len(words), total)
	}
	switch {
	case a.cfg.MSS != 0 && mss != a.cfg.MSS:
		return fmt.Errorf("%w: saved MSS %d, transfer MSS %d", ErrBadState, mss, a.cfg.MSS)
	case a.cfg.Total != 0 && total != a.cfg.Total:
		return fmt.Errorf("%w: saved total %d, transfer total %d", ErrBadState, total, a.cfg.Total)
	case a.cfg.SizeKnown && flags&1 != 0 && size != a.cfg.Size:
		return fmt.Errorf("%w: saved size %d, transfer size %d", ErrBadState, size, a.cfg.Size)
	}
	recv := make([]uint64, len(words)/8)
	var n int
	for i := range recv {
		recv[i] = binary.LittleEndian.Uint64(words[8*i:])
		n += bits.OnesCount64(recv[i])
	}
	if uint32(n) != count || (total%64 != 0 && len(recv) > 0 && recv[len(recv)-1]>>(total%64) != 0) {
		return fmt.Errorf("%w: count %d does not match bitmap", ErrBadState, count)
	}
	a.mss, a.total, a.recv, a.count = mss, total, recv, count
	if flags&1 != 0 {
		a.size, a.sizeKnwn = size, true
	}
	a.next = 0
	for a.next < a.total && a.has(a.next) {
		a.next++
	}
	return nil
}
