package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"

	"github.com/segmq/segmq/internal/journal"
	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/recordio"
	"github.com/segmq/segmq/segment"
	"github.com/segmq/segmq/snapfile"
)

// ErrInputChanged: the input file's bytes changed between the check and
// the send (or during the send). Nothing built from the changed bytes is
// ever given the checked file's digest.
var ErrInputChanged = errors.New("the input file changed during the send")

// sendState is the producer's progress, kept in IN.segmq-send (a journal,
// package journal) while a transfer runs and removed when it completes:
//
//	'H' JSON sendState    first: which transfer, and of what bytes
//	'V' u32 LE, u32 LE    a confirmed watermark: every seq below it was
//	                      confirmed; and the CRC-32C of their payloads
//	'W' u32 LE            the same without the CRC (older producers)
//	'U' u32 LE, u32 LE    the highest seq published, and the CRC-32C of
//	                      the payloads up to it (not fsynced)
//
// Fold identifies the input's content: it is a digest of the CRC-32C of
// every segment's payload, so a resume of a file whose bytes changed since
// (even at the same size and modification time) is refused. Run is the
// transfer's segmq-run nonce, kept so that --resume sends the same run;
// a state file written before segmq-run has none, and resumes with none.
type sendState struct {
	Transfer string `json:"transfer"`
	Run      string `json:"run,omitempty"`
	MSS      int    `json:"mss"`
	Size     int64  `json:"size"`
	Fold     string `json:"fold"`

	// From the last watermark record, when it is a 'V': the CRC-32C of
	// the payloads below the watermark, as they were published.
	prefixCRC    uint32
	hasPrefixCRC bool
	// From the last 'U' record: the highest seq published and the CRC-32C
	// of the payloads of [0, pubSeq].
	pubSeq, pubCRC uint32
	hasPub         bool
}

const (
	recSendHeader = 'H'
	recWatermark  = 'W'
	// recWatermarkCRC is a watermark with the CRC-32C of every payload
	// below it, as published: u32 LE watermark, u32 LE CRC. A resume
	// refuses a file whose first bytes no longer have that CRC, so the
	// segments it adds are never of other bytes than those already
	// published. (Written since issue 13's round four; 'W' before.)
	recWatermarkCRC = 'V'
	// recPublished is the highest seq published so far and the CRC-32C of
	// the payloads of every seq up to it: u32 LE, u32 LE. Written before
	// that publish without an fsync (journal.Write), so that a producer
	// killed with segments published above its watermark still names
	// them: a resume refuses a file whose bytes up to there differ. A
	// crash of the machine can lose it (see README).
	recPublished = 'U'
)

// crcFold computes the per-segment CRC-32C of a byte stream cut at MSS
// and folds them, in order, into one digest; it also combines them into
// the CRC-32C of the whole stream, which is what a digest sidecar records.
// Written to as an io.Writer.
type crcFold struct {
	mss   int
	n     int // bytes of the current segment so far
	crc   uint32
	segs  uint32
	fold  hash.Hash
	whole uint32 // CRC-32C of every segment added so far
	opMSS uint32 // crc32cShift(mss), to combine a full segment's CRC
}

func newCRCFold(mss int) *crcFold {
	return &crcFold{mss: mss, fold: sha256.New(), opMSS: crc32cShift(int64(mss))}
}

func (c *crcFold) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(c.mss-c.n, len(p))
		c.crc = crc32.Update(c.crc, castagnoli, p[:k])
		c.n += k
		p = p[k:]
		if c.n == c.mss {
			c.add(c.crc, c.n)
			c.crc, c.n = 0, 0
		}
	}
	return total, nil
}

// add folds the CRC of one segment of n bytes.
func (c *crcFold) add(crc uint32, n int) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], crc)
	c.fold.Write(b[:])
	c.segs++
	op := c.opMSS
	if n != c.mss {
		op = crc32cShift(int64(n))
	}
	c.whole = crc32cCombine(c.whole, crc, op)
}

// sum ends the stream: a short last segment (or the one empty segment of
// an empty file) is folded too. It may be called again.
func (c *crcFold) sum() string {
	if c.n > 0 || c.segs == 0 {
		c.add(c.crc, c.n)
		c.crc, c.n = 0, 0
	}
	return hex.EncodeToString(c.fold.Sum(nil))
}

