package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderSize is the size of the segment header in bytes.
const HeaderSize = 8

// Sentinel errors. Callers match them with errors.Is; the assembler wraps
// them in a *SegmentError that carries the segment's seq and total.
var (
	ErrShortBody       = errors.New("segment: body shorter than the 8-byte header")
	ErrZeroTotal       = errors.New("segment: total is 0")
	ErrSeqOutOfRange   = errors.New("segment: seq >= total")
	ErrTotalMismatch   = errors.New("segment: total differs from the transfer's (its earlier segments, or its size and MSS)")
	ErrTotalTooLarge   = errors.New("segment: total exceeds the configured limit")
	ErrPayloadTooLarge = errors.New("segment: payload longer than MSS")
	ErrShortPayload    = errors.New("segment: non-final payload shorter than MSS")
	ErrSizeMismatch    = errors.New("segment: payload disagrees with the declared file size")
	ErrBadMSS          = errors.New("segment: MSS must be at least 1")
)

// Header is the 8-byte segment header.
type Header struct {
	Seq   uint32 // position of the segment, 0-based
	Total uint32 // number of segments in the transfer, >= 1
}

// Valid reports whether the header is self-consistent: total >= 1 and
// seq < total.
func (h Header) Valid() error {
	if h.Total == 0 {
		return ErrZeroTotal
	}
	if h.Seq >= h.Total {
		return ErrSeqOutOfRange
	}
	return nil
}

// Put writes the header into b[:8]. It panics if len(b) < 8, like
// binary.LittleEndian.PutUint32.
func (h Header) Put(b []byte) {
	_ = b[7]
	binary.LittleEndian.PutUint32(b[0:4], h.Seq)
	binary.LittleEndian.PutUint32(b[4:8], h.Total)
}

// Bytes returns the encoded header.
func (h Header) Bytes() [HeaderSize]byte {
	var b [HeaderSize]byte
	h.Put(b[:])
	return b
}

// String formats the header as seq/total.
func (h Header) String() string { return fmt.Sprintf("%d/%d", h.Seq, h.Total) }

// Decode splits a message body into its header and payload. The payload
// aliases body. Decode checks only the length; use Header.Valid or the
// Assembler for the values, which are untrusted input.
func Decode(body []byte) (Header, []byte, error) {
	if len(body) < HeaderSize {
		return Header{}, nil, fmt.Errorf("%w: %d bytes", ErrShortBody, len(body))
	}
	h := Header{
		Seq:   binary.LittleEndian.Uint32(body[0:4]),
		Total: binary.LittleEndian.Uint32(body[4:8]),
	}
	return h, body[HeaderSize:], nil
}

// Limits shared by both ends of a transfer. The producer refuses, before
// its first publish, a file it could only send past them; the consumer
// dead-letters a segment whose headers claim more. One set, so a transfer
// the producer sends is one the consumer can take.
const (
	// MaxTotal bounds the segments of one transfer: 2^27 segments is a
	// 16 MiB received set, 8 TiB at the default MSS of 64 KiB.
	MaxTotal = 1 << 27
	// MaxMSS bounds a payload so that a whole message (header, payload
	// and properties) fits RabbitMQ 4's default max_message_size of
	// 16 MiB. It also bounds what one segment makes the consumer allocate.
	MaxMSS = 16<<20 - HeaderSize - 64<<10
)

// Count returns the number of segments segmq's splitter makes of a file of
// size bytes: ceil(size/mss), and 1 for an empty file. It fails when that
// is more than MaxTotal.
func Count(size int64, mss int) (uint32, error) {
	if mss < 1 {
		return 0, ErrBadMSS
	}
	if size < 0 {
		return 0, fmt.Errorf("segment: negative size %d", size)
	}
	if size == 0 {
		return 1, nil
	}
	n := (size + int64(mss) - 1) / int64(mss)
	if n > MaxTotal {
		return 0, fmt.Errorf("%w: %d bytes at MSS %d need %d segments (max %d); use an MSS of at least %d",
			ErrTotalTooLarge, size, mss, n, MaxTotal, (size+MaxTotal-1)/MaxTotal)
	}
	return uint32(n), nil
}
