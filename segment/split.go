package segment

import (
	"fmt"
	"io"
)

// Splitter cuts a file into segments. It reads the file through
// io.ReaderAt one segment at a time and never holds more than one payload.
// A Splitter is safe for concurrent use if its ReaderAt is.
type Splitter struct {
	r     io.ReaderAt
	size  int64
	mss   int
	total uint32
}

// NewSplitter returns a Splitter for size bytes of r cut at mss.
func NewSplitter(r io.ReaderAt, size int64, mss int) (*Splitter, error) {
	total, err := Count(size, mss)
	if err != nil {
		return nil, err
	}
	return &Splitter{r: r, size: size, mss: mss, total: total}, nil
}

// Total is the number of segments.
func (s *Splitter) Total() uint32 { return s.total }

// MSS is the maximum payload size.
func (s *Splitter) MSS() int { return s.mss }

// Size is the file size.
func (s *Splitter) Size() int64 { return s.size }

// PayloadLen is the payload length of segment seq.
func (s *Splitter) PayloadLen(seq uint32) int {
	off := int64(seq) * int64(s.mss)
	n := s.size - off
	if n > int64(s.mss) {
		n = int64(s.mss)
	}
	if n < 0 {
		n = 0
	}
	return int(n)
}

// Segment returns the message body (header and payload) of segment seq,
// built in buf's storage when it is large enough (cap(buf) >= 8+MSS avoids
// any allocation). The payload is body[HeaderSize:].
func (s *Splitter) Segment(seq uint32, buf []byte) ([]byte, error) {
	if seq >= s.total {
		return nil, fmt.Errorf("segment: seq %d out of range (total %d)", seq, s.total)
	}
	n := s.PayloadLen(seq)
	if cap(buf) < HeaderSize+n {
		buf = make([]byte, HeaderSize+s.mss)
	}
	body := buf[:HeaderSize+n]
	Header{Seq: seq, Total: s.total}.Put(body)
	off := int64(seq) * int64(s.mss)
	m, err := s.r.ReadAt(body[HeaderSize:], off)
	if m == n {
		err = nil // ReadAt may report io.EOF along with the last bytes
	} else if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // the file shrank under us
	}
	if err != nil {
		return nil, fmt.Errorf("segment: read seq %d at offset %d: %w", seq, off, err)
	}
	return body, nil
}
