package recordio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// PrefixSize is the size of a record's length prefix.
const PrefixSize = 4

// DefaultMaxRecordSize is the largest record a Reader or Writer accepts
// unless told otherwise: 64 MiB.
const DefaultMaxRecordSize = 64 << 20

var (
	// ErrTooLarge: a record's length exceeds the limit.
	ErrTooLarge = errors.New("recordio: record larger than the limit")
)

// CorruptError reports a problem with the record that starts at Offset.
type CorruptError struct {
	Offset int64 // byte offset of the record's length prefix
	Err    error // ErrTooLarge, io.ErrUnexpectedEOF, or a read error
	Detail string
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("recordio: record at offset %d: %v", e.Offset, e.Err)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Writer writes length-prefixed records to an io.Writer through a buffer.
// Errors are sticky.
type Writer struct {
	bw  *bufio.Writer
	pfx [PrefixSize]byte // scratch, so the prefix does not escape per call
	max int
	off int64
	n   int64
	err error
}

// NewWriter returns a Writer with a 1 MiB buffer.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 1<<20), max: DefaultMaxRecordSize}
}

// SetMaxSize sets the largest record Write accepts.
func (w *Writer) SetMaxSize(n int) { w.max = n }

// Write writes one record.
func (w *Writer) Write(rec []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(rec) > w.max {
		return &CorruptError{Offset: w.off, Err: ErrTooLarge, Detail: fmt.Sprintf("%d > %d bytes", len(rec), w.max)}
	}
	binary.LittleEndian.PutUint32(w.pfx[:], uint32(len(rec)))
	if _, err := w.bw.Write(w.pfx[:]); err != nil {
		w.err = err
		return err
	}
	if _, err := w.bw.Write(rec); err != nil {
		w.err = err
		return err
	}
	w.off += PrefixSize + int64(len(rec))
	w.n++
	return nil
}

// writeFramed writes bytes that already hold n complete framed records.
func (w *Writer) writeFramed(p []byte, n int) error {
	if w.err != nil {
		return w.err
	}
	if _, err := w.bw.Write(p); err != nil {
		w.err = err
		return err
	}
	w.off += int64(len(p))
	w.n += int64(n)
	return nil
}

// Offset is the number of bytes written so far (buffered or not).
func (w *Writer) Offset() int64 { return w.off }

// Count is the number of records written.
func (w *Writer) Count() int64 { return w.n }

// Flush writes buffered data to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	w.err = w.bw.Flush()
	return w.err
}

// Close flushes. It does not close the underlying writer.
func (w *Writer) Close() error { return w.Flush() }

// Reader reads length-prefixed records from an io.Reader through a buffer.
type Reader struct {
	br  *bufio.Reader
	max int
	off int64
	buf []byte
	err error
}

const readBufSize = 1 << 20

// NewReader returns a Reader with a 1 MiB buffer.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readBufSize), max: DefaultMaxRecordSize}
}

// SetMaxSize sets the largest record Next accepts.
func (r *Reader) SetMaxSize(n int) { r.max = n }

// Offset is the byte offset of the next record (after a successful Next,
// the end of the record it returned).
func (r *Reader) Offset() int64 { return r.off }

// Next returns the next record. The slice is valid until the next call. It
// returns io.EOF at a clean end of stream and a *CorruptError otherwise.
// Errors are sticky.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return rec, nil
}

func (r *Reader) next() ([]byte, error) {
	start := r.off
	p, err := r.br.Peek(PrefixSize)
	if err != nil {
		if err == io.EOF && len(p) == 0 {
			return nil, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, &CorruptError{Offset: start, Err: err, Detail: fmt.Sprintf("%d of 4 length bytes", len(p))}
	}
	n := int(binary.LittleEndian.Uint32(p))
	if uint64(binary.LittleEndian.Uint32(p)) > uint64(r.max) {
		return nil, &CorruptError{Offset: start, Err: ErrTooLarge, Detail: fmt.Sprintf("length %d > limit %d", binary.LittleEndian.Uint32(p), r.max)}
	}
	r.br.Discard(PrefixSize)
	if n <= readBufSize-PrefixSize {
		// Fast path: the record fits the buffer; hand out a view of it.
		rec, err := r.br.Peek(n)
		if err != nil {
			return nil, r.torn(start, n, len(rec), err)
		}
		r.br.Discard(n)
		r.off += PrefixSize + int64(n)
		return rec, nil
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	rec := r.buf[:n]
	if m, err := io.ReadFull(r.br, rec); err != nil {
		return nil, r.torn(start, n, m, err)
	}
	r.off += PrefixSize + int64(n)
	return rec, nil
}

func (r *Reader) torn(start int64, want, got int, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &CorruptError{Offset: start, Err: err, Detail: fmt.Sprintf("record of %d bytes, stream ends after %d", want, got)}
}
