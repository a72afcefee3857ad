package transfer

// Hostile runs of Receive against a real broker: forged, conflicting,
// corrupt and leftover input, interrupted runs, and what a run leaves
// behind (goroutines, a hung cancel). Each test states the README/doc
// promise it asserts; the defect each once caught is named in its comment.

import (
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestSetAsidesPacedAtEveryPrefetch: with only another transfer's three
// segments in the queue, a consumer waiting for its own transfer at
// --prefetch 1, 2 and 256 sets them aside at most 40*max(prefetch, 8)
// times in 4 s, ends with ErrIncomplete, and leaves the three in the
// queue (README: set-asides with no progress in between are paced). It
// once caught --prefetch 1 spinning the queue: the pacing condition
// (unproduct % prefetch == 1) never held, since x % 1 == 0.
func TestSetAsidesPacedAtEveryPrefetch(t *testing.T) {
	for _, prefetch := range []int{1, 2, 256} {
		t.Run(itoa(prefetch), func(t *testing.T) {
			e := newEnv(t)
			e.publish(segmqBodies(t, "other", randData(1, 300), 100)) // 3 segments of someone else
			cfg := e.receiveCfg(filepath.Join(e.dir, "out.bin"))
			cfg.Transfer, cfg.Prefetch, cfg.Timeout = "never-comes", prefetch, 4*time.Second
			c0 := cpuTime()
			res, err := Receive(context.Background(), cfg)
			cpu := cpuTime() - c0
			t.Logf("prefetch %d: err=%v; set aside %d times in 4s; CPU %s", prefetch, err, res.SetAside, cpu)
			if !errors.Is(err, ErrIncomplete) {
				t.Fatalf("err = %v", err)
			}
			// 10ms+20+...+1s pauses: a paced consumer moves at most a few
			// prefetches' worth per second once the backoff has grown.
			if limit := 40 * max(prefetch, 8); res.SetAside > limit {
				t.Errorf("prefetch %d: %d set-asides in 4s (> %d): the queue is spun, not paced", prefetch, res.SetAside, limit)
			}
			if n := e.queueDepth(e.topo.Name()); n != 3 {
				t.Errorf("queue holds %d messages after the run, want the 3 of the other transfer", n)
			}
		})
	}
}

// TestForgedFirstSegmentDoesNotDeadLetterGenuine: a well-formed segment
// with the same transfer id but another size (an earlier producer run
// with the same --transfer, or a forged one) arriving first does not make
// the consumer dead-letter the genuine segments behind it (fewer than
// len(real)-1 dead-lettered). It once caught the first message binding
// the consumer to the bogus transfer (issue 6) and every genuine segment
// dead-lettered as "headers disagree".
func TestForgedFirstSegmentDoesNotDeadLetterGenuine(t *testing.T) {
	e := newEnv(t)
	const mss = 1000
	data := randData(4, 10*mss+10)
	real := segmqBodies(t, "nightly", data, mss)
	forged := segmqBodies(t, "nightly", randData(5, 3*mss), mss)[0] // seq 0 of a 3-segment "nightly"
	e.publish(append([]msg{forged}, real...))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 3 * time.Second
	res, err := Receive(context.Background(), cfg)
	time.Sleep(300 * time.Millisecond)
	dlq := e.queueDepth(e.topo.DeadQueue())
	t.Logf("err=%v dead-lettered=%d; DLQ depth %d, queue depth %d", err, res.DeadLettered, dlq, e.queueDepth(e.topo.Name()))
	if res.DeadLettered >= len(real)-1 {
		t.Errorf("one forged first segment made the consumer dead-letter %d of the %d genuine segments", res.DeadLettered, len(real))
	}
}

// TestConflictingDuplicateKeepsGoodCopy: when a copy of segment 1 with
// other bytes (valid CRC, same headers otherwise) arrives before the
// genuine one, the run fails with ErrDigest and the genuine copy is still
// on the broker (in the queue or the DLQ), so a rerun can complete. It
// once caught the genuine copy acked as a "duplicate" and dropped.
func TestConflictingDuplicateKeepsGoodCopy(t *testing.T) {
	e := newEnv(t)
	const mss = 1000
	data := randData(6, 5*mss)
	real := segmqBodies(t, "t1", data, mss)
	bad := append([]byte(nil), real[1].body...)
	bad[100] ^= 0xff
	h := amqp.Table{}
	for k, v := range real[1].headers {
		h[k] = v
	}
	h[HdrCRC] = int64(crc32.Checksum(bad[8:], castagnoli))
	e.publish(append([]msg{{body: bad, headers: h}}, real...))
	out := filepath.Join(e.dir, "out.bin")
	res, err := Receive(context.Background(), e.receiveCfg(out))
	time.Sleep(300 * time.Millisecond)
	q, dlq := e.queueDepth(e.topo.Name()), e.queueDepth(e.topo.DeadQueue())
	t.Logf("err=%v duplicates=%d queue=%d dlq=%d", err, res.Duplicates, q, dlq)
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("err = %v, want a digest failure", err)
	}
	if q+dlq == 0 {
		t.Errorf("the genuine segment 1 (CRC %v) was acked as a duplicate of a conflicting one (CRC %v) and dropped: not in the queue, not in %s; the transfer cannot be completed by any rerun",
			real[1].headers[HdrCRC], h[HdrCRC], e.topo.DeadQueue())
	}
}

