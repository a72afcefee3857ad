package snapfile

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
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

// BenchmarkVerify: snapshot verify's rate before (one goroutine,
// proto.Unmarshal for every record) and now, on 1 and 2 goroutines.
func BenchmarkVerify(b *testing.B) {
	var buf bytes.Buffer
	Gen(context.Background(), &buf, GenOptions{Rows: 200_000, Workers: 2})
	for _, c := range []struct {
		name   string
		verify func() (Summary, error)
	}{
		{"before", func() (Summary, error) {
			return verifyReference(context.Background(), bytes.NewReader(buf.Bytes()), nil)
		}},
		{"workers=1", func() (Summary, error) {
			return verify(context.Background(), bytes.NewReader(buf.Bytes()), nil, 1, batchRecords)
		}},
		{"workers=2", func() (Summary, error) {
			return verify(context.Background(), bytes.NewReader(buf.Bytes()), nil, 2, batchRecords)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(buf.Len()))
			for b.Loop() {
				if _, err := c.verify(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode is what profiling Verify pointed at: decoding every
// record with proto.Unmarshal against scanRow (proto.Unmarshal only for
// the few records that are not rows), on one goroutine.
func BenchmarkDecode(b *testing.B) {
	var buf bytes.Buffer
	Gen(context.Background(), &buf, GenOptions{Rows: 100_000, Workers: 2})
	recs := records(b, buf.Bytes())
	b.Run("proto.Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(buf.Len()))
		b.ReportAllocs()
		var rec pb.Record
		for b.Loop() {
			for _, r := range recs {
				if err := proto.Unmarshal(r, &rec); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("scanRow", func(b *testing.B) {
		b.SetBytes(int64(buf.Len()))
		b.ReportAllocs()
		var rec pb.Record
		var kinds []uint8
		for b.Loop() {
			for _, r := range recs {
				var ok bool
				if _, kinds, ok = scanRow(r, kinds[:0]); !ok {
					if err := proto.Unmarshal(r, &rec); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	})
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
