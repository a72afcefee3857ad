package vfs

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"testing"
)

func write(t *testing.T, m FS, name, s string, flag int) File {
	t.Helper()
	f, err := m.OpenFile(name, flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	return f
}

func content(t *testing.T, m FS, name string) (string, bool) {
	t.Helper()
	b, err := ReadFile(m, name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

// TestStrictMemCrash: only synced bytes and synced directory entries
// survive, and a handle from before the crash is dead.
func TestStrictMemCrash(t *testing.T) {
	m := NewStrictMem()
	const create = os.O_CREATE | os.O_RDWR

	a := write(t, m, "/d/a", "synced", create) // data synced, entry synced
	a.Sync()
	m.SyncDir("/d")
	a.Write([]byte(" lost"))

	c := write(t, m, "/e/c", "unsynced", create) // entry synced, data never
	m.SyncDir("/e")
	_ = c

	r := write(t, m, "/d/r.tmp", "renamed", create) // renamed, dir not synced
	r.Sync()
	m.SyncDir("/d")
	b := write(t, m, "/d/b", "data", create) // data synced, entry never
	b.Sync()

	if err := m.Rename("/d/r.tmp", "/d/r"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("/d/a"); err != nil { // removed, dir not synced
		t.Fatal(err)
	}

	clone := m.CrashClone()
	m.Crash()
	for _, fsys := range []FS{m, clone} {
		want := map[string]string{"/d/a": "synced", "/e/c": "", "/d/r.tmp": "renamed"}
		for name, w := range want {
			if got, ok := content(t, fsys, name); !ok || got != w {
				t.Errorf("%s = %q, %v; want %q", name, got, ok, w)
			}
		}
		for _, gone := range []string{"/d/b", "/d/r"} {
			if _, ok := content(t, fsys, gone); ok {
				t.Errorf("%s survived a crash without a directory fsync", gone)
			}
		}
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, ErrCrashed) {
		t.Errorf("write on a handle from before the crash: %v", err)
	}
}

// TestStrictMemCloneIndependent: a clone does not disturb the running FS.
func TestStrictMemCloneIndependent(t *testing.T) {
	m := NewStrictMem()
	f := write(t, m, "/x", "one", os.O_CREATE|os.O_RDWR)
	f.Sync()
	m.SyncDir("/")
	f.Write([]byte("two"))
	c := m.CrashClone()
	if got, _ := content(t, c, "/x"); got != "one" {
		t.Fatalf("clone: %q", got)
	}
	if got, _ := content(t, m, "/x"); got != "onetwo" {
		t.Fatalf("running: %q", got)
	}
	cf, _ := c.OpenFile("/x", os.O_RDWR, 0)
	cf.WriteAt([]byte("ONE"), 0)
	if got, _ := content(t, m, "/x"); got != "onetwo" {
		t.Fatalf("a write to the clone reached the original: %q", got)
	}
	if _, err := f.Write([]byte("3")); err != nil {
		t.Fatalf("the original's handle died: %v", err)
	}
}

// TestStrictMemKeepSome: the synced prefix always survives, and what
// survives beyond it is a prefix of what was written.
func TestStrictMemKeepSome(t *testing.T) {
	for seed := range uint64(50) {
		m := NewStrictMem()
		f := write(t, m, "/j", "head", os.O_CREATE|os.O_RDWR|os.O_APPEND)
		f.Sync()
		m.SyncDir("/")
		f.Write([]byte("tail"))
		m.CrashKeepSome(rand.New(rand.NewPCG(seed, 0)))
		got, _ := content(t, m, "/j")
		if len(got) < 4 || got != "headtail"[:len(got)] {
			t.Fatalf("seed %d: %q", seed, got)
		}
	}
}

func TestStrictMemSemantics(t *testing.T) {
	m := NewStrictMem()
	if _, err := m.OpenFile("/nope", os.O_RDONLY, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open missing: %v", err)
	}
	f := write(t, m, "/f", "abc", os.O_CREATE|os.O_RDWR)
	if _, err := m.OpenFile("/f", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL: %v", err)
	}
	ro, _ := m.OpenFile("/f", os.O_RDONLY, 0)
	if _, err := ro.Write([]byte("x")); err == nil {
		t.Fatal("write on a read-only handle")
	}
	f.WriteAt([]byte("Z"), 5)
	if got, _ := content(t, m, "/f"); got != "abc\x00\x00Z" {
		t.Fatalf("%q", got)
	}
	f.Truncate(2)
	if fi, _ := m.Stat("/f"); fi.Size() != 2 {
		t.Fatalf("size %d", fi.Size())
	}
	l, err := m.Lock("/f.lock")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lock("/f.lock"); err == nil {
		t.Fatal("second lock taken")
	}
	l.Unlock()
	if _, err := m.Lock("/f.lock"); err != nil {
		t.Fatal(err)
	}
	m.Crash() // releases it
	if _, err := m.Lock("/f.lock"); err != nil {
		t.Fatalf("after a crash: %v", err)
	}
	tmp, err := m.CreateTemp("/d", "out.*.tmp")
	if err != nil || tmp.Name() != "/d/out.1.tmp" {
		t.Fatalf("CreateTemp: %v %v", tmp, err)
	}
}

// TestWriteAtomicSurvivesCrash: WriteAtomic's result survives a crash
// whole, on both filesystems' rules, and a crash before it leaves the old
// content.
func TestWriteAtomicSurvivesCrash(t *testing.T) {
	m := NewStrictMem()
	if err := WriteAtomic(m, "/d/f", func(f File) error { _, err := f.Write([]byte("one")); return err }); err != nil {
		t.Fatal(err)
	}
	m.Crash()
	if got, _ := content(t, m, "/d/f"); got != "one" {
		t.Fatalf("after crash: %q", got)
	}
	if err := WriteAtomic(m, "/d/f", func(f File) error {
		f.Write([]byte("two"))
		return errors.New("boom")
	}); err == nil {
		t.Fatal("no error")
	}
	if got, _ := content(t, m, "/d/f"); got != "one" {
		t.Fatalf("a failed write changed the file: %q", got)
	}
	if l := m.List("/d"); len(l) != 1 {
		t.Fatalf("left behind: %v", l)
	}
}
