package segment

import (
	"bytes"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// memFile is an io.WriterAt/io.ReaderAt over a growing byte slice.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// split returns every body of data cut at mss.
func split(t testing.TB, data []byte, mss int) [][]byte {
	t.Helper()
	s, err := NewSplitter(bytes.NewReader(data), int64(len(data)), mss)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for seq := uint32(0); seq < s.Total(); seq++ {
		b, err := s.Segment(seq, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func assemble(t testing.TB, bodies [][]byte, cfg Config) (*Assembler, []byte) {
	t.Helper()
	var f memFile
	a, err := NewAssembler(&f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		h, p, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Add(h, p); err != nil {
			t.Fatalf("Add(%v): %v", h, err)
		}
	}
	return a, f.b
}

func TestHeaderGolden(t *testing.T) {
	got := Header{Seq: 0x01020304, Total: 0xA0B0C0D0}.Bytes()
	path := filepath.Join("testdata", "header.golden")
	if *update {
		if err := os.WriteFile(path, got[:], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:], want) {
		t.Fatalf("header bytes = % x, golden % x", got, want)
	}
	h, p, err := Decode(want)
	if err != nil || h != (Header{Seq: 0x01020304, Total: 0xA0B0C0D0}) || len(p) != 0 {
		t.Fatalf("Decode(golden) = %v, %d bytes, %v", h, len(p), err)
	}
}

func TestDecodeShort(t *testing.T) {
	for n := 0; n < HeaderSize; n++ {
		if _, _, err := Decode(make([]byte, n)); !errors.Is(err, ErrShortBody) {
			t.Errorf("Decode(%d bytes) err = %v, want ErrShortBody", n, err)
		}
	}
}

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		size int64
		mss  int
		want uint32
	}{
		{0, 10, 1}, {1, 10, 1}, {9, 10, 1}, {10, 10, 1}, {11, 10, 2}, {20, 10, 2}, {21, 10, 3}, {5, 1, 5},
	} {
		got, err := Count(tc.size, tc.mss)
		if err != nil || got != tc.want {
			t.Errorf("Count(%d, %d) = %d, %v; want %d", tc.size, tc.mss, got, err, tc.want)
		}
	}
	if _, err := Count(1<<40, 1); !errors.Is(err, ErrTotalTooLarge) {
		t.Errorf("Count(1TiB, 1) err = %v, want ErrTotalTooLarge", err)
	}
	if _, err := Count(1, 0); !errors.Is(err, ErrBadMSS) {
		t.Errorf("Count(1, 0) err = %v, want ErrBadMSS", err)
	}
}

// TestRoundTrip cuts files of edge-case sizes and reassembles them in
// order, reversed and shuffled, with and without the MSS known.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const mss = 100
	for _, size := range []int{0, 1, mss - 1, mss, mss + 1, 2 * mss, 10*mss + 7} {
		data := randBytes(r, size)
		bodies := split(t, data, mss)
		orders := map[string][][]byte{"in-order": bodies, "reversed": reversed(bodies), "shuffled": shuffled(r, bodies)}
		for name, order := range orders {
			for _, cfg := range []Config{{MSS: mss, Size: int64(size), SizeKnown: true}, {}} {
				a, got := assemble(t, order, cfg)
				if !a.Complete() {
					// Unknown MSS: the last segment comes back NotYet when
					// it arrives first; offer it again, as a requeue would.
					a2, got2 := assembleRetry(t, order, cfg)
					a, got = a2, got2
				}
				if !a.Complete() || !bytes.Equal(got, data) {
					t.Fatalf("size %d %s cfg %+v: complete=%v, got %d bytes, want %d", size, name, cfg, a.Complete(), len(got), size)
				}
				if s, ok := a.Size(); !ok || s != int64(size) {
					t.Fatalf("size %d %s: Size() = %d, %v", size, name, s, ok)
				}
			}
		}
	}
}

// assembleRetry offers segments like a consumer with requeue would: NotYet
// goes to the back of the line.
func assembleRetry(t testing.TB, bodies [][]byte, cfg Config) (*Assembler, []byte) {
	t.Helper()
	var f memFile
	a, err := NewAssembler(&f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	queue := append([][]byte(nil), bodies...)
	for guard := 0; len(queue) > 0; guard++ {
		if guard > 10*len(bodies)+10 {
			t.Fatalf("no progress with %d segments left", len(queue))
		}
		b := queue[0]
		queue = queue[1:]
		h, p, _ := Decode(b)
		o, err := a.Add(h, p)
		if err != nil {
			t.Fatalf("Add(%v): %v", h, err)
		}
		if o == NotYet {
			queue = append(queue, b)
		}
	}
	return a, f.b
}

func reversed(in [][]byte) [][]byte {
	out := make([][]byte, len(in))
	for i, b := range in {
		out[len(in)-1-i] = b
	}
	return out
}

func shuffled(r *rand.Rand, in [][]byte) [][]byte {
	out := append([][]byte(nil), in...)
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func body(seq, total uint32, payload []byte) []byte {
	h := Header{Seq: seq, Total: total}.Bytes()
	return append(h[:], payload...)
}

// TestForeignTrailingEmpty: a producer computing total as trunc(len/MSS)+1
// sends an extra empty segment when the size is a multiple of MSS.
func TestForeignTrailingEmpty(t *testing.T) {
	data := bytes.Repeat([]byte("abcd"), 5) // 20 bytes, MSS 10
	bodies := [][]byte{body(2, 3, nil), body(1, 3, data[10:]), body(0, 3, data[:10])}
	for _, cfg := range []Config{{MSS: 10}, {MSS: 10, Size: 20, SizeKnown: true}, {}} {
		a, got := assembleRetry(t, bodies, cfg)
		if !a.Complete() || !bytes.Equal(got, data) {
			t.Fatalf("cfg %+v: complete=%v got %q", cfg, a.Complete(), got)
		}
		if s, _ := a.Size(); s != 20 {
			t.Fatalf("cfg %+v: size %d, want 20", cfg, s)
		}
	}
}

func TestAddRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		before [][]byte
		seg    []byte
		want   error
	}{
		{"zero total", Config{MSS: 4}, nil, body(0, 0, nil), ErrZeroTotal},
		{"seq >= total", Config{MSS: 4}, nil, body(3, 3, []byte("ab")), ErrSeqOutOfRange},
		{"total changes", Config{MSS: 4}, [][]byte{body(0, 3, []byte("abcd"))}, body(1, 4, []byte("abcd")), ErrTotalMismatch},
		{"payload > MSS", Config{MSS: 4}, nil, body(0, 2, []byte("abcde")), ErrPayloadTooLarge},
		{"short non-final", Config{MSS: 4}, nil, body(0, 2, []byte("abc")), ErrShortPayload},
		{"absurd total", Config{MSS: 4, MaxTotal: 1000}, nil, body(0, 1<<31, []byte("abcd")), ErrTotalTooLarge},
		{"total vs size", Config{MSS: 4, Size: 8, SizeKnown: true}, nil, body(0, 5, []byte("abcd")), ErrTotalMismatch},
		{"last vs size", Config{MSS: 4, Size: 7, SizeKnown: true}, nil, body(1, 2, []byte("abcd")), ErrSizeMismatch},
		{"learnt MSS", Config{}, [][]byte{body(0, 3, []byte("abcd"))}, body(1, 3, []byte("abcdef")), ErrPayloadTooLarge},
		{"empty non-final, MSS unknown", Config{}, nil, body(0, 3, nil), ErrShortPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f memFile
			a, err := NewAssembler(&f, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range tc.before {
				h, p, _ := Decode(b)
				if _, err := a.Add(h, p); err != nil {
					t.Fatal(err)
				}
			}
			written := len(f.b)
			h, p, _ := Decode(tc.seg)
			_, err = a.Add(h, p)
			var se *SegmentError
			if !errors.Is(err, tc.want) || !errors.As(err, &se) || se.Header != h {
				t.Fatalf("Add(%v) err = %v, want %v in a *SegmentError", h, err, tc.want)
			}
			if len(f.b) != written {
				t.Fatalf("a rejected segment wrote %d bytes", len(f.b)-written)
			}
		})
	}
}

func TestDuplicateAndWindow(t *testing.T) {
	var f memFile
	a, _ := NewAssembler(&f, Config{MSS: 2, Window: 2})
	add := func(seq uint32) Outcome {
		t.Helper()
		o, err := a.Add(Header{Seq: seq, Total: 5}, []byte{byte('a' + seq), byte('a' + seq)})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	steps := []struct {
		seq  uint32
		want Outcome
	}{
		{2, NotYet}, {1, Placed}, {2, NotYet}, {0, Placed}, {1, Duplicate}, {2, Placed}, {4, Placed}, {3, Placed}, {4, Duplicate},
	}
	for i, s := range steps {
		if got := add(s.seq); got != s.want {
			t.Fatalf("step %d: Add(seq %d) = %v, want %v (next %d)", i, s.seq, got, s.want, a.Next())
		}
	}
	if !a.Complete() || string(f.b) != "aabbccddee" {
		t.Fatalf("complete=%v file %q", a.Complete(), f.b)
	}
}

func TestSaveResume(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	data := randBytes(r, 1000)
	bodies := shuffled(r, split(t, data, 64))
	cfg := Config{MSS: 64, Size: 1000, SizeKnown: true}
	var f memFile
	a, _ := NewAssembler(&f, cfg)
	half := len(bodies) / 2
	for _, b := range bodies[:half] {
		h, p, _ := Decode(b)
		a.Add(h, p)
	}
	state, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewAssembler(&f, cfg)
	if err := b.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	if b.Received() != uint32(half) {
		t.Fatalf("resumed with %d received, want %d", b.Received(), half)
	}
	var dups int
	for _, body := range bodies { // the whole transfer again: the first half are duplicates
		h, p, _ := Decode(body)
		o, err := b.Add(h, p)
		if err != nil {
			t.Fatal(err)
		}
		if o == Duplicate {
			dups++
		}
	}
	if dups != half || !b.Complete() || !bytes.Equal(f.b, data) {
		t.Fatalf("dups %d want %d, complete %v, equal %v", dups, half, b.Complete(), bytes.Equal(f.b, data))
	}
	other, _ := NewAssembler(&f, Config{MSS: 32})
	if err := other.UnmarshalBinary(state); !errors.Is(err, ErrBadState) {
		t.Fatalf("resume with another MSS: err = %v, want ErrBadState", err)
	}
	for _, cut := range []int{0, 5, len(state) - 1} {
		c, _ := NewAssembler(&f, cfg)
		if err := c.UnmarshalBinary(state[:cut]); !errors.Is(err, ErrBadState) {
			t.Fatalf("truncated state (%d bytes): err = %v, want ErrBadState", cut, err)
		}
	}
}

// FuzzDecode: any body decodes or reports ErrShortBody, and encoding the
// decoded header gives the same 8 bytes back.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(body(0, 1, nil))
	f.Add(body(7, 3, []byte("xyz")))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := Decode(b)
		if err != nil {
			if len(b) >= HeaderSize || !errors.Is(err, ErrShortBody) {
				t.Fatalf("Decode(%d bytes): %v", len(b), err)
			}
			return
		}
		enc := h.Bytes()
		if !bytes.Equal(enc[:], b[:HeaderSize]) || len(p) != len(b)-HeaderSize {
			t.Fatal("header does not round-trip")
		}
	})
}

