package localbroker

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStartStopRestart(t *testing.T) {
	if !Installed(RootFromEnv()) {
		t.Fatal(ErrNotInstalled) // never skip: the test command installs it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := Start(ctx, Options{Root: RootFromEnv()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, err := b.Ctl(ctx, "status")
	if err != nil || !strings.Contains(out, b.Node) {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if probe("127.0.0.1:" + itoa(b.Port)) {
		t.Fatal("port still answers after Stop")
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if !probe("127.0.0.1:" + itoa(b.Port)) {
		t.Fatal("port does not answer after restart")
	}
	// The version is the one asked for: the host's package, or the root's.
	want := "3."
	if b.Root != "" {
		want = "4."
	}
	if out, err := b.Ctl(ctx, "version"); err != nil || !strings.HasPrefix(strings.TrimSpace(out), want) {
		t.Fatalf("version %q (%v), want %s*", out, err, want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
