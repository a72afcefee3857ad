package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/snapfile"
)

// TestSidecarDigest: a snapshot written with its sidecar (as snapshot gen
// and dump write it) is sent with the sidecar's digest, without hashing
// the file; a stale sidecar is ignored; a file changed in place with its
// mtime set back is refused before anything is published (the sidecar's
// CRC-32C); a file that is no snapshot is refused though its sidecar
// vouches for it; and a sidecar whose digest lies makes the consumer
// refuse, never verify.
func TestSidecarDigest(t *testing.T) {
	var buf bytes.Buffer
	if _, err := snapfile.Gen(context.Background(), &buf, snapfile.GenOptions{Rows: 40_000, Workers: 2, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	cases := []struct {
		name     string
		tamper   func(in string) // after the sidecar is written
		data     []byte          // nil: the snapshot
		rehash   bool
		raw      bool
		fromSide bool   // the producer must report the sidecar as the digest's source
		refused  bool   // the consumer must refuse (digest mismatch)
		sendErr  string // Send must fail with this before publishing anything
	}{
		{name: "trusted", fromSide: true},
		{name: "touched since", tamper: func(in string) {
			fi, _ := os.Stat(in)
			later := fi.ModTime().Add(3e9)
			os.Chtimes(in, later, later)
		}},
		{name: "older sidecar, no CRC-32C", fromSide: true, tamper: func(in string) { editSidecar(t, in, stripCRC) }},
		{name: "changed in place, mtime set back", sendErr: "does not have the CRC-32C that", tamper: func(in string) {
			fi, _ := os.Stat(in)
			f, _ := os.OpenFile(in, os.O_WRONLY, 0)
			f.WriteAt([]byte("changed"), fi.Size()/2)
			f.Close()
			os.Chtimes(in, fi.ModTime(), fi.ModTime())
		}},
		{name: "not a snapshot", data: bytes.Repeat([]byte("not a snapshot "), 200_000), sendErr: "is not a complete snapshot"},
		{name: "not a snapshot, raw", data: bytes.Repeat([]byte("not a snapshot "), 200_000), raw: true, fromSide: true},
		{name: "lies", fromSide: true, refused: true, tamper: func(in string) { lieInSidecar(t, in) }},
		{name: "lies, rehash", rehash: true, tamper: func(in string) { lieInSidecar(t, in) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			in := filepath.Join(e.dir, "db.bin")
			data := data
			if c.data != nil {
				data = c.data
			}
			if err := snapfile.WriteWithSidecar(in, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
				t.Fatal(err)
			}
			if c.tamper != nil {
				c.tamper(in)
			}
			sent, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, Rehash: c.rehash, Raw: c.raw, Log: e.log})
			out := filepath.Join(e.dir, "out.bin")
			if c.sendErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.sendErr) {
					t.Fatalf("Send = %+v, %v; want an error saying %q", sent, err, c.sendErr)
				}
				// Refused before it connected: not even the queue exists.
				if _, err := brokertest.Inspect(t, e.url, e.topo.Name()); err == nil {
					t.Fatalf("the refused send declared %s: it got as far as the broker", e.topo.Name())
				}
				cfg := e.receiveCfg(out)
				cfg.Timeout = 3 * time.Second
				if res, err := Receive(context.Background(), cfg); err == nil || res.Verified {
					t.Fatalf("the consumer restored %+v from a send that failed", res)
				}
				if _, serr := os.Stat(out); !os.IsNotExist(serr) {
					t.Fatalf("--out exists after a failed send: %v", serr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sent.DigestFrom != ""; got != c.fromSide {
				t.Fatalf("digest taken from %q, want from the sidecar: %v", sent.DigestFrom, c.fromSide)
			}
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

// lieInSidecar replaces the digest in in's sidecar, keeping its size,
// mtime and CRC-32C line.
func lieInSidecar(t *testing.T, in string) {
	editSidecar(t, in, func(b []byte) []byte {
		lines := strings.SplitN(string(b), "\n", 2)
		return []byte(lines[0] + "\n" + strings.Repeat("ab", 32) + "  " + filepath.Base(in) + "\n")
	})
}

// stripCRC makes a sidecar one written before the CRC-32C was recorded.
func stripCRC(b []byte) []byte { return regexp.MustCompile(` crc32c [0-9a-f]{8}`).ReplaceAll(b, nil) }

func editSidecar(t *testing.T, in string, edit func([]byte) []byte) {
	t.Helper()
	side := in + snapfile.SidecarSuffix
	b, err := os.ReadFile(side)
	if err != nil {
		t.Fatal(err)
	}
	if e := edit(b); bytes.Equal(e, b) {
		t.Fatalf("the edit changed nothing in %q", b)
	} else if err := os.WriteFile(side, e, 0o644); err != nil {
		t.Fatal(err)
	}
}