// scanInput reads the input once: it folds every segment's CRC-32C and,
// unless raw, checks that the file is a complete snapshot. The fold is
// returned ended (sum).
//
// The check is a walk of the record framing over large reads (lengths
// only, no copy per record), then snapfile.Check of the first and last
// records alone: the header and the trailer. A file the walk or that
// check finds fault with is checked again in full by snapfile.Check,
// whose error (with offsets) is the one reported. It costs a fraction of
// a full snapfile.Check, which copies every record, and runs before the
// first publish (issue 13).
func scanInput(path string, f io.ReaderAt, size int64, mss int, raw bool) (*crcFold, error) {
	fold := newCRCFold(mss)
	w := framingWalk{}
	buf := make([]byte, min(scanChunk, max(size, 1)))
	for off := int64(0); off < size; {
		n := int(min(int64(len(buf)), size-off))
		m, err := f.ReadAt(buf[:n], off)
		if m < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		fold.Write(buf[:n])
		if !raw {
			w.feed(buf[:n], off)
		}
		off += int64(n)
	}
	if !raw && !w.complete(f, size) {
		if err := checkWhole(path, f, size); err != nil {
			return nil, err
		}
	}
	fold.sum()
	return fold, nil
}

// checkWhole is snapfile.Check of the whole input, for the error it gives
// when the framing walk found fault (nil: the walk was too cautious).
func checkWhole(path string, f io.ReaderAt, size int64) error {
	if _, _, err := snapfile.Check(io.NewSectionReader(f, 0, size)); err != nil {
		return fmt.Errorf("%s is not a complete snapshot (%w); pass --raw to send any file", path, err)
	}
	return nil
}

// crc32cCombine returns the CRC-32C of A followed by B from crcA, crcB
// and op = crc32cShift(len(B)): crcA·x^(8·len(B)) + crcB modulo the
// polynomial, as zlib's crc32_combine_op does for its CRC-32. The pre-
// and post-conditioning of both CRCs cancel out.
func crc32cCombine(crcA, crcB, op uint32) uint32 { return crc32cMulMod(op, crcA) ^ crcB }

// crc32cShift returns x^(8n) modulo the CRC-32C polynomial (reflected):
// the operator that moves a CRC past n zero bytes.
func crc32cShift(n int64) uint32 {
	p := uint32(1) << 31 // x^0
	for k := 3; n > 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = crc32cMulMod(crc32cX2n[k], p)
		}
	}
	return p
}

// crc32cX2n[k] is x^(2^k) modulo the polynomial, for every k a shift of
// up to 2^63 bytes needs. zlib wraps its table at 32 (x^(2^32) = x for
// its CRC-32 polynomial); that does not hold for Castagnoli's, whose
// shifts went wrong from 1 GiB on with the wrap (the review's
// TestCRC32CShiftBeyondHalfGiB).
var crc32cX2n = func() (t [67]uint32) {
	t[0] = 1 << 30 // x^1
	for k := 1; k < len(t); k++ {
		t[k] = crc32cMulMod(t[k-1], t[k-1])
	}
	return t
}()

// crc32cMulMod multiplies a and b modulo the CRC-32C polynomial, both in
// reflected bit order (zlib's multmodp).
func crc32cMulMod(a, b uint32) uint32 {
	const poly = 0x82f63b78 // crc32.Castagnoli
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		if b&1 != 0 {
			b = b>>1 ^ poly
		} else {
			b >>= 1
		}
	}
	return p
}

// scanChunk is scanInput's read size.
const scanChunk = 1 << 20

// framingWalk follows a snapshot's length prefixes across the chunks fed
// to it, in order, and remembers where the first and last records are.
type framingWalk struct {
	next        int64 // offset of the next length prefix
	pre         [recordio.PrefixSize]byte
	npre        int // bytes of a prefix split between two chunks
	records     int64
	first, last int64 // offsets of the first and last records' prefixes
	flen, llen  int   // their lengths
	bad         bool
}

