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
	readme := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(readme, []byte("before\n"+readmeBegin+"\nold table\n"+readmeEnd+"\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := cli.Capture("benchdb", run, "-rows", "2000", "-runs", "2", "-bin", bin, "-dir", work, "-results", results, "-readme", readme)
	if code != 0 {
		t.Fatalf("benchdb: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"| pg_dump -Fc |", "| pg_dump -Fd -j 2 |", "| snapshot dump --workers 2 |", "| pg_restore (from -Fc) |",
		"| pg_restore -j 2 (from -Fd) |", "| snapshot restore --workers 2 |", "| snapshot verify --db (restored) |", "whole path"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q row in:\n%s", want, stdout)
		}
	}
	if b, err := os.ReadFile(results); err != nil || !strings.Contains(string(b), "| snapshot restore --workers 2 |") {
		t.Errorf("results file: %v %s", err, b)
	}
	b, err := os.ReadFile(readme)
	if s := string(b); err != nil || !strings.HasPrefix(s, "before\n"+readmeBegin+"\nMeasured with `bin/benchdb -rows 2000 -runs 2 -workers 2`, the last step of `make bench`") ||
		!strings.Contains(s, "| snapshot restore --workers 2 |") || strings.Contains(s, "old table") || !strings.HasSuffix(s, readmeEnd+"\nafter\n") {
		t.Errorf("README between the markers:\n%s", b)
	}
	// Runs alternate: run 1 of each restore before run 2 of any.
	var order []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "restore") && !strings.Contains(l, "verify") && strings.Contains(l, " run ") {
			order = append(order, l[strings.Index(l, ": ")+2:strings.Index(l, " run ")+6])
		}
	}
	want := []string{"pg_restore (from -Fc) run 1", "pg_restore -j 2 (from -Fd) run 1", "snapshot restore --workers 2 run 1",
		"pg_restore (from -Fc) run 2", "pg_restore -j 2 (from -Fd) run 2", "snapshot restore --workers 2 run 2"}
	if strings.Join(order, "|") != strings.Join(want, "|") {
		t.Errorf("restore runs in order %q, want %q", order, want)
	}
}

// TestRestorePair: -restore-pair times only pg_dump -Fd, snapshot dump
// and the two parallel restores the issue compares.
func TestRestorePair(t *testing.T) {
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/segmq/segmq/snapshot").CombinedOutput(); err != nil {
		t.Fatalf("build snapshot: %v\n%s", err, out)
	}
	work := t.TempDir()
	os.Chmod(work, 0o755)
	os.Chmod(filepath.Dir(work), 0o755)
	stdout, stderr, code := cli.Capture("benchdb", run, "-rows", "500", "-runs", "2", "-dump-runs", "1", "-restore-pair", "-bin", bin, "-dir", work)
	if code != 0 {
		t.Fatalf("benchdb: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var rows []string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "| ") && !strings.HasPrefix(l, "| what") {
			rows = append(rows, l[2:strings.Index(l[2:], " |")+2])
		}
	}
	want := []string{"pg_dump -Fd -j 2", "snapshot dump --workers 2", "pg_restore -j 2 (from -Fd)", "snapshot restore --workers 2"}
	if strings.Join(rows, "|") != strings.Join(want, "|") {
		t.Errorf("rows %q, want %q\n%s", rows, want, stdout)
	}
}
