package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmq/segmq/internal/fsutil"
	"github.com/segmq/segmq/segment"
)

func placeAll(t *testing.T, p *partFile, data []byte, mss int, seqs ...uint32) {
	t.Helper()
	total, _ := segment.Count(int64(len(data)), mss)
	for _, seq := range seqs {
		end := min(int(seq+1)*mss, len(data))
		o, err := p.place(segment.Header{Seq: seq, Total: total}, data[int(seq)*mss:end], nil)
		if err != nil || o != segment.Placed {
			t.Fatalf("place %d: %v %v", seq, o, err)
		}
	}
}

// TestPartFileResumesWhatWasPersisted: only what persist recorded counts
// after a crash (the process ends without persisting the rest), and a
// resume completes to the exact file.
func TestPartFileResumesWhatWasPersisted(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.bin")
	const mss = 10
	data := randData(3, 95) // 10 segments
	b := binding{Transfer: "t", MSS: mss, Size: int64(len(data)), Total: 10}
	p, err := openPart(nil, out, false, "", 0, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.bind(b); err != nil {
		t.Fatal(err)
	}
	placeAll(t, p, data, mss, 0, 1, 2, 7)
	p.setDigest(hexSHA(data))
	if err := p.persist(); err != nil {
		t.Fatal(err)
	}
	placeAll(t, p, data, mss, 3, 4) // placed, never persisted: a crash loses them
	p.close()

	p, err = openPart(nil, out, false, "", 0, discard())
	if err != nil {
		t.Fatal(err)
	}
	if p.resumed != 4 || p.sha != hexSHA(data) {
		t.Fatalf("resumed %d sha %q, want 4 and the digest", p.resumed, p.sha)
	}
	if miss := p.asm.Missing(nil, 10); len(miss) != 6 || miss[0] != 3 {
		t.Fatalf("missing %v", miss)
	}
	placeAll(t, p, data, mss, 3, 4, 5, 6, 8, 9)
	if err := p.persist(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.commit(); err != nil {
		t.Fatal(err)
	}
	p.close()
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("output differs")
	}
	for _, s := range []string{".part", ".part.state", ".part.lock"} {
		if _, err := os.Stat(out + s); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind", s)
		}
	}
}

// TestPartFileCompacts: many small persists rewrite the journal into one
// received set, and a resume after that sees every persisted segment.
func TestPartFileCompacts(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.bin")
	const mss, n = 1, 200_000
	data := randData(4, n)
	p, err := openPart(nil, out, false, "", 0, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.bind(binding{Transfer: "t", MSS: mss, Size: n, Total: n}); err != nil {
		t.Fatal(err)
	}
	for seq := uint32(0); seq < n-1; seq += 2 { // every other one: a run each
		placeAll(t, p, data, mss, seq)
		if seq%2000 == 0 {
			if err := p.persist(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.persist(); err != nil {
		t.Fatal(err)
	}
	if sz := p.jr.Size(); sz > 2<<20 {
		t.Fatalf("journal is %d bytes for a %d-segment set", sz, n)
	}
	p.close()
	p, err = openPart(nil, out, false, "", 0, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if p.resumed != n/2 {
		t.Fatalf("resumed %d, want %d", p.resumed, n/2)
	}
}

// TestPartFileLocked: a second open of the same --out fails at once and
// names the holder; --restart does not get past the lock either.
func TestPartFileLocked(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.bin")
	p, err := openPart(nil, out, false, "", 0, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if err := p.bind(binding{Transfer: "t", MSS: 10, Size: 20, Total: 2}); err != nil {
		t.Fatal(err)
	}
	for _, restart := range []bool{false, true} {
		_, err := openPart(nil, out, restart, "", 0, discard())
		if !errors.Is(err, fsutil.ErrLocked) || !strings.Contains(err.Error(), "another consumer") || !strings.Contains(err.Error(), "pid") {
			t.Fatalf("restart=%v: err = %v", restart, err)
		}
	}
	if _, err := os.Stat(out + ".part.state"); err != nil {
		t.Fatalf("the second open touched the first's state: %v", err)
	}
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
