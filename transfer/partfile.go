package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/segmq/segmq/internal/fsutil"
	"github.com/segmq/segmq/internal/journal"
	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/segment"
)

// partFile owns everything the consumer keeps on disk for one --out:
//
//	OUT.part        the file being assembled, written at each segment's offset
//	OUT.part.state  its journal (package journal): the binding, then what is
//	                placed and durable, and the producer's SHA-256 once known
//	OUT.part.lock   an exclusive lock, held from open to close; it names the
//	                holder, so a second consumer on the same --out fails at
//	                once and says who has it
//
// It is the only writer of all three. place writes a payload; persist
// makes everything placed so far durable (fsync of .part, then a journal
// append, itself fsynced) and only after persist may the caller ack those
// deliveries; commit checks size and SHA-256 and renames .part to OUT.
//
// Journal records (type, data):
//
//	'H' JSON binding                    first, written when the transfer is bound
//	'P' facts, then runs                segments placed and durable since the last 'P'
//	    facts: mss u32, total u32, size i64, flags u8 (1: size known); runs: (first u32, n u32)*
//	'D' 64 hex digits                   the producer's SHA-256 of the file
//	'B' segment.Assembler binary        the whole received set (written when the
//	                                    journal is rewritten to stay small)
//	'O' u64 LE                          streams only: the stream offset to read from
//	                                    next; everything before it is placed and
//	                                    durable, or was not this transfer's
type partFile struct {
	fsys                           vfs.FS // vfs.OS but in crash tests
	out, path, statePath, lockPath string
	log                            *slog.Logger
	window                         uint32

	lock vfs.Unlocker
	f    vfs.File
	jr   *journal.Journal // nil until bound
	asm  *segment.Assembler
	b    *binding // nil until bound
	sha  string   // the producer's SHA-256, once known
	hash *hasher

	syncing *pendingSync // a persist running in the background, or nil
	failed  error        // the first failed persist: every later one fails

	runs      []segment.Run // placed since the last persist
	shaDirty  bool          // sha learnt since the last persist
	offset    int64         // streams: next offset to read, recorded; -1 none
	offDirty  bool          // offset moved since the last persist
	resumed   uint32
	committed bool
}

const (
	recBinding = 'H'
	recPlaced  = 'P'
	recDigest  = 'D'
	recSet     = 'B'
	recOffset  = 'O'
)

