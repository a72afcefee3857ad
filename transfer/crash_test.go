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

// The crash tests drive the consumer's real receive path (classify,
// place, flush: persist then ack) and its real part file on a strict
// in-memory filesystem (vfs.MemFS), with the channel replaced by a
// recorder: no broker is needed to see what was acked, and the
// filesystem shows what a power loss would keep. At every ack the
// recorder asks "if the plug were pulled now": it opens the part file on
// a crash copy of the filesystem and checks that every segment acked so
// far is in its journal and its bytes are on disk. Acked and lost would
// be a segment the broker has forgotten and the consumer never had: the
// transfer could never complete.

const crashOut = "/srv/restore/out.bin"

// crashChannel is the consumer's channel: it records acks and nacks,
// and checks durability at every ack.
type crashChannel struct {
	t       *testing.T
	fs      *vfs.MemFS
	seqOf   map[uint64]uint32 // delivery tag -> seq, this channel
	pending map[uint64]bool   // delivered, not settled
	acked   map[uint32]bool   // seqs acked, across channels (restarts)
	payload func(seq uint32) []byte
	sha     string
	checks  int
}

func (c *crashChannel) Ack(tag uint64, multiple bool) error {
	var now []uint64
	for t := range c.pending {
		if t == tag || multiple && t < tag {
			now = append(now, t)
		}
	}
	if !c.pending[tag] {
		return fmt.Errorf("unknown delivery tag %d", tag)
	}
	for _, t := range now {
		delete(c.pending, t)
		c.acked[c.seqOf[t]] = true
	}
	c.checkDurable(fmt.Sprintf("ack(%d, multiple=%v)", tag, multiple))
	return nil
}

func (c *crashChannel) Nack(tag uint64, multiple, requeue bool) error {
	c.t.Errorf("nack(%d, requeue=%v) of a good segment", tag, requeue)
	delete(c.pending, tag)
	return nil
}

func (c *crashChannel) Reject(tag uint64, requeue bool) error { return c.Nack(tag, false, requeue) }

// checkDurable: everything acked so far survives a crash now.
func (c *crashChannel) checkDurable(when string) {
	c.t.Helper()
	c.checks++
	crashed := c.fs.CrashClone()
	p, err := openPart(crashed, crashOut, false, "", 0, discard())
	if err != nil {
		c.t.Fatalf("after %s, a crash leaves a part file that does not open: %v", when, err)
	}
	defer p.close()
	if p.bound() == nil {
		c.t.Fatalf("after %s (%d segments acked), a crash leaves no journal", when, len(c.acked))
	}
	missing := map[uint32]bool{}
	for _, s := range p.asm.Missing(nil, int(p.asm.Total())) {
		missing[s] = true
	}
	for seq := range c.acked {
		if missing[seq] {
			c.t.Fatalf("after %s: segment %d was acked, but a power loss now loses it (not in the journal)", when, seq)
		}
		want := c.payload(seq)
		got := make([]byte, len(want))
		if n, _ := p.f.ReadAt(got, int64(seq)*int64(p.asm.MSS())); n != len(want) || !bytes.Equal(got, want) {
			c.t.Fatalf("after %s: segment %d was acked and is in the journal, but a power loss now loses its bytes in the .part", when, seq)
		}
	}
	if len(c.acked) > 0 && p.sha != c.sha {
		c.t.Fatalf("after %s: the producer's SHA-256 came with an acked segment, but a power loss now loses it (journal has %q)", when, p.sha)
	}
}

// crashReceiver builds a receiver as Receive does, on fsys, with ch as
// its channel. It resumes what fsys holds.
func crashReceiver(t *testing.T, fsys vfs.FS, ch *crashChannel, ackEvery int) *receiver {
	t.Helper()
	part, err := openPart(fsys, crashOut, false, "", 0, discard())
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{cfg: ReceiveConfig{Prefetch: 1 << 20, AckEvery: ackEvery}, log: discard(), part: part,
		cls: classifier{maxMSS: segment.MaxMSS}, asides: map[string]int{}, staleSeen: map[doneKey]bool{}}
	r.parkCap = r.cfg.Prefetch - 1
	r.acks = &acker{ch: ch}
	if part.bound() != nil {
		r.cls.digest = part.sha
	}
	return r
}

