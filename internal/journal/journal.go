// Package journal is the one state-file format of segmq's producer and
// consumer: a versioned header, then an append-only log of CRC'd records,
// fsynced on every append. It plays the part etcd's WAL plays for etcd:
// what was appended and synced is there after a crash; a torn tail (a
// record cut short, or whose CRC fails, by a crash mid-append) ends the
// log and is cut off on open.
//
//	file header (16 bytes):
//	  offset 0        8    9    10   12       16
//	         | magic  | v  |kind| 0  | crc32c |
//	           "SGMQJRNL"  u8   u8   u16  of bytes 0..11
//	record:
//	         | len u32 LE | crc32c u32 LE | type u8 | data (len-1 bytes) |
//	           len = 1+len(data); crc32c (Castagnoli) of type and data
//
// A journal only grows by appends of small records; when it has grown
// enough, its owner rewrites it whole (Rewrite: a new file, fsynced,
// renamed over the old one, the directory fsynced) with one record that
// sums up the rest.
package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/segmq/segmq/internal/vfs"
)

const (
	magic      = "SGMQJRNL"
	version    = 1
	headerSize = 16
	// MaxRecord bounds one record, so a corrupt length cannot allocate
	// more: the largest record segmq writes is a received-set bitmap of
	// at most 16 MiB.
	MaxRecord = 32 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors. Open wraps them with the path.
var (
	ErrOldFormat = errors.New("journal: state file written by an older segmq (not a journal)")
	ErrCorrupt   = errors.New("journal: corrupt state file")
	ErrKind      = errors.New("journal: state file belongs to the other command")
)

// Record is one entry.
type Record struct {
	Type byte
	Data []byte
}

// Journal is an open state file, positioned for appends.
type Journal struct {
	fsys vfs.FS
	path string
	kind byte
	f    vfs.File
	size int64
	err  error // the first failed Append: every later one returns it
}

func fileHeader(kind byte) []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	b[8], b[9] = version, kind
	binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b[:12], castagnoli))
	return b
}

func appendRecord(b []byte, r Record) []byte {
	n := 1 + len(r.Data)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	crc := crc32.Update(crc32.Checksum([]byte{r.Type}, castagnoli), castagnoli, r.Data)
	b = binary.LittleEndian.AppendUint32(b, crc)
	b = append(b, r.Type)
	return append(b, r.Data...)
}

// Create writes a new journal holding recs at path, atomically (the old
// file, if any, stays whole until the new one is durable), and opens it
// for appends.
func Create(path string, kind byte, recs ...Record) (*Journal, error) {
	return CreateFS(vfs.OS, path, kind, recs...)
}

// CreateFS is Create on fsys.
func CreateFS(fsys vfs.FS, path string, kind byte, recs ...Record) (*Journal, error) {
	b := fileHeader(kind)
	for _, r := range recs {
		if len(r.Data)+1 > MaxRecord {
			return nil, fmt.Errorf("journal: record of %d bytes over the limit", len(r.Data))
		}
		b = appendRecord(b, r)
	}
	if err := vfs.WriteAtomic(fsys, path, func(f vfs.File) error { _, err := f.Write(b); return err }); err != nil {
		return nil, err
	}
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	return &Journal{fsys: fsys, path: path, kind: kind, f: f, size: int64(len(b))}, nil
}

// Open reads the journal at path and returns its records, cutting off a
// torn tail, and leaves it open for appends. A missing file gives an
// error that matches os.ErrNotExist.
func Open(path string, kind byte) (*Journal, []Record, error) {
	return OpenFS(vfs.OS, path, kind)
}

