package main

// Regression tests for the issue "Exact or loud", through the producer
// command as a user runs it.

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/cli"
)

func TestMain(m *testing.M) { os.Exit(brokertest.Main(m)) }

func exactData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// depth is the number of ready messages in queue, -1 while it is not
// declared.
func depth(t *testing.T, queue string) int {
	t.Helper()
	q, err := brokertest.Inspect(t, brokertest.URL(t), queue)
	if err != nil {
		return -1 // not declared yet
	}
	return q.Messages
}

type cliOutcome struct {
	stdout, stderr string
	code           int
}

// producerChanging runs the producer slowly (small MSS, confirm window 1)
// on in and calls change once about a MiB of it is in the queue, long
// before the read-ahead reaches the middle of the file.
func producerChanging(t *testing.T, in, queue string, change func(*os.File)) cliOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan cliOutcome, 1)
	go func() {
		var out, errb strings.Builder
		err := run(ctx, []string{"--in", in, "--raw", "--mss", "4096", "--confirm-window", "1", "--state", "-",
			"--url", brokertest.URL(t), "--queue", queue}, &out, &errb)
		code := cli.Report("producer", err, &errb)
		done <- cliOutcome{out.String(), errb.String(), code}
	}()
	changed := false
	for {
		select {
		case o := <-done:
			if !changed {
				t.Fatalf("producer ended before the change (exit %d, %s); make it slower", o.code, o.stderr)
			}
			return o
		case <-time.After(20 * time.Millisecond):
		}
		if !changed && depth(t, queue) >= 256 {
			f, err := os.OpenFile(in, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			change(f)
			f.Close()
			changed = true
		}
	}
}

var changedRE = regexp.MustCompile(`(?i)changed|modified`)

// Defect 5: the input is overwritten in the middle (same size) while the
// producer sends it. The producer must not exit 0 as if it had sent the
// file: it says the input changed.
func TestExactInputOverwritten(t *testing.T) {
	const size = 12 << 20
	in := filepath.Join(t.TempDir(), "db.bin")
	if err := os.WriteFile(in, exactData(1, size), 0o644); err != nil {
		t.Fatal(err)
	}
	queue := brokertest.Queue(t)
	o := producerChanging(t, in, queue, func(f *os.File) {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xCD}, 4096), size/2); err != nil {
			t.Error(err)
		}
	})
	if o.code == 0 || !changedRE.MatchString(o.stderr) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit != 0 and an error saying the input changed", o.code, o.stdout, o.stderr)
	}
}

// Defect 5: the input is truncated while the producer sends it: the error
// says the input changed (today: "unexpected EOF").
func TestExactInputTruncated(t *testing.T) {
	const size = 12 << 20
	in := filepath.Join(t.TempDir(), "db.bin")
	if err := os.WriteFile(in, exactData(2, size), 0o644); err != nil {
		t.Fatal(err)
	}
	queue := brokertest.Queue(t)
	o := producerChanging(t, in, queue, func(f *os.File) {
		if err := f.Truncate(size / 2); err != nil {
			t.Error(err)
		}
	})
	if o.code == 0 || !changedRE.MatchString(o.stderr) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit != 0 and an error saying the input changed", o.code, o.stdout, o.stderr)
	}
}