// TestCrashNeverAcksWhatPowerLossLoses: segments arrive in a random
// order, with duplicates, in batches of random size; at every ack a crash
// copy of the filesystem holds every acked segment (journal and bytes).
// At random points the plug is really pulled (some unsynced writes
// survive, as on real disks): the consumer restarts, resumes exactly
// what was acked, gets the unacked ones again (as the broker redelivers
// them), and completes the exact file, which then survives a crash too.
func TestCrashNeverAcksWhatPowerLossLoses(t *testing.T) {
	runCrashes(t, crashRuns{seeds: 12, ackEvery: []int{1, 3, 8, 64}})
}

// crashRuns is what a crash test varies.
type crashRuns struct {
	seeds    uint64 // one subtest a seed
	ackEvery []int  // each seed draws one
	// midSync pulls the plug while a background batch may still be
	// running (its fsync or its journal append), not after it finished;
	// the restart then resumes at least what was acked and at most what
	// was placed, not exactly what was journaled.
	midSync bool
}

// runCrashes is the crash harness: for each seed, a random delivery
// order with duplicates through the real receive path on a strict
// in-memory filesystem, the plug pulled at random points, a restart that
// must resume what the journal promised, and a commit that survives a
// crash.
func runCrashes(t *testing.T, o crashRuns) {
	const mss = 100
	data := randData(14, 57*mss+31) // 58 segments, the last short
	msgs := segmqBodies(t, "crash", data, mss)
	payload := func(seq uint32) []byte { return msgs[seq].body[segment.HeaderSize:] }
	for seed := range o.seeds {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 14))
			fs := vfs.NewStrictMem()
			ch := &crashChannel{t: t, fs: fs, acked: map[uint32]bool{}, payload: payload, sha: hexSHA(data)}
			ackEvery := o.ackEvery[rng.IntN(len(o.ackEvery))]
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
				if o.midSync {
					if r.batch != nil && rng.IntN(3) == 0 {
						runtime.Gosched() // let it reach the fsync, or the append, or not
					}
				} else {
					r.part.waitSync()
				}
				for t := range ch.pending {
					queue = append(queue, ch.seqOf[t])
				}
				placed, journaled := r.part.asm.Received(), uint32(0)
				if !o.midSync {
					// Journaled: every placed segment but those placed
					// since the last batch started (not in any persist
					// yet). Mid sync the batch's goroutine still runs.
					journaled = placed
					for _, run := range r.part.runs {
						journaled -= run.N
					}
				}
				if o.midSync {
					fs.CrashKeepSome(rng) // while the background batch may be mid-fsync or mid-append
					r.part.waitSync()     // its goroutine sees the crashed handles fail; join it
					r.part.hash.stop()
				} else {
					r.part.hash.stop() // the process is gone; nothing else of it runs
					fs.CrashKeepSome(rng)
				}
				restarts++
				tag = 0
				r = newSession()
				// Every acked segment is resumed (checkDurable proved it
				// at each ack), and a batch made durable but not yet
				// acked may be, whose redelivered copies are then
				// duplicates. After the plug is pulled between batches
				// the restart resumes exactly what was journaled; mid
				// sync, nothing unplaced is ever resumed.
				got, acked := r.part.resumed, uint32(len(ch.acked))
				if o.midSync && (got < acked || got > placed) {
					t.Fatalf("restart %d resumed %d segments: %d were acked, %d placed", restarts, got, acked, placed)
				}
				if !o.midSync && (got != journaled || got < acked) {
					t.Fatalf("restart %d resumed %d segments: %d were journaled, %d acked", restarts, got, journaled, acked)
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
			t.Logf("ack-every %d, %d restarts, %d durability checks", ackEvery, restarts, ch.checks)
		})
	}
}
