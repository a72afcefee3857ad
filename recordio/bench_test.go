package recordio

import (
	"bytes"
	"context"
	"io"
	"testing"
)

const benchRecord = 100 // bytes: a typical snapshot row

func benchStream(b *testing.B, n int) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	rec := make([]byte, benchRecord)
	for range n {
		w.Write(rec)
	}
	w.Close()
	return buf.Bytes()
}

func BenchmarkWrite(b *testing.B) {
	rec := make([]byte, benchRecord)
	w := NewWriter(io.Discard)
	b.SetBytes(PrefixSize + benchRecord)
	b.ReportAllocs()
	for b.Loop() {
		w.Write(rec)
	}
	w.Flush()
}

func BenchmarkRead(b *testing.B) {
	data := benchStream(b, 1<<18)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(data))
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	}
}

// BenchmarkOrderedEncoder encodes 100-byte records with a little CPU work
// each (the cost of a proto marshal of a row), at 1 and 2 workers.
func BenchmarkOrderedEncoder(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(map[int]string{1: "workers=1", 2: "workers=2"}[workers], func(b *testing.B) {
			b.SetBytes(PrefixSize + benchRecord)
			b.ReportAllocs()
			e := NewOrderedEncoder(context.Background(), NewWriter(io.Discard), workers, 0, func(dst []byte, i int) ([]byte, error) {
				x := uint64(i)
				for range benchRecord / 8 {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					dst = append(dst, byte(x), byte(x>>8), byte(x>>16), byte(x>>24), byte(x>>32), byte(x>>40), byte(x>>48), byte(x>>56))
				}
				return append(dst, 1, 2, 3, 4), nil
			})
			i := 0
			for b.Loop() {
				e.Encode(i)
				i++
			}
			if err := e.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
