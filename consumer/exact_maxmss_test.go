package main

// Defect 8 against the flag the fix introduces: consumer --max-mss N. It
// does not exist before the fix; run with go test -tags newapi.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/brokertest"
)

// TestExactMaxMSSFlag: a transfer whose segmq-mss exceeds --max-mss is
// refused: exit != 0, nothing at --out, every segment dead-lettered.
func TestExactMaxMSSFlag(t *testing.T) {
	queue := brokertest.Queue(t)
	segs := exactBodies(t, "too-big", exactData(5, 2*(128<<10)+3), 128<<10)
	exactPublish(t, queue, segs)
	out := filepath.Join(t.TempDir(), "db.bin")
	o := runBounded(t, context.Background(), 30*time.Second, "--out", out, "--url", brokertest.URL(t), "--queue", queue, "--timeout", "3s", "--max-mss", "65536")
	if o.code == 0 {
		t.Fatalf("exit 0 with --max-mss 65536 and segments of mss %d: %s", 128<<10, o.stdout)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("%s written", out)
	}
	if !strings.Contains(o.stderr, "mss") {
		t.Errorf("stderr %q does not mention the mss", o.stderr)
	}
	if n := depth(t, queue+".dead"); n != len(segs) {
		t.Fatalf("dead-letter queue holds %d, want %d (exit %d, stderr %q)", n, len(segs), o.code, o.stderr)
	}
	_, stderr, code := runCLI(t, "--out", out, "--max-mss", "-1")
	if code != 2 || !strings.Contains(stderr, "--max-mss") {
		t.Errorf("--max-mss -1: exit %d, stderr %q; want a usage error", code, stderr)
	}
}
