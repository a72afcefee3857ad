package pg

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

func copyStream(rows [][][]byte) []byte {
	b := appendCopyHeader(nil)
	for _, r := range rows {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		for _, f := range r {
			b = appendField(b, f)
		}
	}
	return appendCopyTrailer(b)
}

// TestCopyParserSplits feeds a stream in pieces of every size: the rows
// come out the same however pgconn cuts its messages.
func TestCopyParserSplits(t *testing.T) {
	rows := [][][]byte{{[]byte("a"), nil, {}}, {bytes.Repeat([]byte{7}, 300), []byte("x"), nil}, {nil, nil, nil}}
	stream := copyStream(rows)
	want := fmt.Sprint(rows)
	for size := 1; size <= len(stream); size++ {
		var got [][][]byte
		p := &copyParser{maxFields: 3, onRow: func(fields [][]byte, _ []byte) error {
			r := make([][]byte, len(fields))
			for i, f := range fields {
				if f != nil {
					r[i] = append([]byte{}, f...)
				}
			}
			got = append(got, r)
			return nil
		}}
		for off := 0; off < len(stream); off += size {
			if _, err := p.Write(stream[off:min(off+size, len(stream))]); err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
		}
		if err := p.check(); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if fmt.Sprint(got) != want {
			t.Fatalf("size %d: rows %v, want %v", size, got, rows)
		}
		for i := range got {
			if (got[i][1] == nil) != (rows[i][1] == nil) || (got[i][2] == nil) != (rows[i][2] == nil) {
				t.Fatalf("size %d: NULL and empty mixed up in row %d", size, i)
			}
		}
	}
	// A cut stream is an error at the end.
	p := &copyParser{maxFields: 3, onRow: func([][]byte, []byte) error { return nil }}
	p.Write(stream[:len(stream)-5])
	if p.check() == nil {
		t.Fatal("a cut stream checked out")
	}
}

func FuzzCopyParser(f *testing.F) {
	f.Add(copyStream([][][]byte{{[]byte("a"), nil}}), uint8(3))
	f.Add([]byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\xff\xff\xff\xff"), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8) {
		p := &copyParser{maxFields: 2, onRow: func(fields [][]byte, raw []byte) error {
			if len(fields) != 2 {
				t.Fatalf("%d fields", len(fields))
			}
			return nil
		}}
		r := rand.New(rand.NewPCG(uint64(cut), 1))
		for len(b) > 0 {
			n := 1 + r.IntN(len(b))
			if _, err := p.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		p.check()
	})
}
