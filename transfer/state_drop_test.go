package transfer

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/snapfile"
)

// The producer's resume records ('V', 'U') and the abandon path when the
// state file's disk fills up: what the hostile review (review6) broke,
// kept as the tests that now pass.

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
// The send succeeds and the consumer restores the file, and the state
// file does not outlive it: the next send of the same path starts. (The
// review found it left behind by dropState, and the next send refused as
// "unfinished".)
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
// is refused before its last segment and abandoned; the rerun the error
// advises (--rehash) sends the file. (The review found the state file
// left behind by dropState, and that rerun refused as unfinished.)
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

// flakyDiskFS is fullDiskFS whose disk is full only while full is set.
type flakyDiskFS struct {
	*vfs.MemFS
	full *atomic.Bool
}

type flakyDiskFile struct {
	vfs.File
	full *atomic.Bool
}

func (f flakyDiskFile) Write(p []byte) (int, error) {
	if f.full.Load() {
		return 0, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

func (m flakyDiskFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := m.MemFS.OpenFile(name, flag, perm)
	if err != nil || flag&os.O_APPEND == 0 {
		return f, err
	}
	return flakyDiskFile{f, m.full}, nil
}

// TestResumeRefusesChangedBytesPublishedAfterProgressStoppedBeingRecorded:
// the state disk is full when the first 'U' record is written, so the
// producer warns "this transfer will not be resumable" and publishes on
// without 'U' or 'V' records; it removes the state file (H and the first
// 'V', watermark 0) that would otherwise be left behind. The file changes
// in place during the send,
// the producer dies after publishing the changed segment, the file is
// restored and the disk freed. The --resume is refused: no state file is
// left to accept it. (The review found it accepted and reported sent,
// fold, 'V' and the absent 'U' all matching the restored file, though the
// broker held the changed segment.)
func TestResumeRefusesChangedBytesPublishedAfterProgressStoppedBeingRecorded(t *testing.T) {
	e := newEnv(t)
	in, data := review4Snapshot(t, e, "db.bin", 37)
	changedAt := int64(len(data) / 2)
	const mss = 4096
	var full atomic.Bool
	full.Store(true)
	fsys := flakyDiskFS{vfs.NewStrictMem(), &full}
	const state = "/state/db.bin.segmq-send"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var changed, killed atomic.Bool
	cfg := SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, State: state, Log: e.log, stateFS: fsys,
		Progress: func(n int64) {
			if !changed.Swap(true) {
				changeInPlace(t, in)
			}
			if n > changedAt+8 && !killed.Swap(true) {
				cancel() // as kill -9: nothing more reaches the state file
			}
		}}
	if _, err := Send(ctx, in, cfg); err == nil || !killed.Load() {
		t.Fatalf("setup: the interrupted send: %v (killed %v)", err, killed.Load())
	}
	if !strings.Contains(e.logs.String(), "will not be resumable") {
		t.Fatal("setup: the producer kept recording progress")
	}
	full.Store(false)
	if err := snapfile.WriteWithSidecar(in, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		t.Fatal(err)
	}
	cfg.Progress = nil
	resumeRefusedOrExact(t, e, in, cfg, data, "--resume of a transfer whose producer had stopped recording progress, with a changed segment published,")
}

// TestResumeRefusedBySidecarCRCDoesNotSayNothingWasPublished: a send is
// interrupted (as by kill -9) with segments published; the file is then
// changed in place with its mtime set back, so its sidecar still matches
// by size and mtime. The --resume is refused by the sidecar's CRC-32C,
// without claiming that nothing was published, and what it advises
// (delete the state file, run again with --rehash) sends the file. (The
// review found "nothing was published; run again with --rehash", and that
// rerun refused as an unfinished transfer.)
func TestResumeRefusedBySidecarCRCDoesNotSayNothingWasPublished(t *testing.T) {
	e := newEnv(t)
	in, _ := review4Snapshot(t, e, "db.bin", 41)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var killed atomic.Bool
	cfg := SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 4096, Log: e.log, Progress: func(n int64) {
		if n > 100_000 && !killed.Swap(true) {
			cancel()
		}
	}}
	if _, err := Send(ctx, in, cfg); err == nil || !killed.Load() {
		t.Fatalf("setup: the interrupted send: %v", err)
	}
	changeInPlace(t, in)
	cfg.Progress, cfg.Resume = nil, true
	_, err := Send(context.Background(), in, cfg)
	if err == nil {
		t.Fatal("--resume of a file changed in place (mtime set back) was accepted")
	}
	if strings.Contains(err.Error(), "nothing was published") {
		t.Errorf("--resume refused with %q: segments of transfer were published by the interrupted run", err)
	}
	// The state stays (the file could be restored and the transfer
	// resumed); the error says to delete it to send the file as it is now.
	state := in + ".segmq-send"
	if !strings.Contains(err.Error(), "delete "+state+" and run again with --rehash") {
		t.Fatalf("--resume refused with %q; want it to say to delete %s and run again with --rehash", err, state)
	}
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	cfg.Resume, cfg.Rehash = false, true
	if _, err2 := Send(context.Background(), in, cfg); err2 != nil {
		t.Errorf("the run the refusal advised (delete the state, --rehash) failed: %v", err2)
	}
}
