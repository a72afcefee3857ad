package transfer

import (
	"context"
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/segment"
)

// shortAppendFS is a strict in-memory filesystem whose consumer journal,
// once armed, fails its next append the way a full disk does: write(2)
// takes part of the bytes, then ENOSPC.
type shortAppendFS struct {
	*vfs.MemFS
	armed *atomic.Bool
}

func (f shortAppendFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	file, err := f.MemFS.OpenFile(name, flag, perm)
	if err != nil || name != crashOut+".part.state" || flag&os.O_APPEND == 0 {
		return file, err
	}
	return shortAppendFile{File: file, armed: f.armed}, nil
}

type shortAppendFile struct {
	vfs.File
	armed *atomic.Bool
}

func (f shortAppendFile) Write(p []byte) (int, error) {
	if f.armed.CompareAndSwap(true, false) {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, &fs.PathError{Op: "write", Path: crashOut + ".part.state", Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

// TestNoAckAfterFailedJournalAppend: a background batch whose journal
// append fails (disk full: half the record written) stops the consumer.
// On its way out the session settles what it can on the still-open
// channel (flush(true), as session does for any non-retriable error):
// segments placed after the failed batch are persisted and acked. Their
// journal record lands after the torn half record, where replay (which
// stops at the first bad record) never reads it: acked, yet not resumed
// by the next run, and gone from the queue. The transfer can never
// complete. The claim under test: "an fsync/journal error stops the
// consumer without acking".
func TestNoAckAfterFailedJournalAppend(t *testing.T) {
	const mss = 100
	data := randData(21, 20*mss)
	msgs := segmqBodies(t, "jfault", data, mss)
	mem := vfs.NewStrictMem()
	armed := &atomic.Bool{}
	fsys := shortAppendFS{MemFS: mem, armed: armed}
	ch := &crashChannel{t: t, fs: mem, acked: map[uint32]bool{}, sha: hexSHA(data),
		payload: func(seq uint32) []byte { return msgs[seq].body[segment.HeaderSize:] },
		seqOf:   map[uint64]uint32{}, pending: map[uint64]bool{}}
	r := crashReceiver(t, fsys, ch, 4)
	tag := uint64(0)
	deliver := func(seq uint32) {
		t.Helper()
		tag++
		ch.seqOf[tag], ch.pending[tag] = seq, true
		d := amqp.Delivery{Acknowledger: ch, DeliveryTag: tag, Headers: msgs[seq].headers, Body: msgs[seq].body}
		if err := r.handle(context.Background(), d); err != nil {
			t.Fatalf("handle %d: %v", seq, err)
		}
		if err := r.maybeFlush(); err != nil {
			t.Fatalf("maybeFlush after %d: %v", seq, err)
		}
	}
	// Batch 1 (segments 0-3) is made durable and acked.
	for seq := range uint32(4) {
		deliver(seq)
	}
	if r.batch == nil {
		t.Fatal("no background batch after 4 placed with ack-every 4")
	}
	<-r.batchDone()
	if err := r.ackDurable(); err != nil {
		t.Fatal(err)
	}
	// Batch 2 (4-7): its journal append hits a full disk.
	armed.Store(true)
	for seq := uint32(4); seq < 8; seq++ {
		deliver(seq)
	}
	// Placed while batch 2 is in the background.
	deliver(8)
	deliver(9)
	<-r.batchDone()
	err := r.ackDurable()
	if err == nil {
		t.Fatal("a failed journal append was not reported")
	}
	t.Logf("the loop stops with: %v", err)
	// What session does next for a non-retriable error: settle what it
	// can before it closes the channel. Acking 8 and 9 now is only safe
	// if they survive: checkDurable (at every ack) opens the journal as
	// a restart would.
	if ferr := r.flush(true); ferr != nil {
		t.Logf("flush on the way out: %v", ferr)
	}
	r.part.close()
	// A plain restart (no crash at all): everything acked must be resumed.
	again, oerr := openPart(mem, crashOut, false, "", 0, discard())
	if oerr != nil {
		t.Fatalf("after the consumer stopped on a full disk, its part file does not open: %v", oerr)
	}
	defer again.close()
	missing := map[uint32]bool{}
	for _, s := range again.asm.Missing(nil, int(again.asm.Total())) {
		missing[s] = true
	}
	for seq := range ch.acked {
		if missing[seq] {
			t.Errorf("segment %d was acked on the way out, but the restarted consumer does not have it (journal %d records past a torn append)", seq, len(ch.acked))
		}
	}
}
