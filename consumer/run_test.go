package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/snapfile"
)

func TestMain(m *testing.M) { os.Exit(brokertest.Main(m)) }

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return cli.Capture("consumer", run, args...)
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{nil, `--out is required`},
		{[]string{"--out", "x", "--prefetch", "0"}, `--prefetch must be between 1 and 65535 \(AMQP's limit\), got 0`},
		// amqp091-go would truncate 65536 to a uint16 0: unlimited.
		{[]string{"--out", "x", "--prefetch", "65536"}, `--prefetch must be between 1 and 65535 \(AMQP's limit\), got 65536`},
		{[]string{"--out", "x", "--max-mss", "0"}, `--max-mss must be between 1 and \d+, got 0`},
		{[]string{"--out", "x", "--queue-type", "lazy"}, `queue type "lazy": want classic, quorum or stream`},
		{[]string{"--out", "x", "--queue-type", "stream", "--stream-max-age", "7days"}, `--stream-max-age "7days": want a number and one of the units Y M D h m s`},
		{[]string{"--out", "x", "--queue-type", "stream", "--stream-max-bytes", "lots"}, `--stream-max-bytes "lots": want a size such as 16GiB`},
		{[]string{"--list", "--out", "x"}, `--list restores nothing: drop --out`},
		{[]string{"--out", "x", "--timeout", "soon"}, `invalid value "soon"`},
		{[]string{"--out", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"--out", "x", "--procs", "0"}, `--procs must be >= 1`},
		{[]string{"--out", "x", "--ack-every", "0"}, `--ack-every must be >= 1`},
		{[]string{"--out", "x", "--url", "a", "--url-file", "b"}, `exclusive`},
		{[]string{"--out", "x", "--standby", "--restart"}, `--standby takes over the .part another consumer leaves; --restart would discard it`},
		// A bad node in a list is found before any is dialed, password hidden.
		{[]string{"--out", "x", "--url", "amqp://u:pw@a/", "--url", "http://u:s3cret@b/"}, `^consumer: bad AMQP URL http://u:xxxxx@b/`},
		{[]string{"--out", "x", "--url", ","}, `empty URL`},
	} {
		stdout, stderr, code := runCLI(t, tc.args...)
		if code != 2 || stdout != "" || !regexp.MustCompile(tc.stderr).MatchString(stderr) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, stdout, stderr, tc.stderr)
		}
	}
}

// TestTimeoutExitCode: nothing to consume ends with exit 1, a one-line
// reason, and no --out, and no work files either (nothing was bound).
func TestTimeoutExitCode(t *testing.T) {
	out := filepath.Join(t.TempDir(), "db.bin")
	_, stderr, code := runCLI(t, "--out", out, "--url", brokertest.URL(t), "--queue", brokertest.Queue(t), "--timeout", "500ms")
	if code != 1 || !regexp.MustCompile(`consumer: transfer incomplete: timed out: no segment for 500ms; no segment of the first to arrive received\n$`).MatchString(stderr) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, p := range []string{out, out + ".part", out + ".part.state", out + ".part.lock"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s exists after a run that received nothing", p)
		}
	}
}

// TestProducerConsumerCLI runs the two commands as a user would (the
// producer binary's run is in another package, so it is built and run).
func TestProducerConsumerCLI(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "db.bin")
	f, _ := os.Create(in)
	if _, err := snapfile.Gen(context.Background(), f, snapfile.GenOptions{Rows: 50_000, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	queue := brokertest.Queue(t)
	t.Setenv("AMQP_URL", brokertest.URL(t))
	prod := buildProducer(t)
	outp, err := prod(in, "--queue", queue, "--mss", "10000")
	if err != nil {
		t.Fatalf("producer: %v\n%s", err, outp)
	}
	if !regexp.MustCompile(`^sent transfer [0-9a-f]{32}: \d+ segments, \d+ bytes in .*sha256 [0-9a-f]{64}\n$`).MatchString(outp) {
		t.Fatalf("producer stdout %q", outp)
	}
	got := filepath.Join(dir, "got.bin")
	stdout, stderr, code := runCLI(t, "--out", got, "--queue", queue, "--timeout", "20s")
	if code != 0 {
		t.Fatalf("consumer exit %d: %s", code, stderr)
	}
	if !regexp.MustCompile(`^received transfer [0-9a-f]{32}: \d+ segments, \d+ bytes .*size and sha256 verified.* -> ` + regexp.QuoteMeta(got) + `\n$`).MatchString(stdout) {
		t.Fatalf("consumer stdout %q", stdout)
	}
	// Off a terminal: log lines only, the first saying what it waits for.
	if strings.ContainsAny(stderr, "\r\x1b") || !regexp.MustCompile(`^time=\S+ level=INFO msg="waiting for segments" queue=`+queue+` `).MatchString(stderr) {
		t.Fatalf("consumer stderr %q", stderr)
	}
	a, _ := os.ReadFile(in)
	b, _ := os.ReadFile(got)
	if !bytes.Equal(a, b) {
		t.Fatal("output differs from input")
	}
}

// TestDefaultProcs: one P unless $GOMAXPROCS asks for more (see
// defaultProcs for the measurement behind it).
func TestDefaultProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	if n := defaultProcs(); n != 1 {
		t.Fatalf("defaultProcs() = %d without $GOMAXPROCS, want 1", n)
	}
	t.Setenv("GOMAXPROCS", "3")
	if n := defaultProcs(); n != 3 {
		t.Fatalf("defaultProcs() = %d with GOMAXPROCS=3, want 3", n)
	}
}
