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
		"-compress-size", "1MiB", "-runs", "1", "-quorum-runs", "1", "-link-rate", "100000000",
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
		"#### Memory", "| 1 MiB |", "| 2 MiB |", "#### MSS sweep", "| 16 KiB |", "#### Compression", "| zstd |", "shaped", "#### Streams", "| raw native stream protocol", "| segmq --queue-type stream |"} {
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
