package transfer

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/segment"
)

// TestCrashWhileBackgroundSyncRunsNeverLosesAcked is
// TestCrashNeverAcksWhatPowerLossLoses with the plug pulled while a
// background batch may still be running (its fsync or its journal
// append), not after it finished, and 200 seeds.
func TestCrashWhileBackgroundSyncRunsNeverLosesAcked(t *testing.T) {
	const mss = 100
	data := randData(14, 57*mss+31) // 58 segments, the last short
	msgs := segmqBodies(t, "crash", data, mss)
	payload := func(seq uint32) []byte { return msgs[seq].body[segment.HeaderSize:] }
	for seed := range uint64(60) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 14))
			fs := vfs.NewStrictMem()
			ch := &crashChannel{t: t, fs: fs, acked: map[uint32]bool{}, payload: payload, sha: hexSHA(data)}
			ackEvery := []int{1, 3, 8}[rng.IntN(3)]
			restarts := 0
			var queue []uint32 // what the broker holds, in delivery order
			for _, i := range rng.Perm(len(msgs)) {
				queue = append(queue, uint32(i))
				if rng.IntN(5) == 0 { // a duplicate copy, later
					queue = append(queue, uint32(rng.IntN(len(msgs))))
				}
			}
			newSession := func() *receiver {
				ch.seqOf, ch.pending = map[uint64]uint32{}, map[uint64]bool{}
				return crashReceiver(t, fs, ch, ackEvery)
			}
			r := newSession()
			tag := uint64(0)
			for len(queue) > 0 && (r.part.bound() == nil || !r.part.asm.Complete()) {
				seq := queue[0]
				queue = queue[1:]
				tag++
				ch.seqOf[tag], ch.pending[tag] = seq, true
				d := amqp.Delivery{Acknowledger: ch, DeliveryTag: tag, Headers: msgs[seq].headers, Body: msgs[seq].body}
				if err := r.handle(context.Background(), d); err != nil {
					t.Fatalf("handle %d: %v", seq, err)
				}
				if err := r.maybeFlush(); err != nil {
					t.Fatal(err)
				}
				if r.batch != nil && rng.IntN(2) == 0 { // the loop sees the background batch done
					<-r.batchDone()
					if err := r.ackDurable(); err != nil {
						t.Fatal(err)
					}
				}
				if rng.IntN(12) != 0 {
					continue
				}
				// Pull the plug. The broker redelivers what was not acked.
				// A batch being synced in the background finishes first
				// (or the crash would race the test's own goroutine); it
				// is never acked: the crash lands between its sync and
				// its ack.
				if r.batch != nil && rng.IntN(3) == 0 {
					runtime.Gosched() // let it reach the fsync, or the append, or not
				}
				for t := range ch.pending {
					queue = append(queue, ch.seqOf[t])
				}
				placed := r.part.asm.Received()
				fs.CrashKeepSome(rng) // while the background batch may be mid-fsync or mid-append
				r.part.waitSync()     // its goroutine sees the crashed handles fail; join it
				r.part.hash.stop()
				restarts++
				tag = 0
				r = newSession()
				// Every acked segment is resumed (checkDurable proved it
				// at each ack); a batch made durable but not yet acked
				// may be resumed too, and its redelivered copies are then
				// duplicates. Nothing unplaced is ever resumed.
				if got, acked := r.part.resumed, uint32(len(ch.acked)); got < acked || got > placed {
					t.Fatalf("restart %d resumed %d segments: %d were acked, %d placed", restarts, got, acked, placed)
				}
			}
			if !r.part.asm.Complete() {
				t.Fatalf("incomplete: %d of %d", r.part.asm.Received(), r.part.asm.Total())
			}
			if err := r.flush(true); err != nil {
				t.Fatal(err)
			}
			if _, _, err := r.part.commit(); err != nil {
				t.Fatal(err)
			}
			r.part.close()
			fs.Crash()
			got, err := vfs.ReadFile(fs, crashOut)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after a crash right after the commit, --out is not the file: %v", err)
			}
			if left := fs.List("/srv/restore"); !slices.Equal(left, []string{"out.bin"}) {
				t.Fatalf("left after the commit and a crash: %v", left)
			}
			_ = fmt.Sprintf("ack-every %d, %d restarts, %d durability checks", ackEvery, restarts, ch.checks)
		})
	}
}