// TestJournalMidCorruptionIsReported: a record in the middle of
// OUT.part.state whose CRC fails (valid records follow it, so it is not a
// torn tail) makes the resumed run either restore the file exactly or
// fail with an error that names the corruption or the .part.state. It
// once caught Open truncating the journal there silently, forgetting the
// acked segments after it, so that the consumer waited for segments the
// broker no longer had.
func TestJournalMidCorruptionIsReported(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(9, 20*mss)
	m := segmqBodies(t, "jr", data, mss)
	out := filepath.Join(e.dir, "out.bin")
	// 19 segments, one batch each (AckEvery 1): one journal record each.
	for i := 0; i < 19; i++ {
		e.publish(m[i : i+1])
	}
	cfg := e.receiveCfg(out)
	cfg.AckEvery, cfg.Timeout = 1, 1500*time.Millisecond
	if _, err := Receive(context.Background(), cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	st, err := os.ReadFile(out + ".part.state")
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte in the data of the second record after the binding.
	off := 16
	for rec := 0; rec < 2; rec++ {
		off += 8 + int(uint32(st[off])|uint32(st[off+1])<<8|uint32(st[off+2])<<16|uint32(st[off+3])<<24)
	}
	for o := 16; o+8 <= len(st); {
		n := int(uint32(st[o]) | uint32(st[o+1])<<8 | uint32(st[o+2])<<16 | uint32(st[o+3])<<24)
		t.Logf("record at %d: type %q, %d bytes: % x", o, st[o+8], n, st[o+9:min(o+8+n, o+9+40)])
		o += 8 + n
	}
	t.Logf("state file %d bytes; corrupting byte %d", len(st), off+10)
	st[off+10] ^= 0x01
	if err := os.WriteFile(out+".part.state", st, 0o644); err != nil {
		t.Fatal(err)
	}
	e.publish(m[19:])
	cfg.Timeout = 2 * time.Second
	_, err = Receive(context.Background(), cfg)
	t.Logf("rerun: err=%v", err)
	if err == nil {
		e.mustEqualFile(out, data)
		return
	}
	msg := strings.ReplaceAll(err.Error(), e.dir, "DIR")
	if !strings.Contains(strings.ToLower(msg), "corrupt") && !strings.Contains(msg, ".part.state") {
		t.Errorf("a corrupt journal record in the middle of %s was dropped silently (with every record after it); the consumer now waits for acked segments and says only: %v", filepath.Base(out)+".part.state", err)
	}
}

// interrupted is a transfer of n 100-byte segments whose first cut a
// consumer placed in OUT.part before its 1 s --timeout ended it with
// ErrIncomplete.
type interrupted struct {
	e    *env
	data []byte
	m    []msg
	out  string
	cfg  ReceiveConfig
	cut  int
}

func newInterrupted(t *testing.T, id string, seed uint64, n, cut int) *interrupted {
	t.Helper()
	const mss = 100
	r := &interrupted{e: newEnv(t), data: randData(seed, n*mss), cut: cut}
	r.m = segmqBodies(t, id, r.data, mss)
	r.out = filepath.Join(r.e.dir, "out.bin")
	r.e.publish(r.m[:cut])
	r.cfg = r.e.receiveCfg(r.out)
	r.cfg.Timeout = time.Second
	if _, err := Receive(context.Background(), r.cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	return r
}

// rest publishes the segments the first run did not get and returns the
// rerun's config (a 3 s --timeout).
func (r *interrupted) rest() ReceiveConfig {
	r.e.t.Helper()
	r.e.publish(r.m[r.cut:])
	cfg := r.cfg
	cfg.Timeout = 3 * time.Second
	return cfg
}

// TestTruncatedPartFailsLoudly: OUT.part cut short between runs (disk
// trouble, an operator) makes the resumed consumer fail, and --out is not
// written. It guards against a resume that trusts the journal over the
// .part and renames a file with a hole in it.
func TestTruncatedPartFailsLoudly(t *testing.T) {
	r := newInterrupted(t, "trunc", 15, 30, 25)
	out := r.out
	if err := os.Truncate(out+".part", 1234); err != nil {
		t.Fatal(err)
	}
	_, err := Receive(context.Background(), r.rest())
	t.Logf("resumed over a truncated .part: %v", err)
	if err == nil {
		t.Fatal("exit 0 over a truncated .part")
	}
	if _, serr := os.Stat(out); serr == nil {
		t.Fatal("--out written")
	}
}

// TestRerunAfterCrashPastCommitRenameSaysComplete: after a crash between
// the rename of .part to --out and the removal of .part.state
// (partfile.commit), --out is the exact file and a rerun either succeeds
// or says --out is "already" complete. It once caught the rerun saying
// "state file ... exists but its .part does not; pass --restart", advice
// that discards the record of a complete transfer.
func TestRerunAfterCrashPastCommitRenameSaysComplete(t *testing.T) {
	r := newInterrupted(t, "crash", 16, 10, 9)
	e, data, out := r.e, r.data, r.out
	cfg := r.rest()
	// Keep a copy of the journal as it was just before commit removed it.
	st, _ := os.ReadFile(out + ".part.state")
	e.receive(cfg)
	e.mustEqualFile(out, data)
	// What a crash right after fsutil.Commit(p.path, p.out) leaves:
	// --out complete, the journal not yet removed (it then also holds
	// the last placement; the copy from before is close enough).
	if err := os.WriteFile(out+".part.state", st, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Receive(context.Background(), cfg)
	t.Logf("rerun after a crash between rename and journal removal: %v", err)
	if err != nil && !strings.Contains(err.Error(), "already") {
		t.Errorf("the rerun fails without saying that %s is already complete; its advice (--restart) discards the record of it: %v", filepath.Base(out), err)
	}
}

// TestSendReceiveLeaveNoGoroutines: five rounds of Send and Receive
// (complete, timed out, with moves) leave at most 3 more goroutines than
// before them. It guards against goroutines leaked by the confirm,
// consume and background-sync paths.
func TestSendReceiveLeaveNoGoroutines(t *testing.T) {
	e := newEnv(t)
	before := runtime.NumGoroutine()
	for i := range 5 {
		data := randData(uint64(100+i), 20_000)
		e.send(e.file("g.in", data), 1000, true)
		os.Remove(filepath.Join(e.dir, "g.in.segmq-send"))
		e.publish(segmqBodies(t, "other", randData(1, 3000), 1000))
		out := filepath.Join(e.dir, "g"+itoa(i)+".bin")
		cfg := e.receiveCfg(out)
		cfg.Timeout = time.Second
		cfg.Transfer = "nope"
		Receive(context.Background(), cfg) // times out, moving everything
		cfg.Transfer = ""
		cfg.Restart = true
		Receive(context.Background(), cfg)
	}
	time.Sleep(2 * time.Second)
	after := runtime.NumGoroutine()
	t.Logf("goroutines before %d, after %d", before, after)
	if after > before+3 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines grew from %d to %d:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

// TestReceiveReturnsAfterContextEnds: in 40 runs whose context ends
// after 50 ms to 450 ms (Ctrl-C or SIGTERM in the consumer command, which
// runs under signal.NotifyContext), Receive returns within 15 s of it. It
// once caught amqp091-go's ConsumeWithContext goroutine (basic.cancel,
// waiting for cancel-ok) racing Receive's own synchronous calls on the
// same channel for its one rpc reply slot: Receive stuck 6+ minutes in
// ch.Close (retry.go) after a 30 s deadline.
func TestReceiveReturnsAfterContextEnds(t *testing.T) {
	e := newEnv(t)
	e.publish(segmqBodies(t, "other", randData(1, 3000), 100)) // 30 segments of someone else
	hung := 0
	for i := range 40 {
		cfg := e.receiveCfg(filepath.Join(e.dir, "o"+itoa(i)+".bin"))
		cfg.Transfer, cfg.Prefetch, cfg.Timeout = "never-comes", 2+i%3, 0
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(50+i*37%400)*time.Millisecond)
		done := make(chan error, 1)
		go func() { _, err := Receive(ctx, cfg); done <- err }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			hung++
			buf := make([]byte, 1<<20)
			t.Errorf("run %d: Receive still running 15s after its context ended", i)
			t.Logf("%s", buf[:runtime.Stack(buf, true)])
		}
		cancel()
		if hung > 0 {
			break
		}
	}
}

// TestLeftoverDuplicatesDoNotCaptureNextConsumer: after day 1's transfer
// is restored from a queue that also holds second copies of its segments
// (a producer killed before journaling confirms and resumed from its
// watermark publishes them again, at-least-once as designed), day 2's
// consumer with no --transfer restores day 2's file, not day 1's, without
// error: for a complete leftover copy (two resumes from 0) and partial
// ones. It once caught the next consumer binding to the leftovers:
// restoring yesterday's file with exit 0 and "size and sha256 verified",
// or waiting for ever (default --timeout 0) on a partial copy. Seen with
// real processes too: kq2 held 30728 leftover messages after a
// kill/resume run, and `consumer --out newout.bin` restored the previous
// 60 MB transfer.
func TestLeftoverDuplicatesDoNotCaptureNextConsumer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		watermark int // where the resumed runs started again
		resumes   int // how many resumed runs
	}{{"two resumes from 0: complete leftover copy", 0, 2}, {"one resume from 0", 0, 1}, {"one resume from 500", 500, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			const mss = 100 // 1000 segments: more than one prefetch (256) of leftovers
			day1, day2 := randData(13, 1000*mss+3), randData(14, 70*mss+1)
			m1 := segmqBodies(t, "day1", day1, mss)
			// Run 1 published everything, then died before its confirms
			// were journaled; run 2 (--resume) published [watermark, N) again.
			all := append([]msg(nil), m1...)
			for range tc.resumes {
				all = append(all, m1[tc.watermark:]...)
			}
			e.publish(all)
			out1 := filepath.Join(e.dir, "day1.bin")
			e.receive(e.receiveCfg(out1))
			e.mustEqualFile(out1, day1)
			t.Logf("after day 1 restored: %d messages left in the queue", e.queueDepth(e.topo.Name()))
			// Day 2: a new snapshot, sent and restored the normal way.
			e.send(e.file("day2.in", day2), mss, true)
			out2 := filepath.Join(e.dir, "day2.bin")
			cfg := e.receiveCfg(out2)
			cfg.Timeout = 3 * time.Second
			res, err := Receive(context.Background(), cfg)
			got, _ := os.ReadFile(out2)
			t.Logf("day 2 consumer: transfer %q, verified %v, err %v; --out is %d bytes (day1 %d, day2 %d)", res.Transfer, res.Verified, err, len(got), len(day1), len(day2))
			switch {
			case err == nil && string(got) == string(day1):
				t.Errorf("exit 0, \"verified\", but --out is yesterday's snapshot (transfer day1 left over in the queue), not the one just sent")
			case err != nil:
				t.Errorf("the day-2 consumer bound to day1's leftovers and never restored day2 (with the default --timeout 0 it would wait for ever): %v", err)
			}
		})
	}
}
