package transfer

// Review round 2: hostile tests against a real broker. Each test states
// what the README/doc promise and asserts that promise; a failing test is
// a finding. Run with a broker, e.g.
//
//	AMQP_URL=amqp://guest:guest@127.0.0.1:PORT/ go test -race -run TestReview -v ./transfer/

import (
	"context"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/segment"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestReviewPrefetch1SetAsidePaced: README: "Set-asides with no progress
// in between are paced (a pause of 10 ms growing to 1 s after each
// prefetch-full of them), so a queue holding only other transfers'
// segments is not spun." With --prefetch 1 the pacing condition
// (unproduct % prefetch == 1) can never hold, since x % 1 == 0.
func TestReviewPrefetch1SetAsidePaced(t *testing.T) {
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

// TestReviewSeedMessageFirstCapturesConsumer: one stray seed-format
// message (no headers, total 1) at the head of a queue holding a segmq
// transfer. The consumer (no --transfer) binds to it, writes its 5 bytes
// to --out and exits 0: an unverified file, not the segmq transfer.
func TestReviewSeedMessageFirstCapturesConsumer(t *testing.T) {
	e := newEnv(t)
	data := randData(2, 5000)
	stray := segment.Header{Seq: 0, Total: 1}.Bytes()
	e.publish(append([]msg{{body: append(stray[:], "hello"...)}}, segmqBodies(t, "real", data, 1000)...))
	out := filepath.Join(e.dir, "out.bin")
	res, err := Receive(context.Background(), e.receiveCfg(out))
	got, _ := os.ReadFile(out)
	t.Logf("err=%v transfer=%q verified=%v out=%q", err, res.Transfer, res.Verified, got)
	if err == nil && !res.Verified {
		t.Errorf("exit 0 with an unverified %d-byte --out (%q) from a stray headerless message; the segmq transfer %q (%d bytes, with SHA-256) was in the queue",
			len(got), got, "real", len(data))
	}
}

// TestReviewSeedMessageFirstBlocksTransfer: the same with a stray
// headerless message of total 2 (the second never comes): the consumer
// binds to the seed-format transfer and moves every segment of the real
// transfer to the tail until --timeout.
func TestReviewSeedMessageFirstBlocksTransfer(t *testing.T) {
	e := newEnv(t)
	data := randData(3, 5000)
	stray := segment.Header{Seq: 0, Total: 2}.Bytes()
	e.publish(append([]msg{{body: append(stray[:], make([]byte, 1000)...)}}, segmqBodies(t, "real", data, 1000)...))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 3 * time.Second
	res, err := Receive(context.Background(), cfg)
	t.Logf("err=%v transfer=%q setaside=%d", err, res.Transfer, res.SetAside)
	if err != nil {
		t.Errorf("a single stray headerless message captured the consumer; the intact segmq transfer in the queue was not restored: %v", err)
	}
}

// TestReviewForgedFirstSegmentCaptures: a well-formed segment with the
// same transfer id but a different size (e.g. an earlier producer run
// with the same --transfer, or a forged one) arrives first. It passes
// every check, binds the consumer, and then every genuine segment is
// dead-lettered as "headers disagree": one bad first message binds the
// consumer to a bogus transfer (issue 6) and destroys the real one.
func TestReviewForgedFirstSegmentCaptures(t *testing.T) {
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

// TestReviewConflictingDuplicateLosesGoodCopy: a copy of segment 1 with
// other bytes (valid CRC, same headers otherwise) arrives before the
// genuine one. The genuine one is acked as a "duplicate" and dropped, the
// commit fails on the SHA-256, and no rerun can ever succeed: the good
// copy is gone from the broker (not in the queue, not in the DLQ).
func TestReviewConflictingDuplicateLosesGoodCopy(t *testing.T) {
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

// TestReviewWindow1Reversed: README: "the seed's stall (--window 1
// --prefetch 1 with segment 1 before 0) ... completes". With more than
// two segments in reverse order and a small prefetch, each pass through
// the queue places about one segment and the set-asides are paced.
func TestReviewWindow1Reversed(t *testing.T) {
	for _, prefetch := range []int{1, 2, 4} {
		t.Run(itoa(prefetch), func(t *testing.T) {
			e := newEnv(t)
			const mss, n = 100, 40
			data := randData(7, n*mss)
			m := segmqBodies(t, "rev", data, mss)
			for i, j := 0, len(m)-1; i < j; i, j = i+1, j-1 {
				m[i], m[j] = m[j], m[i]
			}
			e.publish(m)
			out := filepath.Join(e.dir, "out.bin")
			cfg := e.receiveCfg(out)
			cfg.ReorderWindow, cfg.Prefetch, cfg.Timeout = 1, prefetch, 10*time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			res, err := Receive(ctx, cfg)
			t.Logf("prefetch %d, %d segments reversed: err=%v in %s, set aside %d", prefetch, n, err, time.Since(start).Round(time.Millisecond), res.SetAside)
			if err != nil {
				t.Errorf("--window 1 --prefetch %d with %d reversed segments did not complete within 60s: %v", prefetch, n, err)
			}
		})
	}
}

// TestReviewJournalMidCorruptionSilent: a record in the middle of
// OUT.part.state whose CRC fails is not a torn tail (valid records follow
// it), yet Open treats it as one: it silently truncates the journal there
// and forgets every later record. Those segments were acked, so the
// resumed consumer waits for segments the broker no longer has, and
// never says the state file was corrupt.
func TestReviewJournalMidCorruptionSilent(t *testing.T) {
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

// TestReviewSeedResume: a seed-format (headerless) transfer whose last,
// short segment arrives first, interrupted, then resumed.
func TestReviewSeedResume(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(12, 10*mss+37)
	m := seedBodies(data, mss)
	out := filepath.Join(e.dir, "out.bin")
	e.publish([]msg{m[len(m)-1], m[3], m[0]})
	cfg := e.receiveCfg(out)
	cfg.Timeout, cfg.SeedFormat = time.Second, true
	if _, err := Receive(context.Background(), cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	e.publish(m)
	cfg.Timeout = 3 * time.Second
	if _, err := Receive(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	e.mustEqualFile(out, data)
}

// TestReviewWindowPrefetchSweep: shuffled arrival, small windows and
// prefetches. Every run must complete exactly; the log shows how long it
// took and how many moves it cost. (A subtest whose context deadline
// fires can hang in ch.Close: see TestReviewCancelHangs.)
func TestReviewWindowPrefetchSweep(t *testing.T) {
	for _, w := range []uint32{1, 2} {
		for _, pf := range []int{2, 3, 16} {
			t.Run("w"+itoa(int(w))+"p"+itoa(pf), func(t *testing.T) {
				e := newEnv(t)
				const mss, n = 100, 60
				data := randData(uint64(w)*100+uint64(pf), n*mss)
				m := segmqBodies(t, "sw", data, mss)
				r := rand.New(rand.NewPCG(uint64(w), uint64(pf)))
				r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
				e.publish(m)
				out := filepath.Join(e.dir, "out.bin")
				cfg := e.receiveCfg(out)
				cfg.ReorderWindow, cfg.Prefetch, cfg.Timeout = w, pf, 15*time.Second
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				start := time.Now()
				res, err := Receive(ctx, cfg)
				t.Logf("window %d prefetch %d: %s, set aside %d, err %v", w, pf, time.Since(start).Round(time.Millisecond), res.SetAside, err)
				if err != nil {
					t.Errorf("window %d prefetch %d, %d shuffled segments: %v", w, pf, n, err)
					return
				}
				e.mustEqualFile(out, data)
			})
		}
	}
}

// TestReviewTruncatedPartIsLoud: OUT.part cut short between runs (disk
// trouble, an operator): the resumed consumer must fail loudly, never
// rename, never exit 0.
func TestReviewTruncatedPartIsLoud(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(15, 30*mss)
	m := segmqBodies(t, "trunc", data, mss)
	e.publish(m[:25])
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = time.Second
	if _, err := Receive(context.Background(), cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	if err := os.Truncate(out+".part", 1234); err != nil {
		t.Fatal(err)
	}
	e.publish(m[25:])
	cfg.Timeout = 3 * time.Second
	_, err := Receive(context.Background(), cfg)
	t.Logf("resumed over a truncated .part: %v", err)
	if err == nil {
		t.Fatal("exit 0 over a truncated .part")
	}
	if _, serr := os.Stat(out); serr == nil {
		t.Fatal("--out written")
	}
}

// TestReviewCrashAfterCommitRename: a crash between the rename of .part
// to --out and the removal of .part.state (partfile.commit) leaves a
// complete, correct --out and a stale journal. The rerun says "state file
// ... exists but its .part does not; pass --restart to start over": it
// does not see that the transfer is already complete at --out.
func TestReviewCrashAfterCommitRename(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(16, 10*mss)
	m := segmqBodies(t, "crash", data, mss)
	e.publish(m[:9])
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = time.Second
	if _, err := Receive(context.Background(), cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	e.publish(m[9:])
	cfg.Timeout = 3 * time.Second
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

// TestReviewGoroutines: repeated Sends and Receives (complete, timed out,
// with moves) leave no goroutines behind.
func TestReviewGoroutines(t *testing.T) {
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

// TestReviewCancelHangs: when Receive's context ends (Ctrl-C or SIGTERM
// in the consumer command, which runs under signal.NotifyContext),
// amqp091-go's ConsumeWithContext goroutine sends basic.cancel and waits
// for cancel-ok, while Receive (flush on the way out, then reconnect's
// ch.Close) runs its own synchronous calls on the same channel. The two
// RPCs race for the channel's one rpc reply slot; the loser waits for
// ever. Observed: Receive stuck 6+ minutes in ch.Close (retry.go:77)
// after its 30s context deadline (goroutine dump in the report).
func TestReviewCancelHangs(t *testing.T) {
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

// TestReviewStaleDuplicatesCaptureNextConsumer: a producer killed (or
// Ctrl-C'd, or whose connection dropped) after publishing segments whose
// confirms it had not journaled is resumed from its watermark and
// publishes them again (at-least-once, as designed). The consumer
// completes from the first copies and leaves the second ones in the
// queue, where nothing ever removes them. The next day's consumer, with
// no --transfer ("the first to arrive"), binds to yesterday's leftovers:
//   - a complete leftover copy (e.g. two interrupted runs resumed from a
//     watermark of 0): it restores YESTERDAY's file, exit 0, "size and
//     sha256 verified";
//   - a partial leftover copy: it waits for ever (default --timeout 0),
//     moving today's transfer to the tail again and again.
//
// Reproduced with real processes too (see the report: kq2 held 30728
// leftover messages after a kill/resume run, and
// `consumer --out newout.bin` restored the previous 60 MB transfer).
func TestReviewStaleDuplicatesCaptureNextConsumer(t *testing.T) {
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
