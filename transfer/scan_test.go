package transfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmq/segmq/snapfile"
)

func genSnapshot(t testing.TB, rows int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := snapfile.Gen(context.Background(), &buf, snapfile.GenOptions{Rows: rows, Workers: 2, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// oldScan is scanInput as it was before the framing walk: a full
// snapfile.Check with the fold teed off the same stream. The reference.
func oldScan(data []byte, mss int, raw bool) (string, error) {
	fold := newCRCFold(mss)
	r := io.TeeReader(bytes.NewReader(data), fold)
	if !raw {
		if _, _, err := snapfile.Check(r); err != nil {
			return "", err
		}
	}
	io.Copy(io.Discard, r)
	return fold.sum(), nil
}

// TestScanInputMatchesCheck: on a valid snapshot over several read
// chunks, and on many damaged copies of it, scanInput's fold and verdict
// are those of a full snapfile.Check; a refusal names the file and what
// Check says, with its offset.
func TestScanInputMatchesCheck(t *testing.T) {
	good := genSnapshot(t, 60_000) // several scanChunks
	if len(good) < 3*scanChunk {
		t.Fatalf("snapshot of %d bytes spans too few chunks", len(good))
	}
	dir := t.TempDir()
	le := func(b []byte, off int, v uint32) []byte {
		c := bytes.Clone(b)
		binary.LittleEndian.PutUint32(c[off:], v)
		return c
	}
	cases := map[string][]byte{
		"valid":            good,
		"empty":            {},
		"truncated by one": good[:len(good)-1],
		"cut at a chunk":   good[:scanChunk],
		"cut mid prefix":   good[:scanChunk+2],
		"one byte more":    append(bytes.Clone(good), 0),
		"four bytes more":  append(bytes.Clone(good), 0, 0, 0, 0),
		"first len huge":   le(good, 0, 0xFFFFFFF0),
		"first len short":  le(good, 0, 3),
		"header only":      good[:4+int(binary.LittleEndian.Uint32(good))],
		"trailer dropped":  good[:lastRecord(t, good)],
		"junk":             bytes.Repeat([]byte{0xAB}, 3*scanChunk+5),
	}
	for _, cut := range []int{1, 7, scanChunk - 3, scanChunk - 1, 2*scanChunk + 1} {
		cases["cut at "+itoa(cut)] = good[:cut]
	}
	for name, data := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f := mustOpen(t, path)
		for _, raw := range []bool{false, true} {
			got, err := scanInput(path, f, int64(len(data)), 1000, raw)
			want, werr := oldScan(data, 1000, raw)
			if (err == nil) != (werr == nil) {
				t.Errorf("%s raw=%v: scanInput err %v, full Check err %v", name, raw, err, werr)
				continue
			}
			if err != nil {
				if !strings.Contains(err.Error(), werr.Error()) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a complete snapshot") {
					t.Errorf("%s: err %q, want it to name %s and carry %q", name, err, path, werr)
				}
				continue
			}
			if got.sum() != want {
				t.Errorf("%s raw=%v: fold %s, want %s", name, raw, got.sum(), want)
			}
			if w := crc32.Checksum(data, castagnoli); !got.matches(wholeFold(w)) {
				t.Errorf("%s raw=%v: whole-file CRC-32C %08x, want %08x", name, raw, got.whole, w)
			}
		}
	}
}

// lastRecord returns the offset of data's last record.
func lastRecord(t *testing.T, data []byte) int {
	off, last := 0, -1
	for off < len(data) {
		last = off
		off += 4 + int(binary.LittleEndian.Uint32(data[off:]))
	}
	if off != len(data) || last < 0 {
		t.Fatal("bad test snapshot")
	}
	return last
}

// TestFramingWalkChunks: the walk finds the same records whatever the
// chunk size, including prefixes split across chunks at every position.
func TestFramingWalkChunks(t *testing.T) {
	data := genSnapshot(t, 2000)
	var records int64
	for off := 0; off < len(data); off += 4 + int(binary.LittleEndian.Uint32(data[off:])) {
		records++
	}
	var whole framingWalk
	whole.feed(data, 0)
	if whole.bad || whole.next != int64(len(data)) || whole.records != records || whole.last != int64(lastRecord(t, data)) {
		t.Fatalf("whole: %+v, want %d records ending at %d", whole, records, len(data))
	}
	type found struct {
		next, records, first, last int64
		flen, llen, npre           int
		bad                        bool
	}
	of := func(w *framingWalk) found {
		return found{w.next, w.records, w.first, w.last, w.flen, w.llen, w.npre, w.bad}
	}
	lastAt := lastRecord(t, data)
	for _, size := range []int{1, 2, 3, 5, 7, 64, 4093} {
		var w framingWalk
		sent := newSentWalk(int64(len(data)))
		for off := 0; off < len(data); off += size {
			w.feed(data[off:min(off+size, len(data))], int64(off))
			sent.feed(data[off:min(off+size, len(data))], int64(off))
		}
		if of(&w) != of(&whole) || of(sent) != of(&whole) {
			t.Errorf("chunks of %d: %+v and, keeping the ends, %+v; want %+v", size, of(&w), of(sent), of(&whole))
		}
		// The walk of the bytes as sent keeps the header and trailer
		// bodies as they passed, and checks them without the file.
		if !bytes.Equal(sent.head.buf, data[4:4+whole.flen]) || !bytes.Equal(sent.tail.buf, data[lastAt+4:]) {
			t.Errorf("chunks of %d: kept header %d bytes and trailer %d bytes, not the records'", size, len(sent.head.buf), len(sent.tail.buf))
		}
		if !sent.complete(nil, int64(len(data))) {
			t.Errorf("chunks of %d: the walk of the bytes as sent says the snapshot is incomplete", size)
		}
	}
}

// BenchmarkScanInput: the producer's pass before the first publish, on a
// generated snapshot in the page cache; "full" is the snapfile.Check walk
// it replaced.
func BenchmarkScanInput(b *testing.B) {
	data := genSnapshot(b, 300_000)
	path := filepath.Join(b.TempDir(), "in.snap")
	os.WriteFile(path, data, 0o644)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.Run("walk", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := scanInput(path, f, int64(len(data)), DefaultMSS, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			fold := newCRCFold(DefaultMSS)
			if _, _, err := snapfile.Check(io.TeeReader(io.NewSectionReader(f, 0, int64(len(data))), fold)); err != nil {
				b.Fatal(err)
			}
			fold.sum()
		}
	})
}

// TestCRC32CCombine: the CRC-32C of A then B, combined from the CRCs of
// the parts, is the CRC-32C of the whole, for any lengths (empty parts,
// one byte, across the shift table's powers of two).
func TestCRC32CCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<17)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	cuts := []int{0, 1, 2, 3, 4, 7, 8, 255, 256, 4095, 4096, 65528, 65536, 1 << 17}
	for range 200 {
		cuts = append(cuts, rng.IntN(len(data)+1))
	}
	for _, n := range []int{0, 1, 1000, 65528, 1 << 17} {
		for _, cut := range cuts {
			if cut > n {
				continue
			}
			a, b := data[:cut], data[cut:n]
			got := crc32cCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), crc32cShift(int64(len(b))))
			if want := crc32.Checksum(data[:n], castagnoli); got != want {
				t.Fatalf("combine at %d of %d: %08x, want %08x", cut, n, got, want)
			}
		}
	}
}
