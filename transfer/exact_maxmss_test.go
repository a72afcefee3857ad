package transfer

// Regression tests for "Exact or loud" defect 8 against the API the fix
// introduces: ReceiveConfig.MaxMSS (0 = MaxMSS, the producer's limit; a
// message whose segmq-mss exceeds it is dead-lettered with a reason that
// mentions the mss). They do not compile before the fix; run them with
// go test -tags newapi.

import (
	"context"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestExactMaxMSSConfig: with MaxMSS 64 KiB, every segment of a transfer
// announcing a 128 KiB MSS is dead-lettered (and does not bind the
// consumer to that transfer); the next transfer, within the limit, is
// restored exactly.
func TestExactMaxMSSConfig(t *testing.T) {
	e := newEnv(t)
	big := segmqBodies(t, "too-big", randData(1301, 3*(128<<10)-5), 128<<10)
	data := randData(1302, 5*(64<<10)+11)
	e.publish(append(append([]msg(nil), big...), segmqBodies(t, "fits", data, 64<<10)...))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.MaxMSS, cfg.Timeout = 64<<10, 10*time.Second
	res := e.mustReceiveExact(cfg)
	e.mustEqualFile(out, data)
	if res.Transfer != "fits" || res.DeadLettered != len(big) {
		t.Fatalf("transfer %q, dead-lettered %d; want \"fits\" and %d", res.Transfer, res.DeadLettered, len(big))
	}
	if n := e.waitDepth(e.topo.DeadQueue(), len(big), 5*time.Second); n != len(big) {
		t.Fatalf("dead-letter queue holds %d, want %d", n, len(big))
	}
	if !regexp.MustCompile(`(?i)segment dead-lettered.*mss`).MatchString(e.logs.String()) {
		t.Fatal("no dead-letter log line mentioning the mss")
	}
}

// TestExactMaxMSSValidate: a negative MaxMSS is a configuration error.
func TestExactMaxMSSValidate(t *testing.T) {
	e := newEnv(t)
	cfg := e.receiveCfg(filepath.Join(e.dir, "out.bin"))
	cfg.MaxMSS = -1
	if _, err := Receive(context.Background(), cfg); err == nil || !regexp.MustCompile(`(?i)mss`).MatchString(err.Error()) {
		t.Fatalf("MaxMSS -1: err = %v", err)
	}
}