// openPart locks out's work files and opens them: resuming what the
// journal records, or (no journal, or restart) starting empty.
func openPart(fsys vfs.FS, out string, restart bool, want string, window uint32, log *slog.Logger) (_ *partFile, err error) {
	p := &partFile{fsys: vfs.Or(fsys), out: out, path: out + ".part", statePath: out + ".part.state", lockPath: out + ".part.lock", log: log, window: window, offset: -1}
	if p.lock, err = p.fsys.Lock(p.lockPath); err != nil {
		if errors.Is(err, fsutil.ErrLocked) {
			return nil, fmt.Errorf("another consumer is restoring into %s (%w); wait for it to finish or stop it", out, err)
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if restart {
		for _, f := range []string{p.path, p.statePath} {
			if err := p.fsys.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
	}
	jr, recs, err := journal.OpenFS(p.fsys, p.statePath, 'C')
	switch {
	case errors.Is(err, os.ErrNotExist):
		// No journal: nothing was ever acked into a .part here, so any
		// .part is leftover bytes that nobody depends on.
		if p.f, err = p.fsys.OpenFile(p.path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644); err != nil {
			return nil, err
		}
		p.hash = newHasher(p.f)
		return p, nil
	case err != nil:
		return nil, fmt.Errorf("%w; pass --restart to start over", err)
	}
	p.jr = jr
	if err := p.replay(recs); err != nil {
		return nil, fmt.Errorf("%s: %w; pass --restart to start over", p.statePath, err)
	}
	if want != "" && p.b.Transfer != want {
		return nil, fmt.Errorf("%s holds part of transfer %q, not %q; pass --restart to discard it", p.path, p.b.Transfer, want)
	}
	if p.f, err = p.fsys.OpenFile(p.path, os.O_RDWR, 0o644); err != nil {
		if _, serr := p.fsys.Stat(out); serr == nil && errors.Is(err, os.ErrNotExist) {
			return nil, p.alreadyDone()
		}
		return nil, fmt.Errorf("state file %s exists but its .part does not (%w); pass --restart to start over", p.statePath, err)
	}
	p.hash = newHasher(p.f)
	p.resumed = p.asm.Received()
	return p, nil
}

// ErrAlreadyDone: --out holds the transfer the journal records; the
// previous run renamed it and crashed before it removed the journal.
var ErrAlreadyDone = errors.New("already complete")

// doneError is ErrAlreadyDone with what was proven.
type doneError struct {
	transfer, sha, msg string
	size               int64
	total              uint32
}

func (e *doneError) Error() string { return e.msg }
func (e *doneError) Unwrap() error { return ErrAlreadyDone }

// alreadyDone handles a journal whose .part is gone while --out exists:
// a crash between the rename and the journal's removal. When --out has
// the recorded size and SHA-256, the journal is removed and the transfer
// reported complete; otherwise nothing is touched and the error says so.
func (p *partFile) alreadyDone() error {
	if p.sha != "" && !p.b.raw() {
		if f, err := vfs.Open(p.fsys, p.out); err == nil {
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err == nil && n == p.b.Size && hex.EncodeToString(h.Sum(nil)) == p.sha {
				if err := p.jr.Remove(); err != nil {
					return err
				}
				p.jr = nil
				return &doneError{transfer: p.b.Transfer, sha: p.sha, size: n, total: p.b.Total,
					msg: fmt.Sprintf("%s is already complete: transfer %s, %d bytes, sha256 %s (renamed by an earlier run that stopped before removing %s)", p.out, p.b.Transfer, n, p.sha, p.statePath)}
			}
		}
	}
	return fmt.Errorf("%s already exists and %s is gone, yet %s records transfer %q: most likely an earlier run completed and renamed it just before a crash, but it cannot be proven against the digest; check %s (snapshot verify), then remove %s, or pass --restart",
		p.out, p.path, p.statePath, p.b.Transfer, p.out, p.statePath)
}

func (p *partFile) replay(recs []journal.Record) error {
	if len(recs) == 0 || recs[0].Type != recBinding {
		return errors.New("no binding record")
	}
	var b binding
	if err := json.Unmarshal(recs[0].Data, &b); err != nil {
		return fmt.Errorf("binding record: %w", err)
	}
	if err := p.newAssembler(&b); err != nil {
		return err
	}
	for _, r := range recs[1:] {
		switch r.Type {
		case recPlaced:
			f, runs, err := decodePlaced(r.Data)
			if err != nil {
				return err
			}
			if err := p.asm.Replay(f, runs); err != nil {
				return err
			}
		case recSet:
			if err := p.asm.UnmarshalBinary(r.Data); err != nil {
				return err
			}
		case recDigest:
			p.sha = string(r.Data)
		case recOffset:
			if len(r.Data) != 8 {
				return fmt.Errorf("offset record of %d bytes", len(r.Data))
			}
			p.offset = int64(binary.LittleEndian.Uint64(r.Data))
		default:
			return fmt.Errorf("unknown record type %q", r.Type)
		}
	}
	return nil
}

func (p *partFile) newAssembler(b *binding) error {
	cfg := segment.Config{Window: p.window}
	if !b.raw() {
		cfg.MSS, cfg.Size, cfg.SizeKnown, cfg.Total = b.MSS, b.Size, true, b.Total
	}
	a, err := segment.NewAssembler(p.f0(), cfg)
	if err != nil {
		return err
	}
	p.asm, p.b = a, b
	return nil
}

// f0 is the WriterAt for the assembler: the .part, opened later on resume.
func (p *partFile) f0() writerAtFunc {
	return func(b []byte, off int64) (int, error) { return p.f.WriteAt(b, off) }
}

type writerAtFunc func([]byte, int64) (int, error)

func (w writerAtFunc) WriteAt(b []byte, off int64) (int, error) { return w(b, off) }

// bound returns the binding, or nil.
func (p *partFile) bound() *binding { return p.b }

// bind records the transfer this part file is for, durably, before the
// first segment of it is placed.
func (p *partFile) bind(b binding) error {
	if p.b != nil {
		return errors.New("internal error: bound twice")
	}
	if b.Part == "" {
		b.Part = NewTransferID() // 128 random bits
	}
	js, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if err := p.newAssembler(&b); err != nil {
		return err
	}
	if p.jr, err = journal.CreateFS(p.fsys, p.statePath, 'C', journal.Record{Type: recBinding, Data: js}); err != nil {
		p.asm, p.b = nil, nil
		return fmt.Errorf("create %s: %w", p.statePath, err)
	}
	return nil
}

// place offers a segment to the assembler and, when placed, hands the
// hasher what became contiguous. buf is payload's pooled buffer, or nil.
func (p *partFile) place(h segment.Header, payload []byte, buf *[]byte) (segment.Outcome, error) {
	o, err := p.asm.Add(h, payload)
	if err != nil || o != segment.Placed {
		return o, err
	}
	if n := len(p.runs); n > 0 && p.runs[n-1].First+p.runs[n-1].N == h.Seq {
		p.runs[n-1].N++
	} else {
		p.runs = append(p.runs, segment.Run{First: h.Seq, N: 1})
	}
	p.advanceHash(h.Seq, payload, buf)
	return o, nil
}

// samePayload reports whether payload equals what was placed for seq.
func (p *partFile) samePayload(seq uint32, payload []byte) (bool, error) {
	buf := make([]byte, len(payload))
	n, err := p.f.ReadAt(buf, int64(seq)*int64(p.asm.MSS()))
	if n == len(buf) {
		err = nil
	}
	if err != nil {
		return false, err
	}
	return bytes.Equal(buf, payload), nil
}

// setDigest records the producer's SHA-256 (made durable by the next
// persist, before the segment that carried it is acked).
func (p *partFile) setDigest(sha string) {
	if p.sha == "" {
		p.sha, p.shaDirty = sha, true
	}
}

// setOffset records (with the next persist) the stream offset a resume
// reads from: everything before it must be placed, or not this transfer's.
func (p *partFile) setOffset(off int64) {
	if off != p.offset {
		p.offset, p.offDirty = off, true
	}
}

func offsetRecord(off int64) journal.Record {
	return journal.Record{Type: recOffset, Data: binary.LittleEndian.AppendUint64(nil, uint64(off))}
}

// persist makes every placed segment durable and records it. Only after
// it returns nil may their deliveries be acked.
func (p *partFile) persist() error {
	if err := p.waitSync(); err != nil {
		return err
	}
	if p.startSync() != nil {
		return p.waitSync()
	}
	return nil
}

// pendingSync is one persist running in the background: the fsync of the
// .part, then the journal records that say what it made durable. done is
// closed when it has finished; err is then its result.
type pendingSync struct {
	done chan struct{}
	err  error
}

// startSync starts persisting, in the background, everything placed so
// far, and returns it (nil: nothing to persist). Placement may go on
// meanwhile: the fsync covers every write made before it, and the journal
// records only what was placed before startSync. At most one runs at a
// time: the caller waits for it (waitSync, or its done) before the next
// startSync, and before any ack of what it covers. While it runs, only it
// touches the journal.
func (p *partFile) startSync() *pendingSync {
	if p.syncing != nil {
		panic("internal error: a persist is already running")
	}
	if p.failed != nil {
		p.syncing = &pendingSync{done: closedDone, err: p.failed}
		return p.syncing
	}
	if p.b == nil || (len(p.runs) == 0 && !p.shaDirty && !p.offDirty) {
		return nil
	}
	var recs []journal.Record
	if p.shaDirty {
		recs = append(recs, journal.Record{Type: recDigest, Data: []byte(p.sha)})
	}
	if len(p.runs) > 0 {
		recs = append(recs, journal.Record{Type: recPlaced, Data: encodePlaced(p.asm.Facts(), p.runs)})
	}
	if p.offDirty { // after the placements it covers
		recs = append(recs, offsetRecord(p.offset))
	}
	// Appends are small; rewrite the journal as one received set when
	// they outgrow it, so it never costs more than a few times the set.
	// The set is taken now: exactly what the fsync below covers.
	var rewrite []journal.Record
	grown := p.jr.Size()
	for _, r := range recs {
		grown += int64(len(r.Data)) + 16
	}
	if set := int64(p.asm.Total())/8 + 64; grown > max(4*set, 1<<20) {
		var err error
		if rewrite, err = p.compaction(); err != nil {
			p.syncing = &pendingSync{done: closedDone, err: err}
			return p.syncing
		}
	}
	p.runs, p.shaDirty, p.offDirty = p.runs[:0], false, false
	s := &pendingSync{done: make(chan struct{})}
	p.syncing = s
	f, jr, path := p.f, p.jr, p.path
	go func() {
		defer close(s.done)
		if err := f.Sync(); err != nil {
			s.err = fmt.Errorf("fsync %s: %w", path, err)
			return
		}
		if rewrite != nil {
			s.err = jr.Rewrite(rewrite...)
		} else {
			s.err = jr.Append(recs...)
		}
	}()
	return s
}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// waitSync waits for the running persist, if any, and returns its error.
// A persist that failed fails every later one: after a failed fsync the
// kernel may have dropped the dirty pages, and after a failed journal
// append what follows it would not be replayed, so nothing placed since
// may be recorded as durable, or acked, in this process.
func (p *partFile) waitSync() error {
	if s := p.syncing; s != nil {
		<-s.done
		p.syncing = nil
		if s.err != nil && p.failed == nil {
			p.failed = fmt.Errorf("%w; nothing more is recorded or acked in this run (run again to resume)", s.err)
		}
	}
	return p.failed
}

// compaction is the whole journal as one received set.
func (p *partFile) compaction() ([]journal.Record, error) {
	js, err := json.Marshal(p.b)
	if err != nil {
		return nil, err
	}
	set, err := p.asm.MarshalBinary()
	if err != nil {
		return nil, err
	}
	recs := []journal.Record{{Type: recBinding, Data: js}, {Type: recSet, Data: set}}
	if p.sha != "" {
		recs = append(recs, journal.Record{Type: recDigest, Data: []byte(p.sha)})
	}
	if p.offset >= 0 {
		recs = append(recs, offsetRecord(p.offset))
	}
	return recs, nil
}

func encodePlaced(f segment.Facts, runs []segment.Run) []byte {
	b := make([]byte, 0, 17+8*len(runs))
	b = binary.LittleEndian.AppendUint32(b, uint32(f.MSS))
	b = binary.LittleEndian.AppendUint32(b, f.Total)
	b = binary.LittleEndian.AppendUint64(b, uint64(f.Size))
	var flags byte
	if f.SizeKnown {
		flags = 1
	}
	b = append(b, flags)
	for _, r := range runs {
		b = binary.LittleEndian.AppendUint32(b, r.First)
		b = binary.LittleEndian.AppendUint32(b, r.N)
	}
	return b
}

func decodePlaced(b []byte) (segment.Facts, []segment.Run, error) {
	const fixed = 4 + 4 + 8 + 1
	if len(b) < fixed || (len(b)-fixed)%8 != 0 {
		return segment.Facts{}, nil, fmt.Errorf("placed record of %d bytes", len(b))
	}
	f := segment.Facts{
		MSS:       int(binary.LittleEndian.Uint32(b)),
		Total:     binary.LittleEndian.Uint32(b[4:]),
		Size:      int64(binary.LittleEndian.Uint64(b[8:])),
		SizeKnown: b[16]&1 != 0,
	}
	var runs []segment.Run
	for rest := b[fixed:]; len(rest) > 0; rest = rest[8:] {
		runs = append(runs, segment.Run{First: binary.LittleEndian.Uint32(rest), N: binary.LittleEndian.Uint32(rest[4:])})
	}
	return f, runs, nil
}

// advanceHash hands the hasher the part of the file that has become
// contiguous since the last call: payload (segment seq, just placed) from
// memory, the rest as ranges to read back from the .part.
func (p *partFile) advanceHash(seq uint32, payload []byte, buf *[]byte) {
	h, next := p.hash, p.asm.Next()
	if h.next >= next {
		if buf != nil {
			unpackBufs.Put(buf)
		}
		return
	}
	mss := int64(p.asm.MSS())
	from := int64(-1) // start of a range still to read back
	readBack := func(to int64) {
		if from >= 0 && to > from {
			h.add(hashJob{off: from, n: to - from})
		}
		from = -1
	}
	handed := false
	for s := h.next; s < next; s++ {
		off := int64(s) * mss
		if s == seq && payload != nil {
			readBack(off)
			h.add(hashJob{off: off, payload: payload, buf: buf})
			handed = true
		} else if from < 0 {
			from = off
		}
	}
	if !handed && buf != nil {
		unpackBufs.Put(buf)
	}
	end := int64(next) * mss
	if next == p.asm.Total() { // the last segment is placed, so the size is known
		end, _ = p.asm.Size()
	}
	readBack(end)
	h.next = next
}

// ErrNoDigest: a segmq transfer completed without the producer's SHA-256.
var ErrNoDigest = errors.New("the producer's SHA-256 never arrived")

// commit checks the assembled file against the producer's size and
// SHA-256 and, only when they match (or for a seed-format transfer, which
// has neither), puts it at out. It returns the digest and size found.
func (p *partFile) commit() (sum string, n int64, err error) {
	if err := p.waitSync(); err != nil {
		return "", 0, err
	}
	size, _ := p.asm.Size()
	if err := p.f.Truncate(size); err != nil { // a resumed .part may be longer
		return "", 0, err
	}
	p.advanceHash(0, nil, nil) // a resumed transfer may be complete without a placement
	if sum, n, err = p.hash.sum(); err != nil {
		return "", n, err
	}
	if !p.b.raw() {
		switch {
		case n != p.b.Size:
			return sum, n, fmt.Errorf("%w: size %d, producer said %d; %s kept for inspection, %s untouched", ErrDigest, n, p.b.Size, p.path, p.out)
		case p.sha == "":
			return sum, n, fmt.Errorf("%w: %w; %s kept, %s untouched", ErrDigest, ErrNoDigest, p.path, p.out)
		case sum != p.sha:
			return sum, n, fmt.Errorf("%w: sha256 %s, producer said %s; %s kept for inspection, %s untouched", ErrDigest, sum, p.sha, p.path, p.out)
		}
	}
	if err := p.f.Sync(); err != nil {
		return sum, n, err
	}
	if err := p.f.Close(); err != nil {
		return sum, n, err
	}
	p.f = nil
	if err := vfs.Commit(p.fsys, p.path, p.out); err != nil {
		return sum, n, err
	}
	p.committed = true
	if err := p.jr.Remove(); err != nil {
		p.log.Warn("remove state", "err", err)
	}
	p.jr = nil
	return sum, n, nil
}

// close releases everything; the files stay for a resume unless commit
// put the result in place.
func (p *partFile) close() {
	if err := p.waitSync(); err != nil {
		p.log.Debug("persist on the way out", "err", err)
	}
	if p.hash != nil {
		p.hash.stop()
	}
	if p.f != nil {
		p.f.Close()
		p.f = nil
		if p.b == nil {
			// Never bound: nothing was placed, nothing to resume.
			p.fsys.Remove(p.path)
		}
	}
	if p.jr != nil {
		p.jr.Close()
		p.jr = nil
	}
	if err := p.lock.Unlock(); err != nil {
		p.log.Warn("remove lock", "err", err)
	}
}
