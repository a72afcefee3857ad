package pg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// PostgreSQL's binary COPY stream:
//
//	"PGCOPY\n\377\r\n\0" | flags int32 | ext length int32 | ext bytes
//	tuple*: field count int16 | (length int32 (-1 = NULL) | bytes)*
//	trailer: int16 -1
//
// All integers big endian.
var copySignature = []byte("PGCOPY\n\377\r\n\x00")

const copyHeaderLen = 11 + 4 + 4

var errCopyFormat = errors.New("pg: malformed binary COPY stream")

// copyParser is an io.Writer that parses a binary COPY stream as pgconn
// hands it over (one CopyData message per Write, usually one row) and
// calls onRow for each tuple with its fields (nil = NULL) and its raw
// field bytes (the tuple without its count). Both are valid during the
// call only.
type copyParser struct {
	onRow     func(fields [][]byte, raw []byte) error
	buf       []byte
	header    bool
	done      bool
	fields    [][]byte
	maxFields int
}

func (p *copyParser) Write(b []byte) (int, error) {
	n := len(b)
	if len(p.buf) == 0 {
		used, err := p.consume(b)
		if err != nil {
			return 0, err
		}
		p.buf = append(p.buf, b[used:]...)
		return n, nil
	}
	p.buf = append(p.buf, b...)
	used, err := p.consume(p.buf)
	if err != nil {
		return 0, err
	}
	p.buf = p.buf[:copy(p.buf, p.buf[used:])]
	return n, nil
}

// consume parses whole tuples from b and returns the bytes used.
func (p *copyParser) consume(b []byte) (int, error) {
	used := 0
	if !p.header {
		if len(b) < copyHeaderLen {
			return 0, nil
		}
		if !bytes.Equal(b[:11], copySignature) {
			return 0, fmt.Errorf("%w: bad signature", errCopyFormat)
		}
		ext := int(binary.BigEndian.Uint32(b[15:19]))
		if len(b) < copyHeaderLen+ext {
			return 0, nil
		}
		used = copyHeaderLen + ext
		p.header = true
	}
	for used < len(b) {
		rest := b[used:]
		if len(rest) < 2 {
			break
		}
		nf := int(int16(binary.BigEndian.Uint16(rest)))
		if nf == -1 {
			p.done = true
			return len(b), nil
		}
		if nf < 0 || (p.maxFields > 0 && nf != p.maxFields) {
			return 0, fmt.Errorf("%w: tuple with %d fields, want %d", errCopyFormat, nf, p.maxFields)
		}
		p.fields = p.fields[:0]
		pos := 2
		complete := true
		for range nf {
			if len(rest) < pos+4 {
				complete = false
				break
			}
			l := int(int32(binary.BigEndian.Uint32(rest[pos:])))
			pos += 4
			if l == -1 {
				p.fields = append(p.fields, nil)
				continue
			}
			if l < 0 {
				return 0, fmt.Errorf("%w: field length %d", errCopyFormat, l)
			}
			if len(rest) < pos+l {
				complete = false
				break
			}
			p.fields = append(p.fields, rest[pos:pos+l:pos+l])
			pos += l
		}
		if !complete {
			break
		}
		if err := p.onRow(p.fields, rest[2:pos]); err != nil {
			return 0, err
		}
		used += pos
	}
	return used, nil
}

// check says whether the stream ended properly.
func (p *copyParser) check() error {
	if !p.done || len(p.buf) != 0 {
		return fmt.Errorf("%w: stream ended inside a tuple or without its trailer", errCopyFormat)
	}
	return nil
}

// appendCopyHeader appends the binary COPY header.
func appendCopyHeader(dst []byte) []byte {
	dst = append(dst, copySignature...)
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
}

// appendCopyTrailer appends the end-of-data marker.
func appendCopyTrailer(dst []byte) []byte { return append(dst, 0xff, 0xff) }

func appendField(dst, f []byte) []byte {
	if f == nil {
		return binary.BigEndian.AppendUint32(dst, 0xffffffff)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f)))
	return append(dst, f...)
}
