package cli

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake time source for a Progress.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fake returns p driven by a fake clock, as if it were on a terminal
// of 100 columns when tty is true.
func fake(p *Progress, tty bool) *clock {
	c := &clock{t: time.Unix(1e9, 0)}
	p.now, p.created, p.last, p.tty = c.now, c.t, c.t, tty
	p.width = func() int { return 100 }
	return c
}

// A non-terminal Progress logs its unit, rate and ETA.
func TestProgressLogLine(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	p := NewCountProgress(&buf, log, "gen", 1000, "rows")
	c := fake(p, false)
	p.Set(0)
	c.add(time.Second)
	p.Set(100) // before LogInterval: no line
	if buf.Len() != 0 {
		t.Fatalf("logged before the interval: %q", buf.String())
	}
	p.interval = 0
	p.Set(500)
	line := buf.String()
	for _, want := range []string{"msg=gen", "rows=500", "rows/s=500", "percent=50.0", "eta=1s"} {
		if !strings.Contains(line, want) {
			t.Fatalf("log line %q lacks %q", line, want)
		}
	}
	buf.Reset()
	b := NewProgress(&buf, log, "sent", 0)
	c = fake(b, false)
	b.interval = 0
	b.Add(10)
	c.add(time.Second)
	b.Add(5)
	if !strings.Contains(buf.String(), "bytes=15") || strings.Contains(buf.String(), "eta") {
		t.Fatalf("log %q: want bytes=15 and no ETA without a total", buf.String())
	}
	b.Done()
}

// TestProgressLine: the status line has the percentage, a bar, done/total
// in human units, one rate and the ETA; after Done the elapsed time.
func TestProgressLine(t *testing.T) {
	p := NewProgress(&bytes.Buffer{}, nil, "verify", 1_100_000_000)
	c := fake(p, true)
	p.Set(0)
	c.add(2 * time.Second)
	p.Set(489_000_000)
	got := p.line(c.now(), 100)
	want := "verify  44% [█████████████░░░░░░░░░░░░░░░░░] 489 MB/1.1 GB, 244 MB/s, ETA 2s"
	if got != want {
		t.Fatalf("line\n got %q\nwant %q", got, want)
	}
	if n := len([]rune(p.line(c.now(), 40))); n > 39 {
		t.Fatalf("line for 40 columns is %d wide", n)
	}
	p.done = true
	if got := p.line(c.now(), 100); !strings.HasSuffix(got, "244 MB/s, in 2s") {
		t.Fatalf("done line %q", got)
	}
	p.done = false
	p.Done()

	q := NewCountProgress(&bytes.Buffer{}, nil, "gen", 1000, "rows")
	c = fake(q, true)
	q.Set(0)
	c.add(time.Second)
	q.Set(250)
	if got, want := q.line(c.now(), 100), "gen  25% [███████░░░░░░░░░░░░░░░░░░░░░░░] 250/1000 rows, 250 rows/s, ETA 3s"; got != want {
		t.Fatalf("count line\n got %q\nwant %q", got, want)
	}
	q.Done()
}

// TestProgressResumeRate: bytes done before the first Set (a resumed
// transfer) and time spent waiting do not count toward the rate.
func TestProgressResumeRate(t *testing.T) {
	p := NewProgress(&bytes.Buffer{}, nil, "received", 0)
	c := fake(p, true)
	p.Waiting("waiting for the first segment")
	c.add(3 * time.Second)
	if got := p.line(c.now(), 100); got != "waiting for the first segment… 3s" {
		t.Fatalf("waiting line %q", got)
	}
	p.SetTotal(1000_000_000)
	p.Set(600_000_000) // resumed at 60%
	c.add(time.Second)
	p.Set(700_000_000)
	got := p.line(c.now(), 100)
	if !strings.Contains(got, " 70% ") || !strings.Contains(got, "700 MB/1.0 GB, 100 MB/s, ETA 3s") {
		t.Fatalf("resumed line %q", got)
	}
	p.Done()
}

// TestProgressTerminalOutput: what goes to the terminal, in order: the
// waiting line, a log line above the status line, the bar redrawn in
// place, the final state and a newline.
func TestProgressTerminalOutput(t *testing.T) {
	var buf syncBuffer
	p := NewProgress(&buf, nil, "received", 0)
	c := fake(p, true)
	log := p.Logger(false)
	p.Waiting("waiting for the first segment")
	log.Info("waiting for segments", "queue", "q")
	p.SetTotal(100)
	p.Set(50)
	c.add(time.Second)
	p.Set(100)
	p.Done()
	out := buf.String()
	iWait := strings.Index(out, "waiting for the first segment…")
	iLog := strings.Index(out, "\r\x1b[Ktime=")
	iBar := strings.Index(out, "received 100% [")
	if iWait < 0 || iLog < iWait || iBar < iLog || !strings.HasSuffix(out, "in 1s\x1b[K\n") {
		t.Fatalf("terminal output %q", out)
	}
	for _, frame := range strings.Split(out, "\r") {
		if strings.HasPrefix(frame, "received") && strings.Count(frame, "/s") != 1 {
			t.Fatalf("frame %q: want exactly one rate", frame)
		}
	}
}

// A wait that never ends is erased by Done: the error line that follows
// starts on a clean line.
func TestProgressWaitErased(t *testing.T) {
	var buf syncBuffer
	p := NewProgress(&buf, nil, "received", 0)
	fake(p, true)
	p.Waiting("waiting")
	p.Done()
	if out := buf.String(); !strings.HasSuffix(out, "\r\x1b[K") || strings.Contains(out, "\n") {
		t.Fatalf("output %q", out)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 999: "999 B", 1000: "1.0 kB", 73_092_633: "73 MB", 7_300_000: "7.3 MB",
		489_000_000: "489 MB", 999_600_000: "1.0 GB", 1_099_801_280: "1.1 GB", 12_000_000_000: "12 GB",
	} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
