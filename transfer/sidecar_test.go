package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmq/segmq/snapfile"
)

// TestSidecarDigest: a snapshot written with its sidecar (as snapshot gen
// and dump write it) is sent with the sidecar's digest, without hashing
// the file; a stale sidecar is ignored; and a sidecar that lies while its
// size and mtime still match makes the consumer refuse, never verify.
func TestSidecarDigest(t *testing.T) {
	var buf bytes.Buffer
	if _, err := snapfile.Gen(context.Background(), &buf, snapfile.GenOptions{Rows: 40_000, Workers: 2, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	cases := []struct {
		name     string
		tamper   func(in string) // after the sidecar is written
		rehash   bool
		fromSide bool // the producer must report the sidecar as the digest's source
		refused  bool // the consumer must refuse (digest mismatch)
	}{
		{name: "trusted", fromSide: true},
		{name: "touched since", tamper: func(in string) {
			fi, _ := os.Stat(in)
			later := fi.ModTime().Add(3e9)
			os.Chtimes(in, later, later)
		}},
		{name: "lies", fromSide: true, refused: true, tamper: func(in string) { lieInSidecar(t, in) }},
		{name: "lies, rehash", rehash: true, tamper: func(in string) { lieInSidecar(t, in) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			in := filepath.Join(e.dir, "db.bin")
			if err := snapfile.WriteWithSidecar(in, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
				t.Fatal(err)
			}
			if c.tamper != nil {
				c.tamper(in)
			}
			sent, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, Rehash: c.rehash, Log: e.log})
			if err != nil {
				t.Fatal(err)
			}
			if got := sent.DigestFrom != ""; got != c.fromSide {
				t.Fatalf("digest taken from %q, want from the sidecar: %v", sent.DigestFrom, c.fromSide)
			}
			out := filepath.Join(e.dir, "out.bin")
			res, err := Receive(context.Background(), e.receiveCfg(out))
			if c.refused {
				if !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), "producer said "+strings.Repeat("ab", 32)) {
					t.Fatalf("a lying sidecar: consumer returned %+v, %v; want a digest refusal", res, err)
				}
				if _, serr := os.Stat(out); !os.IsNotExist(serr) {
					t.Fatalf("--out exists after a refusal: %v", serr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e.mustEqualFile(out, data)
			if !res.Verified || res.SHA256 != sent.SHA256 {
				t.Fatalf("sent %+v, received %+v", sent, res)
			}
		})
	}
}

// lieInSidecar replaces the digest in in's sidecar, keeping its size and
// mtime line (as if the file had changed in place and its mtime been set
// back).
func lieInSidecar(t *testing.T, in string) {
	t.Helper()
	side := in + snapfile.SidecarSuffix
	b, err := os.ReadFile(side)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 2)
	lie := lines[0] + "\n" + strings.Repeat("ab", 32) + "  " + filepath.Base(in) + "\n"
	if err := os.WriteFile(side, []byte(lie), 0o644); err != nil {
		t.Fatal(err)
	}
}
