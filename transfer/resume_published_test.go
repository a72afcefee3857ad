package transfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/segmq/segmq/internal/journal"
	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
	"github.com/segmq/segmq/snapfile"
)

// Resumes and sends with a sidecar: what the second hostile review of the
// sidecar path (review5) broke, kept as the tests that now pass.

// stateWatermark reads the last watermark recorded in a producer's state
// file.
func stateWatermark(t *testing.T, state string) uint32 {
	t.Helper()
	recs, err := journal.Read(state, 'P')
	if err != nil {
		t.Fatalf("read state %s: %v", state, err)
	}
	var w uint32
	for _, r := range recs[1:] {
		if (r.Type == recWatermarkCRC && len(r.Data) == 8) || (r.Type == recWatermark && len(r.Data) == 4) {
			w = binary.LittleEndian.Uint32(r.Data)
		}
	}
	return w
}

// TestResumeRefusesChangedBytesPublishedAboveWatermark: a producer dies
// with segments published above its confirmed watermark (up to a confirm
// window of them, and a moment of confirms not yet recorded), and one of
// them holds bytes the file no longer has: the file changed in place
// during the send and was then rewritten as it was. The --resume is
// refused: the 'U' record names the highest segment published and the
// CRC-32C of everything up to it, and the file's bytes up to there differ.
// (The second review found the resume accepted, 'V' covering only the
// segments below the watermark: the consumer placed the changed copy,
// dead-lettered the good one as a conflict and failed on the SHA-256,
// for a transfer the producer reported sent.)
func TestResumeRefusesChangedBytesPublishedAboveWatermark(t *testing.T) {
	e := newEnv(t)
	in, data := review4Snapshot(t, e, "db.bin", 21)
	changedAt := int64(len(data) / 2)
	const mss = 4096
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var changed, killed atomic.Bool
	cfg := SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Log: e.log, Progress: func(n int64) {
		// After the read before the send, and before the read-ahead
		// (64 segments of 4 KiB at most) reaches the middle: change it.
		if !changed.Swap(true) {
			changeInPlace(t, in)
		}
		// The segment holding the changed bytes was just published: die
		// (as kill -9 would: nothing more reaches the state file).
		if n > changedAt+8 && !killed.Swap(true) {
			cancel()
		}
	}}
	if _, err := Send(ctx, in, cfg); err == nil {
		t.Fatal("setup: the interrupted send succeeded")
	}
	state := in + ".segmq-send"
	w := stateWatermark(t, state)
	if int64(w)*mss > changedAt {
		t.Fatalf("setup: the watermark (%d) already covers the changed segment (%d); the scenario needs it above", w, changedAt/mss)
	}
	// Regenerated: the snapshot as the writer wrote it, a fresh sidecar.
	if err := snapfile.WriteWithSidecar(in, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		t.Fatal(err)
	}
	cfg.Progress = nil
	resumeRefusedOrExact(t, e, in, cfg, data, fmt.Sprintf("--resume (watermark %d, changed segment %d published above it)", w, changedAt/mss))
}

// resumeRefusedOrExact runs Send --resume of in with cfg: it must be
// refused, or the consumer must then restore exactly data. Never "sent"
// for a transfer the consumer cannot restore.
func resumeRefusedOrExact(t *testing.T, e *env, in string, cfg SendConfig, data []byte, what string) {
	t.Helper()
	cfg.Resume = true
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
		t.Fatalf("%s reported sent (%d segments, resumed %d); the consumer cannot restore it: verified=%v conflicts=%d err=%v, --out equals the snapshot: %v; want the resume refused, or a transfer the consumer restores",
			what, sent.Segments, sent.Resumed, res.Verified, res.Conflicts, rerr, bytes.Equal(got, data))
	}
}

