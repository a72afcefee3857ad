package segment

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The tests in this file pin down boundaries and bookkeeping that the
// mutation run (make mutate) found unguarded: each fails when one
// comparison or one piece of arithmetic in the package changes.

// TestLimitsAreInclusive: a total equal to the limit is allowed, one
// more is not, for the configuration and for a segment's header.
func TestLimitsAreInclusive(t *testing.T) {
	if err := (Config{MSS: 1, Total: 1000, MaxTotal: 1000}).Validate(); err != nil {
		t.Errorf("Total == MaxTotal: %v", err)
	}
	if err := (Config{MSS: 1, Total: 1001, MaxTotal: 1000}).Validate(); !errors.Is(err, ErrTotalTooLarge) {
		t.Errorf("Total > MaxTotal: %v", err)
	}
	var f memFile
	a, _ := NewAssembler(&f, Config{MaxTotal: 8})
	if o, err := a.Add(Header{Seq: 0, Total: 8}, []byte{1}); o != Placed || err != nil {
		t.Errorf("header total == MaxTotal: %v %v", o, err)
	}
	b, _ := NewAssembler(&f, Config{MaxTotal: 8})
	if _, err := b.Add(Header{Seq: 0, Total: 9}, []byte{1}); !errors.Is(err, ErrTotalTooLarge) || !strings.Contains(err.Error(), "limit 8") {
		t.Errorf("header total > MaxTotal: %v", err)
	}
}

// TestConfiguredTotalBinds: a configured total is known before the first
// segment, and a segment with another total is refused.
func TestConfiguredTotalBinds(t *testing.T) {
	var f memFile
	a, err := NewAssembler(&f, Config{MSS: 4, Total: 3})
	if err != nil {
		t.Fatal(err)
	}
	if a.Total() != 3 {
		t.Fatalf("Total() = %d before any segment, want the configured 3", a.Total())
	}
	if _, err := a.Add(Header{Seq: 0, Total: 4}, []byte("abcd")); !errors.Is(err, ErrTotalMismatch) {
		t.Fatalf("a segment with total 4 in a transfer of 3: %v", err)
	}
}

// TestNextAndCompleteAtWordEdges: Next is the first missing seq as
// segments arrive, and a transfer of exactly 64 segments (one full bitmap
// word) completes.
func TestNextAndCompleteAtWordEdges(t *testing.T) {
	for _, total := range []int{1, 63, 64, 65, 128} {
		var f memFile
		a, _ := NewAssembler(&f, Config{MSS: 1, Size: int64(total), SizeKnown: true})
		for _, seq := range append(rangeOf(1, total), 0) { // 0 last: Next jumps to the end
			if _, err := a.Add(Header{Seq: uint32(seq), Total: uint32(total)}, []byte{byte(seq)}); err != nil {
				t.Fatal(err)
			}
			want := uint32(0)
			if seq == 0 {
				want = uint32(total)
			}
			if a.Next() != want {
				t.Fatalf("total %d: after seq %d Next() = %d, want %d", total, seq, a.Next(), want)
			}
		}
		if !a.Complete() || a.Received() != uint32(total) {
			t.Fatalf("total %d: complete %v, received %d", total, a.Complete(), a.Received())
		}
	}
}

func rangeOf(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// TestStateRoundTripsAtWordEdges: the saved received set restores the
// same set, count, next, MSS and size into an Assembler that knew nothing,
// for totals around the bitmap's 64-bit words and for a set with nothing
// learnt yet.
func TestStateRoundTripsAtWordEdges(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 64))
	for _, total := range []int{0, 1, 63, 64, 65, 130} {
		for _, withLast := range []bool{false, true} {
			var f memFile
			a, _ := NewAssembler(&f, Config{MaxTotal: 130})
			if total > 0 {
				for seq := range total {
					if seq == total-1 && !withLast || seq != total-1 && r.IntN(3) == 0 {
						continue
					}
					n := 3
					if seq == total-1 {
						n = 2
					}
					if _, err := a.Add(Header{Seq: uint32(seq), Total: uint32(total)}, make([]byte, n)); err != nil {
						t.Fatal(err)
					}
				}
			}
			state, _ := a.MarshalBinary()
			b, _ := NewAssembler(&f, Config{MaxTotal: 130})
			if err := b.UnmarshalBinary(state); err != nil {
				t.Fatalf("total %d: %v", total, err)
			}
			if b.Facts() != a.Facts() || b.Received() != a.Received() || b.Next() != a.Next() ||
				!slices.Equal(b.Missing(nil, 200), a.Missing(nil, 200)) {
				t.Fatalf("total %d, last %v: restored %+v %d next %d, saved %+v %d next %d", total, withLast,
					b.Facts(), b.Received(), b.Next(), a.Facts(), a.Received(), a.Next())
			}
			last := withLast && total > 0
			if sz, known := b.Size(); known != last || last && sz != int64(3*(total-1)+2) {
				t.Fatalf("total %d: restored size %d known %v", total, sz, known)
			}
		}
	}
}

