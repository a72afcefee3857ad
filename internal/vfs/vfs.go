// Package vfs is the small filesystem seam under the files whose
// durability segmq promises: the consumer's OUT.part and its journal,
// and the producer's state journal. Production uses OS, which is the os
// package; tests use NewStrictMem, an in-memory filesystem that can "pull
// the plug" and keep only what was fsynced (file data, and directory
// entries that a directory fsync covered), so a test can check that what
// the program acknowledged survives a power loss. The model is Pebble's
// vfs.NewStrictMem.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/segmq/segmq/internal/fsutil"
)

// File is the part of *os.File that segmq's durable files use.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	io.Seeker
	io.Closer
	Name() string
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
}

// FS is the part of the os package that segmq's durable files use.
// Names are paths, as for the os package.
type FS interface {
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// CreateTemp creates a new file of mode 0644 in dir, named from
	// pattern as os.CreateTemp does.
	CreateTemp(dir, pattern string) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	Stat(name string) (fs.FileInfo, error)
	// SyncDir fsyncs a directory: the creates, renames and removes of
	// names in it survive a crash only after it.
	SyncDir(dir string) error
	// Lock takes an exclusive lock named by a lock file, without
	// waiting; the error wraps fsutil.ErrLocked when it is held.
	Lock(name string) (Unlocker, error)
}

// Unlocker releases a lock taken by FS.Lock.
type Unlocker interface{ Unlock() error }

// OS is the operating system's filesystem.
var OS FS = osFS{}

// Or returns fsys, or OS when fsys is nil.
func Or(fsys FS) FS {
	if fsys == nil {
		return OS
	}
	return fsys
}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // no typed nil in the interface
	}
	return f, nil
}

func (osFS) CreateTemp(dir, pattern string) (File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

func (osFS) Rename(oldpath, newpath string) error  { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error              { return os.Remove(name) }
func (osFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }
func (osFS) SyncDir(dir string) error              { return fsutil.SyncDir(dir) }
func (osFS) Lock(name string) (Unlocker, error) {
	l, err := fsutil.TryLock(name)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Open opens name read-only.
func Open(fsys FS, name string) (File, error) { return fsys.OpenFile(name, os.O_RDONLY, 0) }

// ReadFile reads the whole of name.
func ReadFile(fsys FS, name string) ([]byte, error) {
	f, err := Open(fsys, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// WriteAtomic is fsutil.WriteAtomic on fsys: fill writes a new temporary
// file beside path, which is fsynced, renamed to path and made durable by
// a fsync of the directory. On any error path is untouched and the
// temporary file removed.
func WriteAtomic(fsys FS, path string, fill func(File) error) (err error) {
	f, err := fsys.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			fsys.Remove(tmp)
		}
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	return Commit(fsys, tmp, path)
}

// Commit renames a complete, synced file into place and fsyncs the
// directory so that the rename survives a crash.
func Commit(fsys FS, from, to string) error {
	if err := fsys.Rename(from, to); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(to))
}

// RemoveDurably removes name (a missing name is not an error) and fsyncs
// its directory.
func RemoveDurably(fsys FS, name string) error {
	if err := fsys.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fsys.SyncDir(filepath.Dir(name))
}