// OpenFS is Open on fsys.
func OpenFS(fsys vfs.FS, path string, kind byte) (*Journal, []Record, error) {
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	recs, end, err := read(f, kind)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != end {
		// A crash cut the last append short: drop it, as if never made.
		if err = f.Truncate(end); err == nil {
			err = f.Sync()
		}
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return &Journal{fsys: fsys, path: path, kind: kind, f: f, size: end}, recs, nil
}

// Read returns the records of the journal at path without opening it for
// appends (nothing is truncated).
func Read(path string, kind byte) ([]Record, error) { return ReadFS(vfs.OS, path, kind) }

// ReadFS is Read on fsys.
func ReadFS(fsys vfs.FS, path string, kind byte) ([]Record, error) {
	f, err := vfs.Open(fsys, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, _, err := read(f, kind)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

func read(f vfs.File, kind byte) ([]Record, int64, error) {
	raw, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, err
	}
	if len(raw) < headerSize || string(raw[:8]) != magic {
		if len(raw) > 0 && (bytes.HasPrefix(raw, []byte("SGMQSTATE")) || raw[0] == '{') {
			return nil, 0, ErrOldFormat
		}
		return nil, 0, ErrCorrupt
	}
	if binary.LittleEndian.Uint32(raw[12:]) != crc32.Checksum(raw[:12], castagnoli) || raw[8] != version {
		return nil, 0, fmt.Errorf("%w (version %d)", ErrCorrupt, raw[8])
	}
	if raw[9] != kind {
		return nil, 0, fmt.Errorf("%w: kind %q, want %q", ErrKind, raw[9], kind)
	}
	var recs []Record
	off := headerSize
	for off < len(raw) {
		if off+8 > len(raw) {
			break // torn: the last append was cut inside a record header
		}
		n := int(binary.LittleEndian.Uint32(raw[off:]))
		crc := binary.LittleEndian.Uint32(raw[off+4:])
		if n < 1 || n > MaxRecord || off+8+n > len(raw) {
			break // torn: the record runs past the end of the file
		}
		body := raw[off+8 : off+8+n]
		if crc32.Checksum(body, castagnoli) != crc {
			// A crash can only tear what was appended last. A bad
			// record with more after it is damage, not a torn tail:
			// dropping it, and all that follows, would forget durable
			// (and acked) state without a word.
			if rest := len(raw) - (off + 8 + n); rest > 0 && validRecordAt(raw, off+8+n) {
				return nil, 0, fmt.Errorf("%w: the record at offset %d fails its CRC-32C and %d bytes of records follow it", ErrCorrupt, off, rest)
			}
			break
		}
		recs = append(recs, Record{Type: body[0], Data: body[1:]})
		off += 8 + n
	}
	return recs, int64(off), nil
}

// validRecordAt reports whether a whole record with a good CRC starts at
// off: the sign that a bad record before it is not the torn tail.
func validRecordAt(raw []byte, off int) bool {
	if off+8 > len(raw) {
		return false
	}
	n := int(binary.LittleEndian.Uint32(raw[off:]))
	if n < 1 || n > MaxRecord || off+8+n > len(raw) {
		return false
	}
	return crc32.Checksum(raw[off+8:off+8+n], castagnoli) == binary.LittleEndian.Uint32(raw[off+4:])
}

// Append writes recs at the end and fsyncs: once it returns nil they
// survive a crash. A failed Append may leave part of a record behind
// (a short write on a full disk), and replay stops at the first bad
// record: so after one failure every later Append fails too, with the
// same error, rather than write records no replay would read.
// Rewrite starts a new file and clears it.
func (j *Journal) Append(recs ...Record) error {
	if err := j.Write(recs...); err != nil {
		return err
	}
	if err := j.f.Sync(); err != nil {
		j.err = fmt.Errorf("fsync %s: %w", j.path, err)
		return j.err
	}
	return nil
}

// Write is Append without the fsync: its records survive the process
// being killed (they are in the page cache), not a crash of the machine.
// Errors are sticky as Append's.
func (j *Journal) Write(recs ...Record) error {
	if j.err != nil {
		return j.err
	}
	var b []byte
	for _, r := range recs {
		if len(r.Data)+1 > MaxRecord {
			return fmt.Errorf("journal: record of %d bytes over the limit", len(r.Data))
		}
		b = appendRecord(b, r)
	}
	if _, err := j.f.Write(b); err != nil {
		j.err = fmt.Errorf("append to %s: %w", j.path, err)
		return j.err
	}
	j.size += int64(len(b))
	return nil
}

// Size is the journal's length in bytes.
func (j *Journal) Size() int64 { return j.size }

// Rewrite replaces the whole journal with recs, atomically.
func (j *Journal) Rewrite(recs ...Record) error {
	nj, err := CreateFS(j.fsys, j.path, j.kind, recs...)
	if err != nil {
		return err
	}
	j.f.Close()
	*j = *nj
	return nil
}

// Close closes the file; the journal stays on disk.
func (j *Journal) Close() error { return j.f.Close() }

// Remove deletes the journal and closes it.
func (j *Journal) Remove() error {
	j.f.Close()
	return vfs.RemoveDurably(j.fsys, j.path)
}