func (w *framingWalk) feed(chunk []byte, off int64) {
	end := off + int64(len(chunk))
	for !w.bad && w.next < end {
		rel := int(w.next - off)
		var l uint32
		if w.npre > 0 || rel+recordio.PrefixSize > len(chunk) {
			// A prefix split between chunks: gather it.
			from := max(rel, 0)
			k := copy(w.pre[w.npre:], chunk[from:])
			w.npre += k
			if w.npre < recordio.PrefixSize {
				return
			}
			l, w.npre = binary.LittleEndian.Uint32(w.pre[:]), 0
		} else {
			l = binary.LittleEndian.Uint32(chunk[rel:])
		}
		if uint64(l) > recordio.DefaultMaxRecordSize {
			w.bad = true
			return
		}
		if w.records == 0 {
			w.first, w.flen = w.next, int(l)
		}
		w.last, w.llen = w.next, int(l)
		w.records++
		w.next += recordio.PrefixSize + int64(l)
	}
}

// complete says whether the walk ended exactly at size and the first
// and last records are a snapshot's header and trailer; false means
// "check the whole file to say what is wrong", not necessarily wrong.
func (w *framingWalk) complete(f io.ReaderAt, size int64) bool {
	if w.bad || w.records == 0 || w.npre != 0 || w.next != size {
		return false
	}
	// The two records as a stream of their own: header first, trailer
	// last (one record: it would have to be both, and Check says no).
	var ends []byte
	for i, at := range []struct {
		off int64
		n   int
	}{{w.first, w.flen}, {w.last, w.llen}} {
		if i == 1 && w.records == 1 {
			break
		}
		rec := make([]byte, recordio.PrefixSize+at.n)
		if _, err := f.ReadAt(rec, at.off); err != nil {
			return false
		}
		ends = append(ends, rec...)
	}
	_, _, err := snapfile.Check(bytes.NewReader(ends))
	return err == nil
}

// loadResume reads the state file: with Resume it continues that
// transfer; without, an existing state is an error that says what to do.
func (p *publisher) loadResume() (*sendState, uint32, error) {
	if p.cfg.State == "-" {
		if p.cfg.Resume {
			return nil, 0, errors.New("--resume needs a state file")
		}
		return nil, 0, nil
	}
	recs, err := journal.ReadFS(vfs.Or(p.cfg.stateFS), p.cfg.State, 'P')
	if errors.Is(err, os.ErrNotExist) {
		if p.cfg.Resume {
			return nil, 0, fmt.Errorf("--resume: no interrupted transfer recorded in %s", p.cfg.State)
		}
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("state file: %w; delete it to start a new transfer", err)
	}
	var st sendState
	var confirmed uint32
	if len(recs) == 0 || recs[0].Type != recSendHeader || json.Unmarshal(recs[0].Data, &st) != nil {
		return nil, 0, fmt.Errorf("state file %s has no transfer record; delete it to start a new transfer", p.cfg.State)
	}
	for _, r := range recs[1:] {
		switch {
		case r.Type == recWatermark && len(r.Data) == 4:
			confirmed, st.hasPrefixCRC = binary.LittleEndian.Uint32(r.Data), false
		case r.Type == recWatermarkCRC && len(r.Data) == 8:
			confirmed, st.prefixCRC, st.hasPrefixCRC = binary.LittleEndian.Uint32(r.Data), binary.LittleEndian.Uint32(r.Data[4:]), true
		case r.Type == recPublished && len(r.Data) == 8:
			st.pubSeq, st.pubCRC, st.hasPub = binary.LittleEndian.Uint32(r.Data), binary.LittleEndian.Uint32(r.Data[4:]), true
		}
	}
	if !p.cfg.Resume {
		return nil, 0, fmt.Errorf("%w: transfer %s, %d segments confirmed, recorded in %s; pass --resume to continue it, or delete that file to start a new transfer",
			ErrUnfinished, st.Transfer, confirmed, p.cfg.State)
	}
	switch {
	case st.Size != p.size:
		return nil, 0, fmt.Errorf("cannot resume transfer %s: the input changed since (size %d→%d); delete %s to start a new transfer", st.Transfer, st.Size, p.size, p.cfg.State)
	case st.MSS != p.cfg.MSS:
		// Also what a producer older than the default MSS of 65528 left:
		// its transfers ran at 65536.
		return nil, 0, fmt.Errorf("cannot resume transfer %s: it used --mss %d, not %d; run again with --resume --mss %d", st.Transfer, st.MSS, p.cfg.MSS, st.MSS)
	case p.cfg.Transfer != "" && p.cfg.Transfer != st.Transfer:
		return nil, 0, fmt.Errorf("cannot resume: %s records transfer %s, not %s", p.cfg.State, st.Transfer, p.cfg.Transfer)
	}
	return &st, confirmed, nil
}

