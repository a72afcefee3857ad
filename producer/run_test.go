package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/segmq/segmq/internal/cli"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return cli.Capture("producer", run, args...)
}

// These fail before any connection is made, so they need no broker.
func TestUsageAndInput(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.bin")
	os.WriteFile(junk, []byte("not a snapshot at all"), 0o644)
	t.Setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--mss", "0"}, 2, `--mss must be between 1 and \d+, got 0`},
		{[]string{"--mss", "100000000"}, 2, `--mss must be between`},
		{[]string{"--confirm-window", "0"}, 2, `--confirm-window must be >= 1`},
		{[]string{"--queue-type", "lazy"}, 2, `queue type "lazy"`},
		{[]string{"--bogus"}, 2, `flag provided but not defined`},
		{[]string{"--compress", "gzip"}, 2, `--compress must be none, s2, zstd or auto, got "gzip"`},
		{[]string{"--in", filepath.Join(dir, "missing.bin")}, 1, `no such file`},
		{[]string{"--in", junk}, 1, `is not a complete snapshot .*pass --raw`},
		{[]string{"--in", junk, "--raw", "--url", "amqp://u:hunter22@127.0.0.1:1/"}, 1, `connect to amqp://u:xxxxx@127.0.0.1:1/`},
	} {
		stdout, stderr, code := runCLI(t, tc.args...)
		if code != tc.code || stdout != "" || !regexp.MustCompile(tc.stderr).MatchString(stderr) || regexp.MustCompile(`hunter22`).MatchString(stderr) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, stdout, stderr, tc.code, tc.stderr)
		}
	}
}
