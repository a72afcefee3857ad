package transfer

import (
	"bytes"
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
	"time"

	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/snapfile"
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
// without 'U' or 'V' records, but leaves the state file (H and the first
// 'V', watermark 0) behind. The file changes in place during the send,
// the producer dies after publishing the changed segment, the file is
// restored and the disk freed. The --resume the state file still allows
// is accepted (fold, 'V' and the absent 'U' all match the restored file)
// and reported sent, though the broker holds the changed segment: the
// mixed transfer that 'U' exists to refuse.
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
	cfg.Progress, cfg.Resume = nil, true
	sent, err := Send(context.Background(), in, cfg)
	if err != nil {
		return // refused: nothing mixed
	}
	out := filepath.Join(e.dir, "out.bin")
	rc := e.receiveCfg(out)
	rc.Timeout = 5 * time.Second
	res, rerr := Receive(context.Background(), rc)
	got, _ := os.ReadFile(out)
	if rerr != nil || !res.Verified || !bytes.Equal(got, data) {
		t.Fatalf("--resume of a transfer whose producer had stopped recording progress, with a changed segment published, reported sent (%d segments, resumed %d); the consumer cannot restore it: verified=%v conflicts=%d err=%v, --out equals the snapshot: %v; want the resume refused",
			sent.Segments, sent.Resumed, res.Verified, res.Conflicts, rerr, bytes.Equal(got, data))
	}
}

// TestResumeRefusedBySidecarCRCDoesNotSayNothingWasPublished: a send is
// interrupted (as by kill -9) with segments published; the file is then
// changed in place with its mtime set back, so its sidecar still matches
// by size and mtime. The --resume is refused by the sidecar's CRC-32C
// (right), but the error says "nothing was published; run again with
// --rehash", which is false for a resume (the interrupted run published
// segments that stay in the queue), and the run it advises (without
// --resume) is refused as an unfinished transfer.
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
	cfg.Resume, cfg.Rehash = false, true
	if _, err2 := Send(context.Background(), in, cfg); errors.Is(err2, ErrUnfinished) {
		t.Errorf("the run the refusal advised (--rehash) is refused too: %v", err2)
	}
}
