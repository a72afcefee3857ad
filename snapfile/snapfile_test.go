package snapfile

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func gen(t testing.TB, rows int64, workers int, seed uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	st, err := Gen(context.Background(), &buf, GenOptions{Rows: rows, Workers: workers, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(buf.Len()) || st.Records != rows+5 {
		t.Fatalf("stats %+v for %d bytes", st, buf.Len())
	}
	return buf.Bytes()
}

func TestGenDeterministicAcrossWorkers(t *testing.T) {
	one := gen(t, 30_001, 1, 7)
	for _, w := range []int{2, 4} {
		if !bytes.Equal(gen(t, 30_001, w, 7), one) {
			t.Fatalf("workers=%d differs from workers=1", w)
		}
	}
	if bytes.Equal(gen(t, 30_001, 1, 8), one) {
		t.Fatal("another seed gave the same bytes")
	}
}

// TestGenRowsDistinct: no two rows are the same record (the ancestor's
// parallel writer hid lost ordering behind identical records).
func TestGenRowsDistinct(t *testing.T) {
	data := gen(t, 20_000, 2, 1)
	r := recordio.NewReader(bytes.NewReader(data))
	seen := map[string]bool{}
	for {
		b, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(b)] {
			t.Fatalf("duplicate record at offset %d", r.Offset())
		}
		seen[string(b)] = true
	}
	if len(seen) != 20_005 {
		t.Fatalf("%d distinct records, want 20005", len(seen))
	}
}

func TestVerifyAccepts(t *testing.T) {
	for _, rows := range []int64{0, 1, 10, 5000} {
		data := gen(t, rows, 2, 3)
		sum, err := Verify(context.Background(), bytes.NewReader(data), nil)
		if err != nil {
			t.Fatalf("rows=%d: %v", rows, err)
		}
		if sum.Rows != rows || sum.Tables != 3 || sum.Bytes != int64(len(data)) || sum.Records != rows+5 {
			t.Fatalf("rows=%d: summary %+v", rows, sum)
		}
		if _, _, err := Check(bytes.NewReader(data)); err != nil {
			t.Fatalf("Check rows=%d: %v", rows, err)
		}
	}
}

// TestVerifyRejectsCut cuts a snapshot at every byte: each cut is
// rejected, with the offset of the torn record or of the end of the file
// when the cut falls on a record boundary (no trailer).
func TestVerifyRejectsCut(t *testing.T) {
	data := gen(t, 40, 1, 5)
	bounds := map[int]bool{}
	for off := 0; off < len(data); {
		bounds[off] = true
		off += 4 + int(binary.LittleEndian.Uint32(data[off:]))
	}
	for cut := 0; cut < len(data); cut++ {
		for name, check := range map[string]func() error{
			"verify": func() error { _, err := Verify(context.Background(), bytes.NewReader(data[:cut]), nil); return err },
			"check":  func() error { _, _, err := Check(bytes.NewReader(data[:cut])); return err },
		} {
			err := check()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%s cut %d: err = %v, want *Error", name, cut, err)
			}
			switch {
			case cut == 0:
				if !errors.Is(err, ErrNoHeader) {
					t.Fatalf("%s empty: %v", name, err)
				}
			case bounds[cut]:
				if !errors.Is(err, ErrNoTrailer) || e.Offset != int64(cut) {
					t.Fatalf("%s cut %d at a boundary: %v", name, cut, err)
				}
			default:
				start := cut
				for !bounds[start] {
					start--
				}
				if !errors.Is(err, io.ErrUnexpectedEOF) || e.Offset != int64(start) {
					t.Fatalf("%s cut %d: %v, want unexpected EOF at %d", name, cut, err, start)
				}
			}
		}
	}
}

func TestVerifyRejectsHugeLength(t *testing.T) {
	data := gen(t, 10, 1, 5)
	// Put the bogus prefix at a record boundary: after the header record.
	hdr := 4 + int(binary.LittleEndian.Uint32(data))
	bad := append(binary.LittleEndian.AppendUint32(append([]byte(nil), data[:hdr]...), 0xFFFFFFFF), data[hdr:]...)
	_, err := Verify(context.Background(), bytes.NewReader(bad), nil)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, recordio.ErrTooLarge) || e.Offset != int64(hdr) {
		t.Fatalf("err = %v, want ErrTooLarge at %d", err, hdr)
	}
}

