package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmq/segmq/internal/cli"
)

// TestSmoke runs the whole benchmark on a tiny data set, so that
// `make bench-db` does not rot: every step runs and the table has a row
// for each.
func TestSmoke(t *testing.T) {
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/segmq/segmq/snapshot").CombinedOutput(); err != nil {
		t.Fatalf("build snapshot: %v\n%s", err, out)
	}
	results := filepath.Join(t.TempDir(), "results.md")
	work := t.TempDir()
	os.Chmod(work, 0o755) // the cluster inside runs as the postgres user
	os.Chmod(filepath.Dir(work), 0o755)
	stdout, stderr, code := cli.Capture("benchdb", run, "-rows", "2000", "-runs", "1", "-bin", bin, "-dir", work, "-results", results)
	if code != 0 {
		t.Fatalf("benchdb: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"| pg_dump -Fc |", "| pg_dump -Fd -j 2 |", "| snapshot dump --workers 2 |", "| pg_restore (from -Fc) |",
		"| pg_restore -j 2 (from -Fd) |", "| snapshot restore |", "| snapshot verify --db (restored) |", "whole path"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q row in:\n%s", want, stdout)
		}
	}
	if b, err := os.ReadFile(results); err != nil || !strings.Contains(string(b), "| snapshot restore |") {
		t.Errorf("results file: %v %s", err, b)
	}
}