// bigTrailerSnapshot is a valid snapshot of many empty tables whose
// trailer counts each: a trailer record of over 4 MiB (a database of
// ~700k tables; recordio allows records of 64 MiB).
func bigTrailerSnapshot(t *testing.T, tables int) []byte {
	t.Helper()
	var buf bytes.Buffer
	rw := recordio.NewWriter(&buf)
	write := func(m *pb.Record) {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := rw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	write(&pb.Record{Kind: &pb.Record_Header{Header: &pb.Header{FormatVersion: 1, Database: "many", Generator: "review5"}}})
	tr := &pb.Trailer{}
	for i := 1; i <= tables; i++ {
		write(&pb.Record{Kind: &pb.Record_Table{Table: &pb.Table{Id: uint32(i), Name: fmt.Sprintf("s.t%d", i),
			Columns: []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64}}}}})
		tr.Tables = append(tr.Tables, &pb.TableCount{TableId: uint32(i), Rows: 0})
	}
	write(&pb.Record{Kind: &pb.Record_Trailer{Trailer: tr}})
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSidecarPathSendsSnapshotWithBigTrailer: a complete, valid snapshot
// with its sidecar, whose trailer is over 4 MiB, is sent with the default
// flags. (The review found the skipped read's walk refusing it at the last
// segment, every byte sent for nothing.)
func TestSidecarPathSendsSnapshotWithBigTrailer(t *testing.T) {
	e := newEnv(t)
	data := bigTrailerSnapshot(t, 800_000)
	if _, _, err := snapfile.Check(bytes.NewReader(data)); err != nil {
		t.Fatalf("setup: not a valid snapshot: %v", err)
	}
	in := filepath.Join(e.dir, "many.bin")
	if err := snapfile.WriteWithSidecar(in, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		t.Fatal(err)
	}
	var published atomic.Int64
	sent, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, Log: e.log,
		Progress: func(n int64) { published.Store(n) }})
	if err != nil {
		t.Fatalf("default send of a valid %d-byte snapshot with a sidecar (trailer over 4 MiB): %v; %d bytes had been published", len(data), err, published.Load())
	}
	out := filepath.Join(e.dir, "out.bin")
	res := e.receive(e.receiveCfg(out))
	got, _ := os.ReadFile(out)
	if !res.Verified || !bytes.Equal(got, data) {
		t.Fatalf("sent %+v, but the consumer: verified=%v, equal=%v", sent, res.Verified, bytes.Equal(got, data))
	}
}

// TestAbandonedTransferDoesNotStallTheRerun: the send of a snapshot
// changed in place (mtime set back) is refused; the user does what the
// error says ("run again with --rehash to send the file as it is now"),
// and the consumer, run as usual, restores the file as it is now. (The
// review found the refused send had published every segment but the last,
// and the consumer took that abandoned transfer and timed out.)
func TestAbandonedTransferDoesNotStallTheRerun(t *testing.T) {
	e := newEnv(t)
	in, _ := review4Snapshot(t, e, "db.bin", 22)
	changeInPlace(t, in)
	now, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, Log: e.log})
	if err == nil {
		t.Fatal("setup: the send of a file changed in place succeeded")
	}
	t.Logf("first send: %v", err)
	sent, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, Log: e.log, Rehash: true})
	if err != nil {
		t.Fatalf("the advised --rehash: %v", err)
	}
	out := filepath.Join(e.dir, "out.bin")
	rc := e.receiveCfg(out)
	rc.Timeout = 10 * time.Second
	res, rerr := Receive(context.Background(), rc)
	got, _ := os.ReadFile(out)
	if rerr != nil || !res.Verified || !bytes.Equal(got, now) {
		t.Fatalf("after the abandoned transfer and the advised --rehash (transfer %s, sent), the consumer: transfer %s verified=%v err=%v, --out is the file: %v; want the re-sent file restored",
			sent.Transfer, res.Transfer, res.Verified, rerr, bytes.Equal(got, now))
	}
}

// TestSendRefusedMidwayIsAbandoned: a file that changes in place during
// the send fails it before the last segment (ErrInputChanged), and the
// transfer is abandoned: the error says so, the state file is gone, so no
// --resume can add to what was published, and a plain rerun sends the
// file as it is now instead of being refused as unfinished.
func TestSendRefusedMidwayIsAbandoned(t *testing.T) {
	e := newEnv(t)
	in, _ := review4Snapshot(t, e, "db.bin", 23)
	var changed atomic.Bool
	cfg := SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 4096, Log: e.log, Progress: func(int64) {
		if !changed.Swap(true) { // after the read before the send
			changeInPlace(t, in)
		}
	}}
	_, err := Send(context.Background(), in, cfg)
	if !errors.Is(err, ErrInputChanged) || !strings.Contains(err.Error(), "is abandoned") || !strings.Contains(err.Error(), "state file is removed") {
		t.Fatalf("Send of a file changed during the send: %v; want ErrInputChanged, the transfer abandoned and its state file removed", err)
	}
	if _, serr := os.Stat(in + ".segmq-send"); !os.IsNotExist(serr) {
		t.Fatalf("the abandoned transfer's state file is still there: %v", serr)
	}
	cfg.Progress, cfg.Rehash = nil, true
	if _, err := Send(context.Background(), in, cfg); err != nil {
		t.Fatalf("the rerun the error advises (--rehash): %v", err)
	}
}
