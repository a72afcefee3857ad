package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/segmq/segmq/internal/fsutil"
)

// ErrCrashed is what a file opened before a crash returns afterwards: the
// process that held it is gone.
var ErrCrashed = errors.New("vfs: file handle from before the crash")

// MemFS is a strict in-memory filesystem. Every file keeps its bytes and
// the bytes its last fsync saw; every directory keeps its entries and the
// entries its last fsync saw. Crash (or CrashClone) keeps only the synced
// side of both: a write not followed by the file's Sync is lost, and a
// create, rename or remove not followed by a SyncDir of its directory is
// undone (a renamed file goes back to its old name, a created one
// disappears, a removed one comes back). This is what POSIX promises
// after a power loss, and no more; real filesystems often keep more.
//
// Directories are implicit: every directory exists. All methods are safe
// for concurrent use.
type MemFS struct {
	mu    sync.Mutex
	dirs  map[string]*memDir
	gen   int // bumped by Crash; handles of an older generation fail
	locks map[string]bool
	seq   int // for CreateTemp names
	syncs int
}

type memDir struct {
	live, durable map[string]*memNode
}

type memNode struct {
	data, synced []byte
	mod          time.Time
}

// NewStrictMem returns an empty MemFS.
func NewStrictMem() *MemFS {
	return &MemFS{dirs: map[string]*memDir{}, locks: map[string]bool{}}
}

func (m *MemFS) dir(path string) *memDir {
	d := m.dirs[path]
	if d == nil {
		d = &memDir{live: map[string]*memNode{}, durable: map[string]*memNode{}}
		m.dirs[path] = d
	}
	return d
}

func split(name string) (string, string) {
	name = filepath.Clean(name)
	return filepath.Dir(name), filepath.Base(name)
}

func (m *MemFS) lookup(name string) (*memNode, bool) {
	dir, base := split(name)
	d := m.dirs[dir]
	if d == nil {
		return nil, false
	}
	n, ok := d.live[base]
	return n, ok
}

func pathErr(op, name string, err error) error { return &fs.PathError{Op: op, Path: name, Err: err} }

// OpenFile implements FS.
func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.lookup(name)
	switch {
	case !ok && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, fs.ErrNotExist)
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", name, fs.ErrExist)
	case !ok:
		n = &memNode{mod: time.Now()}
		dir, base := split(name)
		m.dir(dir).live[base] = n
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	if flag&os.O_TRUNC != 0 && acc != os.O_RDONLY {
		n.data = n.data[:0:0]
	}
	return &memFile{m: m, n: n, name: name, gen: m.gen, flag: flag,
		read: acc == os.O_RDONLY || acc == os.O_RDWR, write: acc == os.O_WRONLY || acc == os.O_RDWR}, nil
}

// CreateTemp implements FS.
func (m *MemFS) CreateTemp(dir, pattern string) (File, error) {
	for {
		m.mu.Lock()
		m.seq++
		s := fmt.Sprint(m.seq)
		m.mu.Unlock()
		name := pattern + s
		if i := strings.LastIndex(pattern, "*"); i >= 0 {
			name = pattern[:i] + s + pattern[i+1:]
		}
		f, err := m.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
}

// Rename implements FS.
func (m *MemFS) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.lookup(oldpath)
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrNotExist}
	}
	od, ob := split(oldpath)
	nd, nb := split(newpath)
	delete(m.dir(od).live, ob)
	m.dir(nd).live[nb] = n
	return nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.lookup(name); !ok {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	dir, base := split(name)
	delete(m.dir(dir).live, base)
	return nil
}

// Stat implements FS.
func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.lookup(name)
	if !ok {
		return nil, pathErr("stat", name, fs.ErrNotExist)
	}
	return memInfo{name: filepath.Base(name), size: int64(len(n.data)), mod: n.mod}, nil
}

// SyncDir implements FS: the directory's entries as they are now are
// what a crash keeps.
func (m *MemFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.dir(filepath.Clean(dir))
	d.durable = maps(d.live)
	m.syncs++
	return nil
}

// Lock implements FS. A crash releases every lock, as the kernel does
// when a process dies.
func (m *MemFS) Lock(name string) (Unlocker, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if m.locks[name] {
		return nil, fmt.Errorf("%w: %s is held by another process", fsutil.ErrLocked, name)
	}
	m.locks[name] = true
	return &memLock{m: m, name: name, gen: m.gen}, nil
}

type memLock struct {
	m    *MemFS
	name string
	gen  int
}

func (l *memLock) Unlock() error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.gen == l.m.gen {
		delete(l.m.locks, l.name)
	}
	return nil
}