func marshalRec(t testing.TB, m *pb.Record) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyRejectsBadStructure(t *testing.T) {
	header := &pb.Record{Kind: &pb.Record_Header{Header: &pb.Header{FormatVersion: 1}}}
	table := &pb.Record{Kind: &pb.Record_Table{Table: &pb.Table{Id: 1, Name: "t", Columns: []*pb.Column{{Name: "a", Type: pb.ColumnType_COLUMN_TYPE_INT64}}}}}
	row := func(v *pb.Value) *pb.Record {
		return &pb.Record{Kind: &pb.Record_Row{Row: &pb.Row{TableId: 1, Values: []*pb.Value{v}}}}
	}
	good := row(&pb.Value{Kind: &pb.Value_Int64{Int64: 1}})
	trailer := func(n uint64) *pb.Record {
		return &pb.Record{Kind: &pb.Record_Trailer{Trailer: &pb.Trailer{TotalRows: n, Tables: []*pb.TableCount{{TableId: 1, Rows: n}}}}}
	}
	for _, tc := range []struct {
		name string
		recs []*pb.Record
		want error
	}{
		{"ok", []*pb.Record{header, table, good, trailer(1)}, nil},
		{"no header", []*pb.Record{table, good, trailer(1)}, ErrNoHeader},
		{"unknown table", []*pb.Record{header, good, trailer(1)}, ErrUnknownTable},
		{"wrong type", []*pb.Record{header, table, row(&pb.Value{Kind: &pb.Value_Text{Text: "x"}}), trailer(1)}, ErrTypeMismatch},
		{"null in not null", []*pb.Record{header, table, row(&pb.Value{Kind: &pb.Value_Null{}}), trailer(1)}, ErrTypeMismatch},
		{"count mismatch", []*pb.Record{header, table, good, good, trailer(1)}, ErrCountMismatch},
		{"after trailer", []*pb.Record{header, table, good, trailer(1), good}, ErrAfterTrailer},
		{"no trailer", []*pb.Record{header, table, good}, ErrNoTrailer},
		{"duplicate table", []*pb.Record{header, table, table, trailer(0)}, ErrDuplicateTbl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := recordio.NewWriter(&buf)
			for _, m := range tc.recs {
				w.Write(marshalRec(t, m))
			}
			w.Close()
			_, err := Verify(context.Background(), &buf, nil)
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	var buf bytes.Buffer
	w := recordio.NewWriter(&buf)
	w.Write(marshalRec(t, header))
	w.Write([]byte{0xff, 0xff, 0xff})
	w.Close()
	if _, err := Verify(context.Background(), &buf, nil); !errors.Is(err, ErrDecode) {
		t.Fatalf("garbage record: %v", err)
	}
}

// TestGolden pins the bytes of a small generated snapshot and its JSON
// form: a change to the generator or schema that changes them is seen.
func TestGolden(t *testing.T) {
	data := gen(t, 20, 2, 42)
	path := filepath.Join("testdata", "small.snap")
	if *update {
		os.WriteFile(path, data, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want) {
		t.Fatalf("generated %d bytes differ from golden %s (%d bytes); run go test -update if intended", len(data), path, len(want))
	}
	var out strings.Builder
	n, err := Cat(bytes.NewReader(data), &out)
	if err != nil || n != 25 {
		t.Fatalf("Cat: %d records, %v", n, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 25 || !strings.Contains(lines[0], `"header"`) || !strings.Contains(lines[24], `"trailer"`) || !strings.Contains(lines[1], "public.customers") {
		t.Fatalf("Cat output:\n%s", out.String())
	}
}

// TestGenLowEntropy: the low-entropy profile is a valid snapshot, the
// same for any worker count, distinct from the default, and compresses
// far better (its purpose).
func TestGenLowEntropy(t *testing.T) {
	low := func(workers int) []byte {
		var buf bytes.Buffer
		if _, err := Gen(context.Background(), &buf, GenOptions{Rows: 20_000, Workers: workers, Seed: 7, LowEntropy: true}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	one := low(1)
	if !bytes.Equal(low(3), one) {
		t.Fatal("workers=3 differs from workers=1")
	}
	if _, err := Verify(context.Background(), bytes.NewReader(one), nil); err != nil {
		t.Fatal(err)
	}
	def := gen(t, 20_000, 1, 7)
	if bytes.Equal(def, one) {
		t.Fatal("low-entropy equals the default profile")
	}
	zlen := func(b []byte) int {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(b)
		w.Close()
		return z.Len()
	}
	if lz, dz := zlen(one), zlen(def); lz*2 > dz {
		t.Fatalf("low-entropy gzips to %d bytes, default to %d: want less than half", lz, dz)
	}
}
