package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/snapfile"
)

// streamQueue is a fresh stream name; the stream and its index are
// deleted after the test.
func streamQueue(t *testing.T) string {
	t.Helper()
	q := brokertest.Queue(t)
	u := brokertest.URL(t)
	t.Cleanup(func() {
		if conn, err := amqp.Dial(u); err == nil {
			defer conn.Close()
			if ch, err := conn.Channel(); err == nil {
				ch.QueueDelete(q+".index", false, false, false)
			}
		}
	})
	return q
}

// TestStreamKilledConsumerResumesFromOffset: the consumer command is
// SIGKILLed mid-transfer; run again, it resumes from the stream offset in
// its journal and reads only the rest of the transfer; --list shows the
// transfer complete with its SHA-256.
func TestStreamKilledConsumerResumesFromOffset(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "db.bin")
	f, _ := os.Create(in)
	if _, err := snapfile.Gen(context.Background(), f, snapfile.GenOptions{Rows: 20_000, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	queue := streamQueue(t)
	t.Setenv("AMQP_URL", brokertest.URL(t))
	stream := []string{"--queue", queue, "--queue-type", "stream"}
	outp, err := buildProducer(t)(in, append(stream, "--mss", "1024")...)
	if err != nil {
		t.Fatalf("producer: %v\n%s", err, outp)
	}
	m := regexp.MustCompile(`^sent transfer ([0-9a-f]{32}): (\d+) segments, \d+ bytes .*sha256 ([0-9a-f]{64})\n$`).FindStringSubmatch(outp)
	if m == nil {
		t.Fatalf("producer stdout %q", outp)
	}
	id, sha := m[1], m[3]
	total, _ := strconv.Atoi(m[2])

	// One delivery in flight and an fsync per segment: slow enough to be
	// killed in the middle.
	got := filepath.Join(dir, "got.bin")
	cons := exec.Command(build(t, "consumer", "."), append(stream, "--out", got, "--prefetch", "1", "--ack-every", "1")...)
	if err := cons.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if fi, err := os.Stat(got + ".part.state"); err == nil && fi.Size() > 4<<10 {
			break
		}
		if time.Now().After(deadline) {
			cons.Process.Kill()
			t.Fatal("the consumer recorded no progress in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cons.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cons.Wait()
	if _, err := os.Stat(got); err == nil {
		t.Fatal("the killed consumer finished before it was killed: make the transfer bigger")
	}

	stdout, stderr, code := runCLI(t, append(stream, "--out", got, "--timeout", "20s")...)
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, stderr)
	}
	r := regexp.MustCompile(`read (\d+) messages .*resumed (\d+),.*sha256 ` + sha + ` -> `).FindStringSubmatch(stdout)
	if r == nil {
		t.Fatalf("resume stdout %q", stdout)
	}
	read, _ := strconv.Atoi(r[1])
	resumed, _ := strconv.Atoi(r[2])
	if resumed == 0 || resumed >= total || read > total-resumed+1 {
		t.Fatalf("resumed %d of %d segments and read %d messages: want the rest only (<= %d)", resumed, total, read, total-resumed+1)
	}
	t.Logf("killed, then resumed with %d of %d segments on disk; the second run read %d messages", resumed, total, read)
	a, _ := os.ReadFile(in)
	b, _ := os.ReadFile(got)
	if string(a) != string(b) {
		t.Fatal("output differs from input")
	}

	stdout, stderr, code = runCLI(t, append(stream, "--list")...)
	if code != 0 || !regexp.MustCompile(`(?m)^TRANSFER +RUN +STARTED +BYTES +SEGMENTS +STATE +SHA256\n`+id+` +[0-9a-f]{16} +\S+ +`+strconv.Itoa(len(a))+` +`+m[2]+` +complete +`+sha+"\n1 transfers in stream "+queue+"\n$").MatchString(stdout) {
		t.Fatalf("--list: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
