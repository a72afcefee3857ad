package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"
)

// snapshot is a generated input.
type snapshot struct {
	path  string
	rows  int64
	bytes int64
}

// bytesPerRow is measured once on a small snapshot, to turn a target
// size into a row count (row i depends only on the seed and i).
func (b *bench) bytesPerRow(ctx context.Context, profile string) (float64, error) {
	const rows = 200_000
	s, _, err := b.gen(ctx, "calibrate.snap", rows, 2, profile)
	if err != nil {
		return 0, err
	}
	defer os.Remove(s.path)
	return float64(s.bytes) / rows, nil
}

// gen runs `snapshot gen` and returns the file and the wall time.
func (b *bench) gen(ctx context.Context, name string, rows int64, workers int, profile string) (snapshot, time.Duration, error) {
	path := b.path(name)
	args := []string{"gen", "--records", strconv.FormatInt(rows, 10), "--workers", strconv.Itoa(workers), "--out", path}
	if profile != "" {
		args = append(args, "--profile", profile)
	}
	start := time.Now()
	if out, err := exec.CommandContext(ctx, filepath.Join(b.o.bin, "snapshot"), args...).CombinedOutput(); err != nil {
		return snapshot{}, 0, fmt.Errorf("snapshot gen: %w: %s", err, out)
	}
	el := time.Since(start)
	fi, err := os.Stat(path)
	if err != nil {
		return snapshot{}, 0, err
	}
	return snapshot{path: path, rows: rows, bytes: fi.Size()}, el, nil
}

// sized generates a snapshot of about size bytes.
func (b *bench) sized(ctx context.Context, name string, size int64, bpr float64, profile string) (snapshot, error) {
	b.logf("generating %s (%s)", name, human(size))
	s, _, err := b.gen(ctx, name, int64(float64(size)/bpr), 2, profile)
	return s, err
}

// e2eResult is one segmq transfer.
type e2eResult struct {
	elapsed     time.Duration
	producerRSS int64 // KiB
	consumerRSS int64 // KiB
	wireBytes   int64 // payload bytes published (after compression)
}

var wireRE = regexp.MustCompile(`wire bytes (\d+)`)

// wireBytes reads the payload bytes published from the producer's
// summary. A summary without them is an error: a silent fallback to the
// file's size would make every compression figure lie.
func wireBytes(summary string) (int64, error) {
	m := wireRE.FindStringSubmatch(summary)
	if m == nil {
		return 0, fmt.Errorf("the producer's summary has no \"wire bytes N\": %q", summary)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("the producer's summary: wire bytes %q: %w", m[1], err)
	}
	return n, nil
}

// e2e sends s through a fresh queue with the real binaries and checks
// that the consumer verified and wrote it.
func (b *bench) e2e(ctx context.Context, s snapshot, queueType string, mss int, extraP, extraC []string) (e2eResult, error) {
	q := b.queue("segmq")
	defer b.deleteQueues(q, q+".index") // .index: --queue-type stream's index stream
	out := b.path("restored.bin")
	// The producer keeps its default state file (IN.segmq-send), as a user
	// runs it; one a failed run left would make the next refuse to start.
	for _, p := range []string{out, out + ".part", out + ".part.state", s.path + ".segmq-send"} {
		os.Remove(p)
	}
	defer os.Remove(out)
	common := []string{"--queue", q, "--queue-type", queueType}
	cargs := append(append([]string{"--out", out, "--timeout", "60s"}, common...), b.o.consumerArgs...)
	cargs = append(cargs, extraC...)
	pargs := append(append([]string{"--in", s.path, "--mss", strconv.Itoa(mss)}, common...), b.o.producerArgs...)
	pargs = append(pargs, extraP...)

	env := append(os.Environ(), "AMQP_URL="+b.url)
	var cout, cerr, pout, perr bytes.Buffer
	consumer := exec.CommandContext(ctx, filepath.Join(b.o.bin, "consumer"), cargs...)
	consumer.Env, consumer.Stdout, consumer.Stderr = env, &cout, &cerr
	producer := exec.CommandContext(ctx, filepath.Join(b.o.bin, "producer"), pargs...)
	producer.Env, producer.Stdout, producer.Stderr = env, &pout, &perr

	start := time.Now()
	if err := consumer.Start(); err != nil {
		return e2eResult{}, err
	}
	consPeak := watchHWM(consumer.Process.Pid)
	if err := producer.Start(); err != nil {
		consumer.Process.Kill()
		consumer.Wait()
		consPeak()
		return e2eResult{}, err
	}
	prodPeak := watchHWM(producer.Process.Pid)
	perrW := producer.Wait()
	prodRSS := prodPeak()
	if perrW != nil {
		consumer.Process.Kill()
		consumer.Wait()
		consPeak()
		return e2eResult{}, fmt.Errorf("producer %v: %w\n%s", pargs, perrW, perr.String())
	}
	cerrW := consumer.Wait()
	el := time.Since(start)
	consRSS := consPeak()
	if cerrW != nil {
		return e2eResult{}, fmt.Errorf("consumer %v: %w\n%s", cargs, cerrW, cerr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		return e2eResult{}, fmt.Errorf("consumer exited 0 but: %w", err)
	}
	if fi.Size() != s.bytes {
		return e2eResult{}, fmt.Errorf("restored %d bytes, want %d", fi.Size(), s.bytes)
	}
	if !bytes.Contains(cout.Bytes(), []byte("size and sha256 verified")) {
		return e2eResult{}, fmt.Errorf("consumer did not verify the digest: %s", cout.String())
	}
	r := e2eResult{elapsed: el, producerRSS: prodRSS, consumerRSS: consRSS}
	if r.wireBytes, err = wireBytes(pout.String()); err != nil {
		return e2eResult{}, err
	}
	return r, nil
}

// watchHWM samples the process's VmHWM (peak resident set, KiB) every
// 10 ms until peak is called, which returns the highest value seen. Call
// it as soon as the process has been waited for.
//
// getrusage's ru_maxrss would be simpler but is wrong here: Go starts
// children with vfork (CLONE_VM), and Linux carries the parent's
// high-water mark across the exec, so every child would report at least
// the bench's own RSS. VmHWM belongs to the child's own address space.
func watchHWM(pid int) (peak func() int64) {
	var hwm atomic.Int64
	done, stopped := make(chan struct{}), make(chan struct{})
	path := fmt.Sprintf("/proc/%d/status", pid)
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if kb, ok := readHWM(path); ok && kb > hwm.Load() {
				hwm.Store(kb)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		return hwm.Load()
	}
}

func readHWM(path string) (int64, bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	_, rest, ok := bytes.Cut(raw, []byte("VmHWM:"))
	if !ok {
		return 0, false // a zombie has no memory left to report
	}
	var kb int64
	_, err = fmt.Sscanf(string(rest), "%d", &kb)
	return kb, err == nil
}
