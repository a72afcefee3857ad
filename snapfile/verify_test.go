package snapfile

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
)

// outcome is what a caller of Verify can see: the summary and the error,
// with its offset, record index and detail.
func outcome(sum Summary, err error) string { return fmt.Sprintf("%+v | %v", sum, err) }

// sameAsReference checks the parallel Verify against the single-pass one
// it replaced, at several worker counts and batch sizes (small batches put
// a boundary between almost any two records).
func sameAsReference(t testing.TB, data []byte) {
	t.Helper()
	want := outcome(verifyReference(context.Background(), bytes.NewReader(data), nil))
	for _, c := range []struct{ workers, per int }{{1, batchRecords}, {2, 1}, {3, 7}, {4, batchRecords}} {
		got := outcome(verify(context.Background(), bytes.NewReader(data), nil, c.workers, c.per))
		if got != want {
			t.Fatalf("workers=%d per=%d:\n got %s\nwant %s", c.workers, c.per, got, want)
		}
	}
}

// frame writes records as a snapshot file.
func frame(t testing.TB, recs ...[]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := recordio.NewWriter(&buf)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func records(t testing.TB, data []byte) [][]byte {
	t.Helper()
	rr := recordio.NewReader(bytes.NewReader(data))
	var out [][]byte
	for {
		b, err := rr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), b...))
	}
}

// rowRecord hand-encodes a Record{row: Row{...}} from raw Row bytes.
func rowRecord(row []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), row)
}

// nonCanonical are encodings proto.Unmarshal accepts (or refuses) that
// scanRow leaves to it: each must get proto.Unmarshal's verdict.
func nonCanonical() map[string][]byte {
	tag := protowire.AppendTag
	val := func(v []byte) []byte { return protowire.AppendBytes(tag(nil, 2, protowire.BytesType), v) }
	int64v := protowire.AppendVarint(tag(nil, 2, protowire.VarintType), 7)
	textv := func(s string) []byte { return protowire.AppendString(tag(nil, 4, protowire.BytesType), s) }
	id := func(n uint64) []byte { return protowire.AppendVarint(tag(nil, 1, protowire.VarintType), n) }
	cat := func(bs ...[]byte) []byte { return slices.Concat(bs...) }
	return map[string][]byte{
		"unknown field in row":       rowRecord(cat(id(1), val(int64v), protowire.AppendVarint(tag(nil, 9, protowire.VarintType), 1))),
		"table id twice":             rowRecord(cat(id(2), id(1), val(int64v))),
		"table id as bytes":          rowRecord(cat(protowire.AppendBytes(tag(nil, 1, protowire.BytesType), []byte{1}), val(int64v))),
		"value with two kinds":       rowRecord(cat(id(1), val(cat(textv("x"), int64v)))),
		"empty value":                rowRecord(cat(id(1), val(nil))),
		"int64 as fixed64":           rowRecord(cat(id(1), val(protowire.AppendFixed64(tag(nil, 2, protowire.Fixed64Type), 7)))),
		"invalid UTF-8 text":         rowRecord(cat(id(1), val(textv("\xff\xfe")))),
		"overlong varint":            rowRecord(cat(tag(nil, 1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 9), []byte{0x7f}, val(int64v))),
		"truncated value":            rowRecord(cat(id(1), protowire.AppendVarint(tag(nil, 2, protowire.BytesType), 5), []byte{0x10})),
		"row twice":                  cat(rowRecord(cat(id(1), val(int64v))), rowRecord(cat(id(1), val(int64v)))),
		"row then unknown":           cat(rowRecord(cat(id(1), val(int64v))), protowire.AppendVarint(tag(nil, 15, protowire.VarintType), 3)),
		"field number zero in value": rowRecord(cat(id(1), val([]byte{0x00, 0x01}))),
		"group in row":               rowRecord(cat(id(1), tag(nil, 5, protowire.StartGroupType), tag(nil, 5, protowire.EndGroupType), val(int64v))),
	}
}

