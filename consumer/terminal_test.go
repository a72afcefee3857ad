package main

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/internal/cli/ptytest"
	"github.com/segmq/segmq/snapfile"
)

func build(t *testing.T, name, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// oneRate fails if any frame of a status line carries two rates.
func oneRate(t *testing.T, name, raw string) {
	t.Helper()
	for _, frame := range strings.Split(raw, "\r") {
		if n := strings.Count(frame, "/s"); n > 1 {
			t.Fatalf("%s: a frame with %d rates: %q", name, n, frame)
		}
	}
}

// TestTerminal runs consumer and producer as a person would, each in its
// own terminal. Before any segment the consumer says what it waits for
// (queue, broker without password, transfer) and shows the wait going on;
// at the first segment the bar replaces the wait and ends at 100% of the
// transfer's size with one rate. The producer's bar does the same. Stdout
// of both holds only the summary.
func TestTerminal(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "db.bin")
	f, _ := os.Create(in)
	st, err := snapfile.Gen(context.Background(), f, snapfile.GenOptions{Rows: 50_000, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	size := cli.HumanBytes(st.Bytes)
	queue := brokertest.Queue(t)
	amqpURL := brokertest.URL(t)
	env := append(os.Environ(), "AMQP_URL="+amqpURL)
	consumerBin, producerBin := build(t, "consumer", "."), build(t, "producer", "../producer")

	out := filepath.Join(dir, "got.bin")
	cons := exec.Command(consumerBin, "--out", out, "--queue", queue, "--timeout", "60s")
	cons.Env = env
	var consOut bytes.Buffer
	cons.Stdout = &consOut
	ct := ptytest.Start(t, cons, 120)
	ct.WaitFor(t, "waiting for the first segment… 1s", 20*time.Second)

	// Nothing has been published: this is what a person sees while the
	// consumer waits.
	waiting := ptytest.Screen(ct.Output())
	t.Logf("consumer, waiting:\n%s", waiting)
	lines := strings.Split(waiting, "\n")
	if len(lines) != 2 {
		t.Fatalf("waiting screen has %d lines, want the log line and the wait:\n%s", len(lines), waiting)
	}
	u, _ := url.Parse(amqpURL)
	pass, _ := u.User.Password()
	log := regexp.MustCompile(`msg="waiting for segments" queue=` + queue + ` broker=amqp://[^ ]*` + regexp.QuoteMeta(u.Host) + `/? transfer="the first to arrive"$`)
	if !log.MatchString(lines[0]) || (pass != "" && strings.Contains(lines[0], ":"+pass+"@")) {
		t.Fatalf("log line %q: want %s and no password", lines[0], log)
	}
	if !regexp.MustCompile(`^waiting for the first segment… \d+s$`).MatchString(lines[1]) {
		t.Fatalf("status line %q", lines[1])
	}

	prod := exec.Command(producerBin, "--in", in, "--queue", queue, "--mss", "16384")
	prod.Env = env
	var prodOut bytes.Buffer
	prod.Stdout = &prodOut
	pt := ptytest.Start(t, prod, 120)
	if err := pt.Wait(t, time.Minute); err != nil {
		t.Fatalf("producer: %v\n%s", err, ptytest.Screen(pt.Output()))
	}
	if err := ct.Wait(t, time.Minute); err != nil {
		t.Fatalf("consumer: %v\n%s", err, ptytest.Screen(ct.Output()))
	}
	oneRate(t, "producer", pt.Output())
	oneRate(t, "consumer", ct.Output())

	bar := func(label string) *regexp.Regexp {
		return regexp.MustCompile(`^` + label + ` 100% \[█{30}\] ` + size + `/` + size + `, [0-9.]+ (k|M|G)?B/s, in [0-9.]+m?s$`)
	}
	screen := ptytest.Screen(pt.Output())
	t.Logf("producer:\n%s", screen)
	if !bar("published").MatchString(screen) {
		t.Fatalf("producer leaves the screen\n%s\nwant one line matching %s", screen, bar("published"))
	}
	screen = ptytest.Screen(ct.Output())
	t.Logf("consumer:\n%s", screen)
	lines = strings.Split(screen, "\n")
	if !log.MatchString(lines[0]) || !bar("received").MatchString(lines[len(lines)-1]) || strings.Contains(screen, "waiting for the first") {
		t.Fatalf("consumer leaves the screen\n%s\nwant the log lines, the wait replaced, and last a line matching %s", screen, bar("received"))
	}
	if !regexp.MustCompile(`^sent transfer [0-9a-f]{32}: .*\n$`).MatchString(prodOut.String()) {
		t.Fatalf("producer stdout %q", prodOut.String())
	}
	if !regexp.MustCompile(`^received transfer [0-9a-f]{32}: .*-> ` + regexp.QuoteMeta(out) + `\n$`).MatchString(consOut.String()) {
		t.Fatalf("consumer stdout %q", consOut.String())
	}
}

// cancelOnLine is a stderr that cancels a run at its first line
// containing match.
type cancelOnLine struct {
	mu     sync.Mutex
	b      strings.Builder
	match  string
	cancel context.CancelFunc
}

func (c *cancelOnLine) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil && strings.Contains(string(p), c.match) {
		c.cancel()
	}
	return c.b.Write(p)
}

func (c *cancelOnLine) String() string { c.mu.Lock(); defer c.mu.Unlock(); return c.b.String() }

// TestResumeProgress: a consumer stopped part way and run again reports
// progress from the bytes it resumed with, not from zero.
func TestResumeProgress(t *testing.T) {
	old := cli.LogInterval
	cli.LogInterval = time.Millisecond
	t.Cleanup(func() { cli.LogInterval = old })
	dir := t.TempDir()
	in := filepath.Join(dir, "db.bin")
	f, _ := os.Create(in)
	if _, err := snapfile.Gen(context.Background(), f, snapfile.GenOptions{Rows: 50_000, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	queue := brokertest.Queue(t)
	t.Setenv("AMQP_URL", brokertest.URL(t))
	const mss = 16384
	if out, err := buildProducer(t)(in, "--queue", queue, "--mss", strconv.Itoa(mss)); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	got := filepath.Join(dir, "got.bin")

	// First run: stopped (as by Ctrl-C) at its first progress line.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &cancelOnLine{match: "msg=received", cancel: cancel}
	err := run(ctx, []string{"--out", got, "--queue", queue, "--prefetch", "2", "--ack-every", "1", "--timeout", "20s"}, io.Discard, stderr)
	if err == nil {
		t.Fatalf("the first run completed before it was stopped:\n%s", stderr)
	}

	// Second run: resumes, and its first progress line counts what it
	// resumed with.
	stdout, errs, code := runCLI(t, "--out", got, "--queue", queue, "--timeout", "20s")
	if code != 0 {
		t.Fatalf("second run: exit %d: %s", code, errs)
	}
	m := regexp.MustCompile(`resumed (\d+),`).FindStringSubmatch(stdout)
	first := regexp.MustCompile(`msg=received bytes=(\d+)`).FindStringSubmatch(errs)
	if m == nil || first == nil {
		t.Fatalf("stdout %q, stderr %q", stdout, errs)
	}
	resumed, _ := strconv.Atoi(m[1])
	bytes, _ := strconv.Atoi(first[1])
	// The first Set comes with the first new segment: resumed+1 of them.
	if resumed < 1 || bytes < (resumed+1)*mss {
		t.Fatalf("resumed %d segments, first progress line at %d bytes; want at least %d", resumed, bytes, (resumed+1)*mss)
	}
	t.Logf("resumed %d segments; first progress line: %s", resumed, first[0])
}
