package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Progress reports a long run's advance on stderr, never on stdout (which
// holds only a command's summary, for scripts).
//
// On a terminal it owns one status line, redrawn in place:
//
//	verify  44% [█████████████░░░░░░░░░░░░░░░░░] 489 MB/1.1 GB, 321 MB/s, ETA 2s
//
// Before the first Set it shows, if Waiting was called, how long the wait
// has lasted, so a person can tell waiting from hung:
//
//	waiting for the first segment… 12s
//
// Log lines written through Logger appear above the status line instead of
// garbling it. Done leaves the final state on screen with the elapsed
// time in place of the ETA.
//
// Elsewhere (a file, a pipe) it logs one line every LogInterval.
//
// The rate and the ETA count from the first Set: bytes already done when
// the first Set comes (a resumed transfer) and time spent waiting before it
// do not inflate or dilute the rate. Safe for concurrent use; Done must be
// called.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	log      *slog.Logger
	label    string
	unit     string // "bytes" (default) or a count such as "rows"
	total    int64
	cur      int64
	base     int64     // cur at the first Set
	start    time.Time // of the first Set
	created  time.Time
	started  bool
	last     time.Time // of the last log line or draw
	interval time.Duration
	waiting  string
	drawn    bool // the status line is on screen
	done     bool
	now      func() time.Time
	width    func() int
	stop     chan struct{} // closed by Done: ends the redraw goroutine
	exited   chan struct{} // closed by the redraw goroutine
}

// LogInterval is how often a non-terminal Progress logs.
var LogInterval = 5 * time.Second

// How often a terminal's status line is redrawn: at most every drawEvery
// on Set, and every tickEvery without one (the wait's seconds, a stall).
const (
	drawEvery = 100 * time.Millisecond
	tickEvery = 500 * time.Millisecond
)

// IsTerminal reports whether w is a terminal that can redraw a line
// (not TERM=dumb, which has no erase-line).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb"
}

// NewProgress starts reporting progress towards total bytes (total <= 0:
// unknown until SetTotal). The status line goes to w when it is a
// terminal; otherwise lines go to log (nil: p.Logger(false)).
func NewProgress(w io.Writer, log *slog.Logger, label string, total int64) *Progress {
	return NewCountProgress(w, log, label, total, "bytes")
}

// NewCountProgress is NewProgress for a count of unit (e.g. "rows").
func NewCountProgress(w io.Writer, log *slog.Logger, label string, total int64, unit string) *Progress {
	p := &Progress{w: w, tty: IsTerminal(w), log: log, label: label, unit: unit, total: total,
		interval: LogInterval, now: time.Now, width: func() int { return termWidth(w) }}
	p.created = p.now()
	p.last = p.created
	if p.log == nil {
		p.log = p.Logger(false)
	}
	if p.tty {
		p.stop, p.exited = make(chan struct{}), make(chan struct{})
		go p.redraw()
	}
	return p
}

// Logger returns a logger (see Logger) whose lines go to the Progress's
// writer: on a terminal the status line is erased, the log line written
// and the status line drawn again below it.
func (p *Progress) Logger(verbose bool) *slog.Logger { return Logger(lineWriter{p}, verbose) }

type lineWriter struct{ p *Progress }

func (l lineWriter) Write(b []byte) (int, error) {
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eraseLocked()
	n, err := p.w.Write(b)
	p.drawLocked()
	return n, err
}

// Waiting shows msg and how long the wait has lasted until the first Set
// (on a terminal; elsewhere the command's log says what it waits for).
func (p *Progress) Waiting(msg string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiting = msg
	p.drawLocked()
}

// SetTotal sets the total once it is known (the consumer learns the
// transfer's size from its first segment). total <= 0 is ignored.
func (p *Progress) SetTotal(total int64) {
	if p == nil || total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = total
}

// Set records that n bytes (or units) are done.
func (p *Progress) Set(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	args := p.setLocked(n)
	p.mu.Unlock()
	if args != nil {
		p.log.Info(p.label, args...)
	}
}

// Add records n more bytes done.
func (p *Progress) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	args := p.setLocked(p.cur + n)
	p.mu.Unlock()
	if args != nil {
		p.log.Info(p.label, args...)
	}
}

// setLocked records n and returns the attributes of a log line when one
// is due.
func (p *Progress) setLocked(n int64) []any {
	if p.total > 0 {
		// The consumer counts whole segments: the last may be short.
		n = min(n, p.total)
	}
	now := p.now()
	if !p.started {
		p.started, p.base, p.start = true, n, now
	}
	p.cur = n
	if p.tty {
		if now.Sub(p.last) >= drawEvery {
			p.drawLocked()
		}
		return nil
	}
	if now.Sub(p.last) < p.interval {
		return nil
	}
	p.last = now
	rate := p.rateLocked(now)
	args := []any{p.unit, n}
	switch {
	case rate <= 0: // the first Set: no rate yet
	case p.unit == "bytes":
		args = append(args, "MB/s", fmt.Sprintf("%.1f", rate/1e6))
	default:
		args = append(args, p.unit+"/s", fmt.Sprintf("%.0f", rate))
	}
	if p.total > 0 {
		args = append(args, "percent", fmt.Sprintf("%.1f", 100*float64(n)/float64(p.total)))
		if rate > 0 {
			args = append(args, "eta", p.etaLocked(rate).String())
		}
	}
	return args
}