// TestVerifyMatchesReference: the parallel Verify gives the single-pass
// Verify's summary, verdict, offset, record index and detail on a valid
// file, on every non-canonical row encoding, and on a hundred corrupted
// copies of a file.
func TestVerifyMatchesReference(t *testing.T) {
	data := gen(t, 300, 2, 11)
	sameAsReference(t, data)
	recs := records(t, data)
	// A table (id 1) with one INT64 column for the hand-made rows.
	header := marshalRec(t, &pb.Record{Kind: &pb.Record_Header{Header: &pb.Header{FormatVersion: 1}}})
	table := marshalRec(t, &pb.Record{Kind: &pb.Record_Table{Table: &pb.Table{Id: 1, Name: "t", Columns: []*pb.Column{{Name: "a", Type: pb.ColumnType_COLUMN_TYPE_INT64}}}}})
	trailer := marshalRec(t, &pb.Record{Kind: &pb.Record_Trailer{Trailer: &pb.Trailer{TotalRows: 1, Tables: []*pb.TableCount{{TableId: 1, Rows: 1}}}}})
	for name, row := range nonCanonical() {
		t.Run(name, func(t *testing.T) {
			sameAsReference(t, frame(t, header, table, row, trailer))
			// and in the middle of a generated file
			sameAsReference(t, frame(t, slices.Concat(recs[:100], [][]byte{row}, recs[100:])...))
		})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 120 {
		bad := append([]byte(nil), data...)
		switch i % 3 {
		case 0: // flip a byte
			bad[rng.IntN(len(bad))] ^= byte(1 + rng.IntN(255))
		case 1: // cut
			bad = bad[:rng.IntN(len(bad))]
		case 2: // a record moved
			j, k := rng.IntN(len(recs)), rng.IntN(len(recs))
			moved := slices.Clone(recs)
			r := moved[j]
			moved = slices.Insert(slices.Delete(moved, j, j+1), min(k, len(moved)-1), r)
			bad = frame(t, moved...)
		}
		sameAsReference(t, bad)
	}
}

// TestVerifyCancel: a cancelled context stops Verify with its error.
func TestVerifyCancel(t *testing.T) {
	data := gen(t, 20_000, 2, 1)
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := verify(ctx, bytes.NewReader(data), func(int64) {
		if calls++; calls == 2 {
			cancel()
		}
	}, 2, 100)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// TestVerifyProgress: progress rises to the file's size.
func TestVerifyProgress(t *testing.T) {
	data := gen(t, 5000, 2, 1)
	var seen []int64
	if _, err := verify(context.Background(), bytes.NewReader(data), func(n int64) { seen = append(seen, n) }, 2, 500); err != nil {
		t.Fatal(err)
	}
	if len(seen) < 2 || !slices.IsSorted(seen) || seen[len(seen)-1] != int64(len(data)) {
		t.Fatalf("progress %v, want rising to %d", seen, len(data))
	}
}

// FuzzScanRow: whatever scanRow accepts, proto.Unmarshal decodes to a Row
// with the same table id and value kinds.
func FuzzScanRow(f *testing.F) {
	for _, r := range records(f, gen(f, 20, 1, 3)) {
		f.Add(r)
	}
	for _, r := range nonCanonical() {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		table, kinds, ok := scanRow(b, nil)
		if !ok {
			return
		}
		var rec pb.Record
		if err := proto.Unmarshal(b, &rec); err != nil {
			t.Fatalf("scanRow accepted what proto.Unmarshal refuses: %v", err)
		}
		row := rec.GetRow()
		if row == nil {
			t.Fatalf("scanRow accepted a %T", rec.Kind)
		}
		if got := appendKinds(nil, row); row.GetTableId() != table || !bytes.Equal(got, kinds) {
			t.Fatalf("scanRow: table %d kinds %v; proto.Unmarshal: table %d kinds %v", table, kinds, row.GetTableId(), got)
		}
	})
}

// FuzzVerify: on any input the parallel Verify and the single-pass one
// agree. Goroutine scheduling makes coverage vary from run to run, so the
// engine keeps finding "new" inputs and minimizing them; TestMain (main_test.go)
// therefore makes the package's default -fuzzminimizetime 10x:
//
//	go test -run '^$' -fuzz FuzzVerify -fuzztime 60s ./snapfile
func FuzzVerify(f *testing.F) {
	data := gen(f, 30, 1, 3)
	f.Add(data)
	f.Add(data[:len(data)/2])
	bad := append([]byte(nil), data...)
	binary.LittleEndian.PutUint32(bad[len(bad)-20:], 3)
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) { sameAsReference(t, b) })
}

// TestVerifyLargeRecords: records larger than a batch (a multi-MiB BYTES
// value) are checked like any other.
func TestVerifyLargeRecords(t *testing.T) {
	header := marshalRec(t, &pb.Record{Kind: &pb.Record_Header{Header: &pb.Header{FormatVersion: 1}}})
	table := marshalRec(t, &pb.Record{Kind: &pb.Record_Table{Table: &pb.Table{Id: 1, Name: "blobs", Columns: []*pb.Column{{Name: "b", Type: pb.ColumnType_COLUMN_TYPE_BYTES}}}}})
	var recs [][]byte
	recs = append(recs, header, table)
	for i := range 3 {
		v := bytes.Repeat([]byte{byte(i)}, (3+i)<<20)
		recs = append(recs, marshalRec(t, &pb.Record{Kind: &pb.Record_Row{Row: &pb.Row{TableId: 1, Values: []*pb.Value{{Kind: &pb.Value_Bytes{Bytes: v}}}}}}))
	}
	recs = append(recs, marshalRec(t, &pb.Record{Kind: &pb.Record_Trailer{Trailer: &pb.Trailer{TotalRows: 3, Tables: []*pb.TableCount{{TableId: 1, Rows: 3}}}}}))
	data := frame(t, recs...)
	sum, err := Verify(context.Background(), bytes.NewReader(data), nil)
	if err != nil || sum.Rows != 3 || sum.Bytes != int64(len(data)) {
		t.Fatalf("summary %+v, err %v", sum, err)
	}
	sameAsReference(t, data[:len(data)-1000]) // cut inside the last row
}
