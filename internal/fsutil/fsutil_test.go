package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteAtomic(p, func(f *os.File) error { _, err := f.WriteString("one"); return err }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := WriteAtomic(p, func(f *os.File) error { f.WriteString("half"); return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("a failed write changed the file: %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestLockExcludesAndNamesHolder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.lock")
	l, err := TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to open files, so a second open in this process
	// conflicts just as another process would.
	_, err = TryLock(p)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second lock: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("lock file left behind")
	}
	l2, err := TryLock(p)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l2.Unlock()
}

// TestLockOtherProcess: a lock held by another process (flock(1)) is
// refused, and released when that process dies.
func TestLockOtherProcess(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.lock")
	if err := os.WriteFile(p, []byte("pid 1 on elsewhere\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("flock", "-x", "-o", p, "-c", "echo held; exec sleep 10")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1): %v", err)
	}
	defer cmd.Process.Kill()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "held\n" {
		t.Fatalf("flock(1) did not take the lock: %q %v", buf, err)
	}
	_, err = TryLock(p)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid 1 on elsewhere") {
		t.Fatalf("err = %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := TryLock(p)
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	l.Unlock()
}
