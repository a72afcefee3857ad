package snapfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestSidecarRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db.bin")
	data := bytes.Repeat([]byte("segmq "), 100_000)
	if err := WriteWithSidecar(path, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	fi, _ := os.Stat(path)
	got, err := ReadSidecar(path, fi)
	if wantCRC := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)); err != nil || got.SHA256 != want || !got.HasCRC || got.CRC32C != wantCRC {
		t.Fatalf("ReadSidecar = %+v, %v; want %q and CRC-32C %08x", got, err, want, wantCRC)
	}
	// The standard tool agrees with it.
	cmd := exec.Command("sha256sum", "--check", "--strict", "db.bin.sha256")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "db.bin: OK") {
		t.Fatalf("sha256sum --check: %v\n%s", err, out)
	}

	// A sidecar from before the CRC-32C field: its digest, and no CRC.
	side, _ := os.ReadFile(path + SidecarSuffix)
	old := regexp.MustCompile(` crc32c [0-9a-f]{8}`).ReplaceAll(side, nil)
	if bytes.Equal(old, side) {
		t.Fatalf("no crc32c field in %q", side)
	}
	os.WriteFile(path+SidecarSuffix, old, 0o644)
	if got, err := ReadSidecar(path, fi); err != nil || got.SHA256 != want || got.HasCRC {
		t.Fatalf("an older sidecar: ReadSidecar = %+v, %v; want %q without a CRC", got, err, want)
	}
	// A malformed CRC field is refused, not read as "no CRC".
	os.WriteFile(path+SidecarSuffix, bytes.Replace(side, []byte(" crc32c "), []byte(" crc32 "), 1), 0o644)
	if _, err := ReadSidecar(path, fi); err == nil || !strings.Contains(err.Error(), "malformed line") {
		t.Fatalf("a sidecar with a misnamed CRC field: %v", err)
	}
	os.WriteFile(path+SidecarSuffix, side, 0o644)

	// Touched since: refused, and the reason says so.
	later := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(path)
	if _, err := ReadSidecar(path, fi); err == nil || !strings.Contains(err.Error(), "the file changed since") {
		t.Fatalf("after a touch: %v", err)
	}

	// A plain sha256sum file carries no size and mtime: not trusted.
	plain := want + "  db.bin\n"
	os.WriteFile(path+SidecarSuffix, []byte(plain), 0o644)
	if _, err := ReadSidecar(path, fi); err == nil || !strings.Contains(err.Error(), "not written by segmq") {
		t.Fatalf("plain sha256sum file: %v", err)
	}
	// Another file's digest.
	os.WriteFile(path+SidecarSuffix, []byte("# segmq sidecar: size 1 mtime 1\n"+want+"  other.bin\n"), 0o644)
	if _, err := ReadSidecar(path, fi); err == nil || !strings.Contains(err.Error(), "not a digest of db.bin") {
		t.Fatalf("other file's sidecar: %v", err)
	}
	// None.
	os.Remove(path + SidecarSuffix)
	if _, err := ReadSidecar(path, fi); !os.IsNotExist(err) {
		t.Fatalf("no sidecar: %v", err)
	}
}

// TestSidecarReplacedFirst: rewriting a snapshot removes its old sidecar
// before the new file is in place, so a failed write leaves none that
// could describe other bytes.
func TestSidecarReplacedFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.bin")
	write := func(s string) error {
		return WriteWithSidecar(path, func(w io.Writer) error { _, err := io.WriteString(w, s); return err })
	}
	if err := write("first"); err != nil {
		t.Fatal(err)
	}
	if err := write("second"); err != nil {
		t.Fatal(err)
	}
	if err := WriteWithSidecar(path, func(w io.Writer) error { io.WriteString(w, "third"); return io.ErrClosedPipe }); err == nil {
		t.Fatal("a failing fill reported success")
	}
	if _, err := os.Stat(path + SidecarSuffix); !os.IsNotExist(err) {
		t.Fatalf("after a failed rewrite the old sidecar is still there: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "second" {
		t.Fatalf("a failed rewrite touched the file: %q", b)
	}
}
