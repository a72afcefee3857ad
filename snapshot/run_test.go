package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/segmq/segmq/internal/cli"
)

// runCLI runs the command in-process and returns stdout, stderr and the
// exit code main would use.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return cli.Capture("snapshot", run, args...)
}

func genFile(t *testing.T, dir string, records string, workers string) string {
	t.Helper()
	path := filepath.Join(dir, "w"+workers+".snap")
	if _, stderr, code := runCLI(t, "gen", "--records", records, "--workers", workers, "--seed", "9", "--out", path); code != 0 {
		t.Fatalf("gen: exit %d: %s", code, stderr)
	}
	return path
}

func TestGenWorkersIdentical(t *testing.T) {
	dir := t.TempDir()
	one, err := os.ReadFile(genFile(t, dir, "100000", "1"))
	if err != nil {
		t.Fatal(err)
	}
	four, _ := os.ReadFile(genFile(t, dir, "100000", "4"))
	if !bytes.Equal(one, four) {
		t.Fatal("--workers 1 and --workers 4 wrote different bytes")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) > 0 {
		t.Fatalf("gen left temporary files behind: %v", left)
	}
	// Beside each snapshot, its SHA-256 as sha256sum writes it (and with
	// the size and mtime the producer checks before it trusts it).
	side, err := os.ReadFile(filepath.Join(dir, "w1.snap.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(one)
	if want := hex.EncodeToString(sum[:]) + "  w1.snap\n"; !strings.HasSuffix(string(side), want) {
		t.Fatalf("w1.snap.sha256 = %q, want it to end %q", side, want)
	}
}

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	good := genFile(t, dir, "1000", "2")
	data, _ := os.ReadFile(good)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Record boundaries, to cut in the middle of one and to drop the trailer.
	var bounds []int
	for off := 0; off < len(data); off += 4 + int(binary.LittleEndian.Uint32(data[off:])) {
		bounds = append(bounds, off)
	}
	lastRec := bounds[len(bounds)-1]
	mid := bounds[500] + 3
	cut := write("cut.snap", data[:mid])
	noTrailer := write("notrailer.snap", data[:lastRec])
	huge := write("huge.snap", append(binary.LittleEndian.AppendUint32(append([]byte(nil), data[:bounds[10]]...), 0xFFFFFFFF), data[bounds[10]:]...))

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string // regexp
		stderr string // regexp
	}{
		{"verify ok", []string{"verify", good}, 0, `^ok .*records 1005, rows 1000, tables 3, bytes ` + itoa(len(data)) + `, sha256 [0-9a-f]{64}\n$`, `^$`},
		{"verify cut", []string{"verify", cut}, 1, `^$`, `offset ` + itoa(bounds[500]) + ` .*unexpected EOF`},
		{"verify no trailer", []string{"verify", noTrailer}, 1, `^$`, `offset ` + itoa(lastRec) + ` .*no trailer`},
		{"verify huge length", []string{"verify", huge}, 1, `^$`, `offset ` + itoa(bounds[10]) + ` .*larger than the limit`},
		{"verify missing", []string{"verify", filepath.Join(dir, "nope")}, 1, `^$`, `no such file`},
		{"verify no arg", []string{"verify"}, 2, `^$`, `exactly one FILE`},
		{"cat", []string{"cat", good}, 0, `^\{"header".*\n(\{"table".*\n){3}(\{"row".*\n){1000}\{"trailer".*\n$`, `^$`},
		{"cat cut", []string{"cat", cut}, 1, `\{"row"`, `unexpected EOF`},
		{"no subcommand", nil, 2, `^$`, `subcommand is required`},
		{"unknown subcommand", []string{"frob"}, 2, `^$`, `unknown subcommand "frob"`},
		{"gen no out", []string{"gen", "--records", "5"}, 2, `^$`, `--out is required`},
		{"gen no records", []string{"gen", "--out", filepath.Join(dir, "x")}, 2, `^$`, `--records is required`},
		{"gen bad flag", []string{"gen", "--bogus"}, 2, `^$`, `flag provided but not defined: -bogus`},
		{"gen zero workers", []string{"gen", "--records", "1", "--workers", "0", "--out", filepath.Join(dir, "x")}, 2, `^$`, `--workers must be >= 1`},
		{"gen bad dir", []string{"gen", "--records", "1", "--out", filepath.Join(dir, "no/such/dir/x")}, 1, `^$`, `no such file or directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if !regexp.MustCompile(tc.stdout).MatchString(stdout) {
				t.Errorf("stdout %q does not match %q", trunc(stdout), tc.stdout)
			}
			if !regexp.MustCompile(tc.stderr).MatchString(stderr) {
				t.Errorf("stderr %q does not match %q", stderr, tc.stderr)
			}
		})
	}
}

// TestMainExitCode builds the real binary once to check that main maps
// run's error to the process exit code and a one-line stderr.
func TestMainExitCode(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "snapshot")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "verify", filepath.Join(t.TempDir(), "missing"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want 1", err)
	}
	if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.HasPrefix(stderr.String(), "snapshot: ") {
		t.Fatalf("stderr = %q, want one line starting with 'snapshot: '", stderr.String())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
