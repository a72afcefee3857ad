package segment

import (
	"bytes"
	"testing"
)

const benchMSS = 64 << 10

func BenchmarkSplit(b *testing.B) {
	data := make([]byte, 64<<20)
	s, _ := NewSplitter(bytes.NewReader(data), int64(len(data)), benchMSS)
	buf := make([]byte, HeaderSize+benchMSS)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		for seq := uint32(0); seq < s.Total(); seq++ {
			if _, err := s.Segment(seq, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkAssemble measures placement into a file-like sink that copies,
// so the figure includes one copy of every byte.
func BenchmarkAssemble(b *testing.B) {
	const size = 64 << 20
	payload := make([]byte, benchMSS)
	dst := make([]byte, size)
	total := uint32(size / benchMSS)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		a, _ := NewAssembler(sliceAt(dst), Config{MSS: benchMSS})
		for i := uint32(0); i < total; i++ {
			seq := (i * 7919) % total // a scattered order
			if _, err := a.Add(Header{Seq: seq, Total: total}, payload); err != nil {
				b.Fatal(err)
			}
		}
		if !a.Complete() {
			b.Fatal("incomplete")
		}
	}
}

type sliceAt []byte

func (s sliceAt) WriteAt(p []byte, off int64) (int, error) { return copy(s[off:], p), nil }
