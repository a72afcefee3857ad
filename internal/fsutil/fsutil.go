// Package fsutil writes files so that a reader never sees half of one: the
// bytes go to a temporary file beside the target, which is fsynced and
// renamed into place only when complete.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteAtomic calls fill with a new temporary file beside path (a unique
// name, so two writers never share one), then fsyncs it, renames it to
// path and fsyncs the directory. On any error the temporary file is
// removed and path is untouched.
func WriteAtomic(path string, fill func(*os.File) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err = f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
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
	return Commit(tmp, path)
}

// Commit renames a complete, synced file into place and syncs the
// directory so that the rename survives a crash.
func Commit(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(to))
}

// SyncDir fsyncs a directory.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}