// TestStateRejectsDamage: a saved set over the limit, with a wrong count,
// or with bits set past the total is refused; a full last word is not
// damage when the total is a multiple of 64.
func TestStateRejectsDamage(t *testing.T) {
	full := func(total int) []byte {
		var f memFile
		a, _ := NewAssembler(&f, Config{MSS: 1, Size: int64(total), SizeKnown: true})
		for seq := range total {
			a.Add(Header{Seq: uint32(seq), Total: uint32(total)}, []byte{1})
		}
		s, _ := a.MarshalBinary()
		return s
	}
	load := func(s []byte, cfg Config) error {
		var f memFile
		a, _ := NewAssembler(&f, cfg)
		return a.UnmarshalBinary(s)
	}
	if err := load(full(64), Config{}); err != nil {
		t.Errorf("a complete set of 64: %v", err)
	}
	if err := load(full(64), Config{MaxTotal: 64}); err != nil {
		t.Errorf("total == MaxTotal: %v", err)
	}
	if err := load(full(64), Config{MaxTotal: 63}); !errors.Is(err, ErrBadState) {
		t.Errorf("total > MaxTotal: %v", err)
	}
	s := full(65)
	s[26]++ // count
	if err := load(s, Config{}); !errors.Is(err, ErrBadState) {
		t.Errorf("wrong count: %v", err)
	}
	s = full(65)
	s[len(s)-1] |= 0x80 // bit 127 of a set of 65
	s[26]++
	if err := load(s, Config{}); !errors.Is(err, ErrBadState) {
		t.Errorf("a bit past the total: %v", err)
	}
	if err := load(full(64)[:29], Config{}); !errors.Is(err, ErrBadState) {
		t.Errorf("a set cut inside its fixed fields: %v", err)
	}
}

// TestCountSuggestsMSS: the error for too many segments names the
// smallest MSS that fits.
func TestCountSuggestsMSS(t *testing.T) {
	_, err := Count(3*MaxTotal+1, 1)
	if err == nil || !strings.Contains(err.Error(), "need 402653185 segments (max 134217728); use an MSS of at least 4") {
		t.Fatalf("err = %v", err)
	}
}

// TestSegmentRangeAndBuffer: Segment refuses seq == total, and a buffer
// of exactly HeaderSize+MSS is used without allocating.
func TestSegmentRangeAndBuffer(t *testing.T) {
	data := []byte("0123456789abc")
	s, _ := NewSplitter(strings.NewReader(string(data)), int64(len(data)), 4)
	if _, err := s.Segment(s.Total(), nil); err == nil {
		t.Fatalf("Segment(%d) of %d: no error", s.Total(), s.Total())
	}
	if b, err := s.Segment(s.Total()-1, nil); err != nil || string(b[HeaderSize:]) != "c" {
		t.Fatalf("last segment: %q %v", b, err)
	}
	buf := make([]byte, HeaderSize+4)
	if n := testing.AllocsPerRun(10, func() { s.Segment(1, buf) }); n != 0 {
		t.Fatalf("Segment with a buffer of HeaderSize+MSS allocated %v times", n)
	}
}

// TestMoreEdges: exactly MaxTotal segments is allowed; an empty file
// never has the extra empty segment; Missing stops at its max.
func TestMoreEdges(t *testing.T) {
	if n, err := Count(MaxTotal, 1); err != nil || n != MaxTotal {
		t.Errorf("Count(MaxTotal, 1) = %d, %v", n, err)
	}
	if err := (Config{MSS: 4, Size: 0, SizeKnown: true, Total: 2}).Validate(); err == nil {
		t.Error("an empty file in 2 segments validated")
	}
	if err := (Config{MSS: 4, Size: 8, SizeKnown: true, Total: 3}).Validate(); err != nil {
		t.Errorf("a multiple of the MSS with the extra empty segment: %v", err)
	}
	var f memFile
	a, _ := NewAssembler(&f, Config{MSS: 1, Size: 10, SizeKnown: true})
	a.Add(Header{Seq: 5, Total: 10}, []byte{1})
	if got := a.Missing(nil, 3); !slices.Equal(got, []uint32{0, 1, 2}) {
		t.Errorf("Missing(nil, 3) = %v", got)
	}
	if got := a.Missing(nil, 100); len(got) != 9 {
		t.Errorf("Missing(nil, 100) = %v", got)
	}
}