// FuzzAssemble: a file split with a fuzzed MSS is delivered in a fuzzed
// order, with the faults that faults selects, to an Assembler configured
// as for a segmq transfer (MSS and size known) or a seed-format one
// (nothing known), with a fuzzed reorder window:
//
//	faults&1  duplicates: copies of random segments, each answered Duplicate
//	faults&2  a gap: one segment never delivered; never Complete, and
//	          Missing names it once the total is known
//	faults&4  a resume: half-way, the received set is saved and a new
//	          Assembler continues from it (MarshalBinary/UnmarshalBinary)
//	faults&8  a corrupt copy (corrupt > 128 too): a body with a flipped
//	          header or payload byte, or bytes appended, delivered first
//
// Without a gap or corruption the result is exactly the input; with
// them, every refusal is a typed error and nothing panics. At most
// fuzzMaxSegs segments: delivery with requeue is quadratic in the
// segments for a small window, and an input of thousands of 1-byte
// segments once stalled the fuzzer at 0 execs/s.
func FuzzAssemble(f *testing.F) {
	f.Add([]byte("hello, segmented world"), uint8(4), uint64(1), uint8(0), uint8(0))
	f.Add([]byte{}, uint8(1), uint64(2), uint8(3), uint8(0))
	f.Add(bytes.Repeat([]byte{7}, 64), uint8(8), uint64(3), uint8(200), uint8(0))
	// Every fault on both configurations (corrupt odd: seed-format) and
	// every window (corrupt%4 on the segmq configuration).
	data := []byte("the quick brown fox jumps over the lazy dog, twice: the quick brown fox")
	for faults := uint8(0); faults < 16; faults++ {
		for _, corrupt := range []uint8{0, 1, 2, 3, 130, 131} {
			f.Add(data, uint8(5), uint64(faults)*7+uint64(corrupt), corrupt, faults)
		}
	}
	f.Add(bytes.Repeat([]byte{1}, 5*8), uint8(7), uint64(4), uint8(2), uint8(1)) // size a multiple of the MSS
	f.Fuzz(func(t *testing.T, data []byte, mssb uint8, seed uint64, corrupt, faults uint8) {
		if len(data) > fuzzMaxBytes {
			// The fuzzer minimizes every input that finds new coverage,
			// trying removals of byte subsets: quadratic in its length,
			// up to a minute at 0 execs/s for a few KiB (the stall). Up
			// to 256 bytes (256 segments at MSS 1, four bitmap words)
			// reaches every path; longer inputs are made uninteresting.
			return
		}
		mss := int(mssb%32) + 1
		data = data[:min(len(data), fuzzMaxSegs*mss)]
		r := rand.New(rand.NewPCG(seed, 99))
		bodies := shuffled(r, split(t, data, mss))
		total := len(bodies)
		// MaxTotal: a corrupt header's total, learnt by a seed-format
		// Assembler, must not cost a 16 MiB bitmap per run (that too
		// stalled the fuzzer while it minimized such an input).
		cfg := Config{MSS: mss, Size: int64(len(data)), SizeKnown: true, Window: uint32(corrupt % 4), MaxTotal: 4 * fuzzMaxSegs}
		if corrupt%2 == 1 {
			cfg = Config{MaxTotal: 4 * fuzzMaxSegs}
		}
		var f memFile
		a, err := NewAssembler(&f, cfg)
		if err != nil {
			t.Fatal(err)
		}
		gap := -1
		if faults&2 != 0 && len(bodies) > 0 {
			i := r.IntN(len(bodies))
			h, _, _ := Decode(bodies[i])
			gap = int(h.Seq)
			bodies = append(bodies[:i:i], bodies[i+1:]...)
		}
		dups := 0
		if faults&1 != 0 && len(bodies) > 0 {
			for range 1 + r.IntN(4) {
				bodies = append(bodies, bodies[r.IntN(len(bodies))])
				dups++
			}
		}
		corrupted := corrupt > 128 || faults&8 != 0
		if corrupted && len(bodies) > 0 {
			bad := append([]byte(nil), bodies[r.IntN(len(bodies))]...)
			bad[r.IntN(len(bad))] ^= byte(r.Uint32() | 1)
			if r.IntN(2) == 0 {
				bad = append(bad, 1, 2, 3)
			}
			bodies = append([][]byte{bad}, bodies...)
		}
		resumeAt := -1
		if faults&4 != 0 {
			resumeAt = len(bodies) / 2
		}
		// Deliver in order; a segment answered NotYet is held and offered
		// again once a placement may have brought it within reach (as the
		// consumer does with its parked segments). Linear in the
		// segments: a requeue-to-the-back loop was quadratic with a small
		// window, and minimizing a large input then stalled the fuzzer.
		held := map[uint32][][]byte{}
		offered, seenDup := 0, 0
		var deliver func(b []byte)
		deliver = func(b []byte) {
			if offered == resumeAt {
				state, err := a.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				r, err := NewAssembler(&f, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.UnmarshalBinary(state); err != nil {
					t.Fatalf("resume: %v", err)
				}
				if r.Facts() != a.Facts() || r.Received() != a.Received() || r.Next() != a.Next() {
					t.Fatalf("resumed %+v %d next %d, saved %+v %d next %d", r.Facts(), r.Received(), r.Next(), a.Facts(), a.Received(), a.Next())
				}
				a = r
			}
			offered++
			h, p, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			o, err := a.Add(h, p)
			var se *SegmentError
			if err != nil && !errors.As(err, &se) {
				t.Fatalf("untyped error %v", err)
			}
			switch o {
			case NotYet:
				held[h.Seq] = append(held[h.Seq], b)
			case Duplicate:
				seenDup++
			case Placed:
				// What may have come within reach: with a window, the
				// seqs up to Next()+Window; without (the MSS was not
				// known yet), everything held.
				var ready []uint32
				if w := cfg.Window; w != 0 {
					for s := a.Next(); s < a.Next()+w; s++ {
						if len(held[s]) > 0 {
							ready = append(ready, s)
						}
					}
				} else {
					for s := range held {
						ready = append(ready, s)
					}
					slices.Sort(ready)
				}
				for _, s := range ready {
					bs := held[s]
					delete(held, s)
					for _, hb := range bs {
						deliver(hb)
					}
				}
			}
		}
		for _, b := range bodies {
			deliver(b)
		}
		if corrupted {
			return // a corrupt copy may legitimately have won a race for a seq
		}
		if gap >= 0 {
			if a.Complete() {
				t.Fatalf("complete without segment %d", gap)
			}
			if a.Total() != 0 && !slices.Contains(a.Missing(nil, total), uint32(gap)) {
				t.Fatalf("segment %d never delivered, Missing says %v", gap, a.Missing(nil, 10))
			}
			return
		}
		if !a.Complete() || !bytes.Equal(f.b[:min(len(f.b), len(data))], data) || len(f.b) > len(data) {
			t.Fatalf("complete=%v, got %d bytes want %d", a.Complete(), len(f.b), len(data))
		}
		if seenDup != dups {
			t.Fatalf("%d duplicates delivered, %d answered Duplicate", dups, seenDup)
		}
	})
}

// FuzzAssemble's bounds (see there).
const (
	fuzzMaxSegs  = 160
	fuzzMaxBytes = 256
)
