package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/internal/cli/ptytest"
)

// buildSnapshot builds the command for tests that run it as a person
// would.
func buildSnapshot(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "snapshot")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// onTerminal runs the command with stderr on a 100-column terminal and
// returns its stdout and the screen it leaves.
func onTerminal(t *testing.T, bin string, stdout *os.File, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	if stdout != nil {
		cmd.Stdout = stdout
	}
	tm := ptytest.Start(t, cmd, 100)
	if err := tm.Wait(t, time.Minute); err != nil {
		t.Fatalf("%v: %v; the terminal shows:\n%s", args, err, ptytest.Screen(tm.Output()))
	}
	raw := tm.Output()
	t.Logf("snapshot %s: the terminal shows:\n%s", strings.Join(args, " "), ptytest.Screen(raw))
	// Every frame of the status line has one rate, never a second one
	// in another unit.
	for _, frame := range strings.Split(raw, "\r") {
		if n := strings.Count(frame, "/s"); n > 1 {
			t.Fatalf("%v: a frame with %d rates: %q", args, n, frame)
		}
	}
	return out.String(), ptytest.Screen(raw)
}

// barDone matches the status line a command leaves when it has finished:
// 100%, a full bar, done/total, one rate and the elapsed time.
func barDone(label, count string) *regexp.Regexp {
	return regexp.MustCompile(`^` + label + ` 100% \[█{30}\] ` + count + `, [0-9.]+ (k|M|G)?B/s, in [0-9.]+m?s$`)
}

// TestTerminal runs gen, verify and cat to a file on a real terminal:
// each leaves one finished bar on stderr, and stdout holds only the
// summary (or, for cat, the records).
func TestTerminal(t *testing.T) {
	bin := buildSnapshot(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "db.bin")

	stdout, screen := onTerminal(t, bin, nil, "gen", "--records", "200000", "--out", db)
	if !regexp.MustCompile(`^wrote .*\n$`).MatchString(stdout) {
		t.Fatalf("gen stdout %q", stdout)
	}
	gen := regexp.MustCompile(`^gen 100% \[█{30}\] 200000/200000 rows, \d+ rows/s, in [0-9.]+m?s$`)
	if !gen.MatchString(screen) {
		t.Fatalf("gen leaves the screen\n%s\nwant one line matching %s", screen, gen)
	}
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	size := cli.HumanBytes(fi.Size())

	stdout, screen = onTerminal(t, bin, nil, "verify", db)
	if !regexp.MustCompile(`^ok .*records 200005, .*\n$`).MatchString(stdout) {
		t.Fatalf("verify stdout %q", stdout)
	}
	if re := barDone("verify", size+"/"+size); !re.MatchString(screen) {
		t.Fatalf("verify leaves the screen\n%s\nwant one line matching %s", screen, re)
	}

	jsonl, err := os.Create(filepath.Join(dir, "db.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer jsonl.Close()
	_, screen = onTerminal(t, bin, jsonl, "cat", db)
	if re := barDone("cat", size+"/"+size); !re.MatchString(screen) {
		t.Fatalf("cat > file leaves the screen\n%s\nwant one line matching %s", screen, re)
	}
	if fi, _ := jsonl.Stat(); fi.Size() < 1000 {
		t.Fatalf("cat wrote %d bytes", fi.Size())
	}
}

// TestNotTerminal: off a terminal, progress is log lines (one per
// interval) and no control characters; stdout is the summary alone.
func TestNotTerminal(t *testing.T) {
	old := cli.LogInterval
	cli.LogInterval = time.Millisecond
	t.Cleanup(func() { cli.LogInterval = old })
	db := filepath.Join(t.TempDir(), "db.bin")
	for _, args := range [][]string{{"gen", "--records", "100000", "--workers", "2", "--out", db}, {"verify", db}} {
		stdout, stderr, code := runCLI(t, args...)
		if code != 0 || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
		if strings.ContainsAny(stderr, "\r\x1b") {
			t.Fatalf("%v: control characters off a terminal: %q", args, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		for _, l := range lines {
			if !regexp.MustCompile(`^time=\S+ level=INFO msg=(gen|verify) `).MatchString(l) {
				t.Fatalf("%v: stderr line %q", args, l)
			}
		}
		if len(lines) < 2 {
			t.Fatalf("%v: %d progress lines at a 1ms interval: %q", args, len(lines), stderr)
		}
	}
}