func maps(m map[string]*memNode) map[string]*memNode {
	c := make(map[string]*memNode, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Crash pulls the plug: every directory goes back to its synced entries,
// every file to its synced bytes, locks are released and every open
// file fails from now on with ErrCrashed.
func (m *MemFS) Crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashLocked(nil)
}

// CrashKeepSome pulls the plug like Crash, but as real disks do, some of
// the writes not covered by an fsync may survive anyway: each file whose
// bytes differ from its synced bytes keeps, chosen by rng, either its
// synced bytes, its current bytes, or the synced bytes extended by a
// prefix of the current tail (a torn append). Directory entries follow
// the strict rule. The synced state always survives.
func (m *MemFS) CrashKeepSome(rng *rand.Rand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashLocked(rng)
}

func (m *MemFS) crashLocked(rng *rand.Rand) {
	seen := map[*memNode]bool{}
	for _, name := range sortedKeys(m.dirs) {
		d := m.dirs[name]
		d.live = maps(d.durable)
		for _, n := range sortedNodes(d.live) {
			if seen[n] {
				continue
			}
			seen[n] = true
			n.data = survivor(n, rng)
			n.synced = append([]byte(nil), n.data...)
		}
	}
	m.locks = map[string]bool{}
	m.gen++
}

// survivor is what a crash leaves of a file's bytes.
func survivor(n *memNode, rng *rand.Rand) []byte {
	synced := append([]byte(nil), n.synced...)
	if rng == nil || string(n.synced) == string(n.data) {
		return synced
	}
	switch rng.IntN(3) {
	case 0:
		return synced
	case 1:
		return append([]byte(nil), n.data...)
	}
	// A torn append: the synced bytes where the file was not written
	// past them, then part of what followed.
	if len(n.data) <= len(n.synced) || string(n.data[:len(n.synced)]) != string(n.synced) {
		return synced
	}
	k := rng.IntN(len(n.data) - len(n.synced) + 1)
	return append(synced, n.data[len(n.synced):len(n.synced)+k]...)
}

// CrashClone returns what a crash now would leave, as a new MemFS, and
// leaves m running as it was.
func (m *MemFS) CrashClone() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := NewStrictMem()
	c.seq = m.seq
	copies := map[*memNode]*memNode{}
	for name, d := range m.dirs {
		cd := c.dir(name)
		for base, n := range d.durable {
			cn := copies[n]
			if cn == nil {
				cn = &memNode{data: append([]byte(nil), n.synced...), synced: append([]byte(nil), n.synced...), mod: n.mod}
				copies[n] = cn
			}
			cd.live[base], cd.durable[base] = cn, cn
		}
	}
	return c
}

// Syncs is the number of SyncDir calls so far.
func (m *MemFS) Syncs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncs
}

// List returns the names that exist now in dir, sorted.
func (m *MemFS) List(dir string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.dirs[filepath.Clean(dir)]
	if d == nil {
		return nil
	}
	return sortedKeys(d.live)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedNodes(m map[string]*memNode) []*memNode {
	var ns []*memNode
	for _, k := range sortedKeys(m) {
		ns = append(ns, m[k])
	}
	return ns
}

type memInfo struct {
	name string
	size int64
	mod  time.Time
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return i.mod }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

type memFile struct {
	m           *MemFS
	n           *memNode
	name        string
	gen, flag   int
	read, write bool
	pos         int64
	closed      bool
}

const (
	needAny = iota
	needRead
	needWrite
)

// check is called with m.mu held.
func (f *memFile) check(op string, need int) error {
	switch {
	case f.closed:
		return pathErr(op, f.name, fs.ErrClosed)
	case f.gen != f.m.gen:
		return pathErr(op, f.name, ErrCrashed)
	case need == needWrite && !f.write, need == needRead && !f.read:
		return pathErr(op, f.name, errors.New("bad file descriptor"))
	}
	return nil
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) Read(p []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read", needRead); err != nil {
		return 0, err
	}
	if f.pos >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	k := copy(p, f.n.data[f.pos:])
	f.pos += int64(k)
	return k, nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read", needRead); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathErr("read", f.name, errors.New("negative offset"))
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	k := copy(p, f.n.data[off:])
	if k < len(p) {
		return k, io.EOF
	}
	return k, nil
}

func (f *memFile) writeAtLocked(p []byte, off int64) {
	if end := off + int64(len(p)); end > int64(len(f.n.data)) {
		if end > int64(cap(f.n.data)) {
			d := make([]byte, len(f.n.data), max(end, 2*int64(cap(f.n.data))))
			copy(d, f.n.data)
			f.n.data = d
		}
		f.n.data = f.n.data[:end]
	}
	copy(f.n.data[off:], p)
	f.n.mod = time.Now()
}

func (f *memFile) Write(p []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("write", needWrite); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		f.pos = int64(len(f.n.data))
	}
	f.writeAtLocked(p, f.pos)
	f.pos += int64(len(p))
	return len(p), nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("write", needWrite); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		return 0, pathErr("write", f.name, errors.New("WriteAt on a file opened with O_APPEND"))
	}
	if off < 0 {
		return 0, pathErr("write", f.name, errors.New("negative offset"))
	}
	f.writeAtLocked(p, off)
	return len(p), nil
}

func (f *memFile) Seek(offset int64, whence int) (int64, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("seek", needAny); err != nil {
		return 0, err
	}
	switch whence {
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += int64(len(f.n.data))
	}
	if offset < 0 {
		return 0, pathErr("seek", f.name, errors.New("negative offset"))
	}
	f.pos = offset
	return offset, nil
}

func (f *memFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("sync", needAny); err != nil {
		return err
	}
	f.n.synced = append([]byte(nil), f.n.data...) // never shares data's array
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("truncate", needWrite); err != nil {
		return err
	}
	if size < int64(len(f.n.data)) {
		f.n.data = append([]byte(nil), f.n.data[:size]...)
	} else if size > int64(len(f.n.data)) {
		f.writeAtLocked(make([]byte, size-int64(len(f.n.data))), int64(len(f.n.data)))
	}
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("stat", needAny); err != nil {
		return nil, err
	}
	return memInfo{name: filepath.Base(f.name), size: int64(len(f.n.data)), mod: f.n.mod}, nil
}

func (f *memFile) Close() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}
