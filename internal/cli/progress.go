package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress reports a long run's advance: a progress bar (bytes, rate,
// ETA) when w is a terminal, else a log line every Interval. Safe for
// concurrent use.
type Progress struct {
	mu       sync.Mutex
	bar      *progressbar.ProgressBar
	log      *slog.Logger
	label    string
	total    int64
	cur      int64
	start    time.Time
	last     time.Time
	interval time.Duration
	unit     string // "bytes" (default) or a count such as "rows"
}

// LogInterval is how often a non-terminal Progress logs.
var LogInterval = 5 * time.Second

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// NewProgress starts reporting progress towards total bytes (total <= 0:
// unknown). The bar goes to w when it is a terminal; otherwise log lines
// go to log.
func NewProgress(w io.Writer, log *slog.Logger, label string, total int64) *Progress {
	return NewCountProgress(w, log, label, total, "bytes")
}

// NewCountProgress is NewProgress for a count of unit (e.g. "rows").
func NewCountProgress(w io.Writer, log *slog.Logger, label string, total int64, unit string) *Progress {
	p := &Progress{log: log, label: label, total: total, start: time.Now(), interval: LogInterval, unit: unit}
	p.last = p.start
	if IsTerminal(w) {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(unit == "bytes"),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString(unit),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

// Set records that n bytes are done.
func (p *Progress) Set(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(n)
}

func (p *Progress) setLocked(n int64) {
	p.cur = n
	if p.bar != nil {
		p.bar.Set64(n)
		return
	}
	if now := time.Now(); p.log != nil && now.Sub(p.last) >= p.interval {
		p.last = now
		el := now.Sub(p.start).Seconds()
		rate := float64(n) / el
		args := []any{p.unit, n, "MB/s", fmt.Sprintf("%.1f", rate/1e6)}
		if p.unit != "bytes" {
			args = []any{p.unit, n, p.unit + "/s", fmt.Sprintf("%.0f", rate)}
		}
		if p.total > 0 {
			args = append(args, "percent", fmt.Sprintf("%.1f", 100*float64(n)/float64(p.total)))
			if rate > 0 {
				args = append(args, "eta", time.Duration(float64(p.total-n)/rate*float64(time.Second)).Round(time.Second).String())
			}
		}
		p.log.Info(p.label, args...)
	}
}

// Add records n more bytes done.
func (p *Progress) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(p.cur + n)
}

// Done ends the bar (the caller prints its own one-line summary).
func (p *Progress) Done() {
	if p == nil || p.bar == nil {
		return
	}
	p.bar.Finish()
}

// Rate formats bytes over a duration as MB/s.
func Rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MB/s", float64(n)/d.Seconds()/1e6)
}
