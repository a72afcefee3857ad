package cli

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A non-terminal Progress logs its unit, rate and ETA.
func TestProgressLogLine(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	p := NewCountProgress(&buf, log, "gen", 1000, "rows")
	p.interval = 0
	p.start = time.Now().Add(-time.Second)
	p.Set(500)
	line := buf.String()
	for _, want := range []string{"msg=gen", "rows=500", "rows/s=", "percent=50.0", "eta="} {
		if !strings.Contains(line, want) {
			t.Fatalf("log line %q lacks %q", line, want)
		}
	}
	buf.Reset()
	b := NewProgress(&buf, log, "sent", 0)
	b.interval = 0
	b.Add(10)
	b.Add(5)
	if !strings.Contains(buf.String(), "bytes=15") {
		t.Fatalf("log %q lacks bytes=15", buf.String())
	}
}
