package transfer

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/segmq/segmq/internal/vfs"
)

// Hostile review (review6) of the producer's resume records ('V', 'U')
// and the abandon path (issue 13).

// fullDiskFS is a vfs.MemFS whose files opened for appending (the state
// journal after its atomic create) fail every write from the first one on
// with ENOSPC: a disk that filled up during the send.
type fullDiskFS struct{ *vfs.MemFS }

type fullDiskFile struct{ vfs.File }

func (f fullDiskFile) Write(p []byte) (int, error) {
	return 0, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
}

func (m fullDiskFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := m.MemFS.OpenFile(name, flag, perm)
	if err != nil || flag&os.O_APPEND == 0 {
		return f, err
	}
	return fullDiskFile{f}, nil
}

// TestStateFileRemovedAfterSuccessEvenWhenProgressCouldNotBeRecorded: the
// disk holding IN.segmq-send fills up once the transfer has started, so
// the first 'U' record fails (journal.Write) and the producer stops
// recording progress ("this transfer will not be resumable") and goes on.
// The send succeeds and the consumer restores the file. The state file
// must not outlive that success: dropState closes the journal and forgets
// it, so removeState (and abandon) never remove it, and the next send of
// the same path, as a user runs it, is refused as "unfinished" and told
// to --resume a transfer that completed.
func TestStateFileRemovedAfterSuccessEvenWhenProgressCouldNotBeRecorded(t *testing.T) {
	e := newEnv(t)
	const mss = 1000
	data := randData(613, 50*mss+7)
	in := e.file("in.bin", data)
	fsys := fullDiskFS{vfs.NewStrictMem()}
	const state = "/state/in.segmq-send"
	cfg := SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Raw: true, State: state, Log: e.log, stateFS: fsys}
	res, err := Send(context.Background(), in, cfg)
	if err != nil {
		t.Fatalf("Send with the state disk full: %v (want it sent, not resumable)", err)
	}
	if !strings.Contains(e.logs.String(), "will not be resumable") {
		t.Fatalf("setup: the producer never stopped recording progress; log:\n%s", e.logs.String())
	}
	out := filepath.Join(e.dir, "out.bin")
	e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if _, err := fsys.Stat(state); err == nil {
		t.Errorf("transfer %s sent and restored, but its state file %s is still there", res.Transfer, state)
	}
	// What the user meets next: the same path sent again.
	if _, err := Send(context.Background(), in, cfg); errors.Is(err, ErrUnfinished) {
		t.Errorf("the next send of %s after a successful one is refused: %v", in, err)
	}
}

// TestAbandonRemovesStateFileEvenWhenProgressCouldNotBeRecorded: the same
// full disk, and the file changed in place during the send, so the send
// is refused before its last segment and abandoned. The error says "run
// again with --rehash to send the file as it is now, as a new transfer"
// but does not say the state file is removed, because it is not (the
// journal was forgotten by dropState): the rerun it advises is refused as
// an unfinished transfer to --resume, which the abandoned transfer can
// never be.
func TestAbandonRemovesStateFileEvenWhenProgressCouldNotBeRecorded(t *testing.T) {
	e := newEnv(t)
	in, _ := review4Snapshot(t, e, "db.bin", 31)
	fsys := fullDiskFS{vfs.NewStrictMem()}
	const state = "/state/db.bin.segmq-send"
	var changed atomic.Bool
	cfg := SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 4096, State: state, Log: e.log, stateFS: fsys,
		Progress: func(int64) {
			if !changed.Swap(true) {
				changeInPlace(t, in)
			}
		}}
	_, err := Send(context.Background(), in, cfg)
	if !errors.Is(err, ErrInputChanged) || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("setup: Send of a file changed during the send: %v, want it abandoned", err)
	}
	if _, serr := fsys.Stat(state); serr == nil {
		t.Errorf("abandoned (%v), but the state file %s is still there", err, state)
	}
	cfg.Progress, cfg.Rehash = nil, true
	if _, err := Send(context.Background(), in, cfg); errors.Is(err, ErrUnfinished) {
		t.Errorf("the rerun with --rehash that the abandon advised is refused: %v", err)
	}
}
