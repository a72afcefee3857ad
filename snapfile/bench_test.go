package snapfile

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"testing"
)

// BenchmarkGen reports rows/s of snapshot generation (build, marshal,
// frame, write in order) at 1 and 2 workers.
func BenchmarkGen(b *testing.B) {
	const rows = 200_000
	for _, workers := range []int{1, 2} {
		b.Run("workers="+strconv.Itoa(workers), func(b *testing.B) {
			var n int64
			for b.Loop() {
				st, err := Gen(context.Background(), io.Discard, GenOptions{Rows: rows, Workers: workers, Seed: 1})
				if err != nil {
					b.Fatal(err)
				}
				n = st.Bytes
			}
			b.SetBytes(n)
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	var buf bytes.Buffer
	Gen(context.Background(), &buf, GenOptions{Rows: 200_000, Workers: 2})
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, err := Verify(context.Background(), bytes.NewReader(buf.Bytes()), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	var buf bytes.Buffer
	Gen(context.Background(), &buf, GenOptions{Rows: 200_000, Workers: 2})
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, _, err := Check(bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}