// hashPrefix brings the SHA-256 and the CRC fold up to the resume point
// by reading the already-confirmed prefix of the file once.
func (p *publisher) hashPrefix() error {
	buf := make([]byte, segment.HeaderSize+p.cfg.MSS)
	for seq := uint32(0); seq < p.next; seq++ {
		body, err := p.split.Segment(seq, buf)
		if err != nil {
			return p.inputError(err)
		}
		p.sha.Write(body[segment.HeaderSize:])
		p.fold.add(crc32.Checksum(body[segment.HeaderSize:], castagnoli), len(body)-segment.HeaderSize)
	}
	return nil
}

// stateRecords is the whole state in two records, three once anything
// was published.
func (p *publisher) stateRecords() []journal.Record {
	js, _ := json.Marshal(p.st)
	recs := []journal.Record{{Type: recSendHeader, Data: js}, watermarkRecord(p.saved, p.savedCRC)}
	if p.hasPub {
		recs = append(recs, publishedRecord(p.pubSeq, p.pubCRC))
	}
	return recs
}

func watermarkRecord(w, crc uint32) journal.Record {
	return journal.Record{Type: recWatermarkCRC, Data: pair(w, crc)}
}

func publishedRecord(seq, crc uint32) journal.Record {
	return journal.Record{Type: recPublished, Data: pair(seq, crc)}
}

func pair(a, b uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, a), b)
}

// notePublished records, before seq is first published, that everything
// up to it may be in the broker, with its CRC-32C (recPublished).
func (p *publisher) notePublished(seq, whole uint32) {
	if p.jr == nil || (p.hasPub && seq <= p.pubSeq) {
		return
	}
	if err := p.jr.Write(publishedRecord(seq, whole)); err != nil {
		p.dropState(err)
		return
	}
	p.pubSeq, p.pubCRC, p.hasPub = seq, whole, true
}

// saveWatermark records the confirmed watermark: the lowest seq that is
// outstanding (published or to be republished, and not confirmed), or
// the next to publish when none is. No seq at or above an outstanding one
// is ever counted as confirmed.
func (p *publisher) saveWatermark(force bool) {
	if p.jr == nil || (!force && p.lastConfirm.Sub(p.lastSave) < saveEvery && p.next < p.split.Total()) {
		return
	}
	low := p.next
	for seq := range p.out {
		low = min(low, seq)
	}
	if low <= p.saved {
		return
	}
	// Every seq in [saved, low) was published by this run, in order by
	// the read-ahead: wholeAt[low-1] is the CRC of all below low.
	crc, ok := p.wholeAt[low-1]
	if !ok {
		p.dropState(fmt.Errorf("internal error: no CRC-32C recorded for segment %d", low-1))
		return
	}
	p.lastSave = p.lastConfirm
	err := p.jr.Append(watermarkRecord(low, crc))
	if err == nil && p.jr.Size() > 64<<10 {
		p.saved, p.savedCRC = low, crc
		err = p.jr.Rewrite(p.stateRecords()...)
	}
	if err != nil {
		p.dropState(err)
		return
	}
	p.saved, p.savedCRC = low, crc
	for seq := range p.wholeAt {
		if seq < low {
			delete(p.wholeAt, seq)
		}
	}
}

// dropState stops recording progress: the transfer goes on, not
// resumable. The state file goes too: left behind, it would record less
// than was published (a --resume could add other bytes to what it does
// not name) and make the next send of the file refuse to start.
func (p *publisher) dropState(err error) {
	clear(p.wholeAt)
	gone := "its state file is removed"
	if rerr := p.jr.Remove(); rerr != nil {
		gone = fmt.Sprintf("and its state file could not be removed (%v): delete it before sending this file again", rerr)
	}
	p.jr = nil
	p.log.Warn("cannot record progress; this transfer will not be resumable, "+gone, "state", p.cfg.State, "err", err)
}

const saveEvery = 250e6 // ns: 250ms

func (p *publisher) removeState() {
	if p.jr == nil {
		return
	}
	if err := p.jr.Remove(); err != nil {
		p.log.Warn("remove state", "err", err)
	}
	p.jr = nil
}

func hashHex(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