// rateLocked is units per second since the first Set (0 until a rate can
// be told).
func (p *Progress) rateLocked(now time.Time) float64 {
	el := now.Sub(p.start).Seconds()
	if !p.started || el <= 0 || p.cur <= p.base {
		return 0
	}
	return float64(p.cur-p.base) / el
}

func (p *Progress) etaLocked(rate float64) time.Duration {
	left := max(p.total-p.cur, 0)
	return time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second)
}

// Done ends the status line, leaving its final state on screen (or
// erasing a wait that never ended), and stops the redraws. The caller
// prints its own one-line summary.
func (p *Progress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	if p.tty {
		if p.started {
			p.done = true // drawLocked: elapsed, not ETA
			p.drawLineLocked()
			io.WriteString(p.w, "\n")
		} else {
			p.eraseLocked()
		}
	}
	p.done = true
	p.mu.Unlock()
	if p.stop != nil {
		close(p.stop)
		<-p.exited
	}
}

func (p *Progress) redraw() {
	defer close(p.exited)
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.drawLocked()
			p.mu.Unlock()
		}
	}
}

// drawLocked draws the status line if there is one to show.
func (p *Progress) drawLocked() {
	if !p.tty || p.done || (!p.started && p.waiting == "") {
		return
	}
	p.drawLineLocked()
}

func (p *Progress) drawLineLocked() {
	p.last = p.now()
	io.WriteString(p.w, "\r"+p.line(p.last, p.width())+"\x1b[K")
	p.drawn = true
}

func (p *Progress) eraseLocked() {
	if p.drawn {
		io.WriteString(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

const barWidth = 30

// line renders the status line for a terminal width columns wide; it is
// never wider than width-1, so it cannot wrap.
func (p *Progress) line(now time.Time, width int) string {
	if !p.started {
		return fit(fmt.Sprintf("%s… %s", p.waiting, now.Sub(p.created).Truncate(time.Second)), width)
	}
	rate := p.rateLocked(now)
	var count, speed, tail string
	if p.unit == "bytes" {
		count = HumanBytes(p.cur)
		if p.total > 0 {
			count += "/" + HumanBytes(p.total)
		}
		speed = HumanBytes(int64(rate)) + "/s"
	} else {
		count = fmt.Sprintf("%d", p.cur)
		if p.total > 0 {
			count += fmt.Sprintf("/%d", p.total)
		}
		count += " " + p.unit
		speed = fmt.Sprintf("%.0f %s/s", rate, p.unit)
	}
	switch {
	case p.done:
		el := now.Sub(p.start)
		if el < time.Second {
			el = el.Round(time.Millisecond)
		} else {
			el = el.Round(100 * time.Millisecond)
		}
		tail = ", in " + el.String()
	case p.total > 0 && rate > 0:
		tail = ", ETA " + p.etaLocked(rate).String()
	}
	stats := count
	if rate > 0 {
		stats += ", " + speed
	}
	stats += tail
	if p.total <= 0 {
		return fit(p.label+" "+stats, width)
	}
	frac := min(max(float64(p.cur)/float64(p.total), 0), 1)
	head := fmt.Sprintf("%s %3.0f%% ", p.label, 100*frac)
	bw := min(barWidth, width-1-len([]rune(head))-len([]rune(stats))-3)
	if bw < 5 {
		return fit(head+stats, width)
	}
	filled := int(frac * float64(bw))
	bar := "[" + strings.Repeat("█", filled) + strings.Repeat("░", bw-filled) + "] "
	return head + bar + stats
}

// fit cuts s to width-1 columns.
func fit(s string, width int) string {
	r := []rune(s)
	if width > 1 && len(r) > width-1 {
		return string(r[:width-1])
	}
	return s
}

func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return cols
		}
	}
	return 80
}

// HumanBytes formats n bytes with SI units: 950 B, 7.3 MB, 489 MB, 1.1 GB.
func HumanBytes(n int64) string {
	const units = "kMGTPE"
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1000, 0
	for v >= 999.5 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if v < 9.95 {
		return fmt.Sprintf("%.1f %cB", v, units[i])
	}
	return fmt.Sprintf("%.0f %cB", v, units[i])
}

// Rate formats bytes over a duration as MB/s.
func Rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MB/s", float64(n)/d.Seconds()/1e6)
}
