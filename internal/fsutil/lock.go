package fsutil

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// ErrLocked: another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// Lock is an exclusive advisory lock (flock) on a lock file, held until
// Unlock or until the process dies: the kernel releases it then, so a
// crash never leaves a stale lock behind.
type Lock struct {
	path string
	f    *os.File
}

// TryLock takes the lock at path without waiting, creating the file. The
// file records the holder ("pid N on HOST") for the error another process
// gets, which wraps ErrLocked and names the holder.
func TryLock(path string) (*Lock, error) {
	for range 10 {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			holder, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				who := strings.TrimSpace(string(holder))
				if who == "" {
					who = "another process"
				}
				return nil, fmt.Errorf("%w: %s is held by %s", ErrLocked, path, who)
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		// The holder we waited on may have removed the file (Unlock)
		// between our open and our flock: then we hold a lock on a file
		// nobody else can see. Only the file at path counts.
		var a, b syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &a) != nil || syscall.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			f.Close()
			continue
		}
		// Write, then cut: a reader never sees an empty file.
		host, _ := os.Hostname()
		holder := fmt.Sprintf("pid %d on %s\n", os.Getpid(), host)
		if _, err := f.WriteAt([]byte(holder), 0); err == nil {
			f.Truncate(int64(len(holder)))
		}
		return &Lock{path: path, f: f}, nil
	}
	return nil, fmt.Errorf("lock %s: the file keeps being replaced", path)
}

// Unlock removes the lock file and releases the lock. The file is removed
// while still locked, so no one can take a lock on it that another
// process could not see.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(l.path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}
