package recordio

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"testing"
)

func encodeAll(t testing.TB, recs [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
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

func readAll(r *Reader) ([][]byte, error) {
	var out [][]byte
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, append([]byte(nil), rec...))
	}
}

func TestRoundTrip(t *testing.T) {
	recs := [][]byte{{}, []byte("a"), bytes.Repeat([]byte("x"), 300), bytes.Repeat([]byte("big"), readBufSize)}
	data := encodeAll(t, recs)
	got, err := readAll(NewReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("got %d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		if !bytes.Equal(got[i], recs[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
}

// TestTornTail cuts a stream at every byte: io.EOF only at record
// boundaries, otherwise a CorruptError at the offset of the torn record.
func TestTornTail(t *testing.T) {
	recs := [][]byte{[]byte("first"), {}, []byte("third record")}
	data := encodeAll(t, recs)
	bounds := map[int]bool{0: true}
	starts := []int{0}
	off := 0
	for _, r := range recs {
		off += 4 + len(r)
		bounds[off] = true
		starts = append(starts, off)
	}
	for cut := 0; cut <= len(data); cut++ {
		got, err := readAll(NewReader(bytes.NewReader(data[:cut])))
		if bounds[cut] {
			if err != nil {
				t.Fatalf("cut %d at a boundary: %v", cut, err)
			}
			continue
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut %d: err = %v, want CorruptError(ErrUnexpectedEOF)", cut, err)
		}
		if want := int64(starts[len(got)]); ce.Offset != want {
			t.Fatalf("cut %d: offset %d, want %d", cut, ce.Offset, want)
		}
	}
}

// TestHugeLengthNoAlloc: a 0xFFFFFFFF prefix is refused before anything
// is allocated for it.
func TestHugeLengthNoAlloc(t *testing.T) {
	data := encodeAll(t, [][]byte{[]byte("ok")})
	data = binary.LittleEndian.AppendUint32(data, 0xFFFFFFFF)
	data = append(data, "tail"...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := NewReader(bytes.NewReader(data))
	_, err := readAll(r)
	runtime.ReadMemStats(&after)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrTooLarge) || ce.Offset != 6 {
		t.Fatalf("err = %v, want CorruptError(ErrTooLarge) at offset 6", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("allocated %d bytes for a refused record", alloc)
	}
	if _, err2 := r.Next(); err2 != err {
		t.Fatalf("error not sticky: %v then %v", err, err2)
	}
}

func TestWriterMaxSize(t *testing.T) {
	w := NewWriter(io.Discard)
	w.SetMaxSize(3)
	if err := w.Write([]byte("four")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after -= len(p); f.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func distinct(dst []byte, i int) ([]byte, error) {
	dst = append(dst, "record-"...)
	dst = strconv.AppendInt(dst, int64(i), 10)
	for range i % 17 {
		dst = append(dst, byte(i))
	}
	return dst, nil
}

// TestOrderedEncoderDeterministic: distinct records come out in input
// order and byte-identical for every worker count and batch size.
func TestOrderedEncoderDeterministic(t *testing.T) {
	const n = 20011
	var want []byte
	for _, workers := range []int{1, 2, 3, 8} {
		for _, bs := range []int{1, 7, 512} {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			e := NewOrderedEncoder(context.Background(), w, workers, bs, distinct)
			for i := range n {
				if err := e.Encode(i); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if w.Count() != n {
				t.Fatalf("count %d", w.Count())
			}
			if want == nil {
				want = buf.Bytes()
				r := NewReader(bytes.NewReader(want))
				for i := range n {
					rec, err := r.Next()
					exp, _ := distinct(nil, i)
					if err != nil || !bytes.Equal(rec, exp) {
						t.Fatalf("record %d = %q, %v; want %q", i, rec, err, exp)
					}
				}
				continue
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("workers=%d batch=%d: output differs from workers=1", workers, bs)
			}
		}
	}
}

func TestOrderedEncoderErrors(t *testing.T) {
	boom := errors.New("boom")
	e := NewOrderedEncoder(context.Background(), NewWriter(io.Discard), 2, 4, func(dst []byte, i int) ([]byte, error) {
		if i == 37 {
			return dst, boom
		}
		return append(dst, byte(i)), nil
	})
	var encErr error
	for i := range 10000 {
		if encErr = e.Encode(i); encErr != nil {
			break
		}
	}
	if err := e.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want boom", err)
	}
	if encErr != nil && !errors.Is(encErr, boom) {
		t.Fatalf("Encode = %v, want boom", encErr)
	}

	w := NewWriter(&failWriter{after: 1 << 20})
	e = NewOrderedEncoder(context.Background(), w, 2, 64, distinct)
	for i := range 200000 {
		if e.Encode(i) != nil {
			break
		}
	}
	if err := e.Close(); err == nil || err.Error() != "disk full" {
		t.Fatalf("Close = %v, want disk full", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	e = NewOrderedEncoder(ctx, NewWriter(io.Discard), 2, 1, distinct)
	cancel()
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = e.Encode(i)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Encode after cancel = %v", err)
	}
	if err := e.Close(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close after cancel = %v", err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(encodeAll(f, [][]byte{[]byte("a"), {}, []byte("bcd")}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		r.SetMaxSize(1 << 16)
		recs, err := readAll(r)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Offset < 0 || ce.Offset > int64(len(data)) {
				t.Fatalf("err %v", err)
			}
			return
		}
		if again := encodeAll(t, recs); !bytes.Equal(again, data) {
			t.Fatal("re-encoding a clean stream changed it")
		}
	})
}

func Example() {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Write([]byte("hello"))
	w.Write([]byte("world"))
	w.Close()
	fmt.Printf("% x\n", buf.Bytes()[:9])

	r := NewReader(&buf)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		fmt.Println(string(rec))
	}
	// Output:
	// 05 00 00 00 68 65 6c 6c 6f
	// hello
	// world
}
