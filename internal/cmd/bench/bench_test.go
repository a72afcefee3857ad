package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmq/segmq/internal/brokertest"
)

func TestMain(m *testing.M) { os.Exit(brokertest.Main(m)) }

// TestBenchSmoke runs every section of `make bench` at toy sizes against
// the test broker, so that the benchmark cannot rot between the runs that
// produce the README's figures. It checks the report, not the speed.
func TestBenchSmoke(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "../../../snapshot", "../../../producer", "../../../consumer")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	readme := filepath.Join(dir, "README.md")
	os.WriteFile(readme, []byte("# x\n\nbefore\n"+beginMark+"\nold figures\n"+endMark+"\nafter\n"), 0o644)
	results := filepath.Join(dir, "results.md")
	t.Setenv("AMQP_URL", brokertest.URL(t))
	err := run(context.Background(), []string{"-bin", bin, "-dir", filepath.Join(dir, "work"), "-results", results, "-readme", readme,
		"-ratio-size", "2MiB", "-rss-sizes", "1MiB,2MiB", "-sweep-size", "1MiB", "-sweep", "16KiB,64KiB",
		"-compress-size", "1MiB", "-runs", "1", "-quorum-runs", "1", "-link-rate", "100000000", "-compress-runs", "1",
		"-stream-size", "2MiB", "-stream-runs", "1",
		"-verify-before", filepath.Join(bin, "snapshot")}) // not git:COMMIT: the test needs no git history
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#### snapshot gen", "#### snapshot verify", "| this build | 1 |", "| before: ", "#### End to end", "| classic |", "| quorum |",
		"#### raw + write: the ceiling, per ack/fsync cadence", "| classic | 16 | 256 |", "| classic | 64 | 256 |", "| classic | 256 | 256 |", "| quorum | 256 | 256 |", "**ceiling**", "segmq / ceiling",
		"#### Memory", "| 1 MiB |", "| 2 MiB |", "#### MSS sweep", "| 16 KiB |",
		"#### Compression", "| none |", "| zstd |", "| s2 |", "| auto |", "effective / raw", "| loopback | generated, 1 MiB | auto |", "| shaped, nominal 100 MB/s | low-entropy, 1 MiB | s2 |",
		"#### Streams", "| raw native stream protocol", "| segmq --queue-type stream |",
		"#### RabbitMQ 4: one node and a 3-node cluster", ", 1 node | classic |", ", 1 node | quorum |", ", 1 node | stream |", ", 3 nodes | quorum |"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("results lack %q:\n%s", want, got)
		}
	}
	// Peak RSS comes from sampling VmHWM: a zero would mean the sampler
	// never saw the process.
	if strings.Contains(string(got), "| 0.0 MiB") || !strings.Contains(string(got), " MiB |") {
		t.Errorf("peak RSS missing or zero:\n%s", got)
	}
	md, _ := os.ReadFile(readme)
	if s := string(md); strings.Contains(s, "old figures") || !strings.Contains(s, "before\n"+beginMark) ||
		!strings.HasSuffix(s, endMark+"\nafter\n") || !strings.Contains(s, "#### End to end") {
		t.Errorf("README not rewritten between the markers:\n%s", s)
	}
}

// TestWireBytesLoud: a producer summary without its wire bytes fails the
// bench instead of passing the file's size off as them.
func TestWireBytesLoud(t *testing.T) {
	n, err := wireBytes("sent transfer x: 3 segments, 100 bytes in 1s (1 MB/s), wire bytes 42, republished 0\n")
	if err != nil || n != 42 {
		t.Fatalf("got %d, %v; want 42", n, err)
	}
	for _, summary := range []string{"", "sent transfer x: 3 segments, 100 bytes in 1s\n", "wire bytes 99999999999999999999999"} {
		if _, err := wireBytes(summary); err == nil || !strings.Contains(err.Error(), "wire bytes") {
			t.Errorf("%q: err %v, want an error naming the wire bytes", summary, err)
		}
	}
}
