// Package ptytest runs a command with its stderr on a real pseudo-terminal
// and tells a test what a person would see there: the bytes as written,
// and the screen they leave once carriage returns and erase-line codes
// have done their work.
package ptytest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// Term is a running command whose stderr (and stdin) is a terminal.
type Term struct {
	cmd  *exec.Cmd
	pty  *os.File
	mu   sync.Mutex
	out  bytes.Buffer  // what the command wrote to the terminal
	read chan struct{} // closed when the terminal reaches EOF
	wait chan struct{} // closed when the command has exited
	err  error         // the command's exit, once wait is closed
}

// Start starts cmd with stderr and stdin on a new terminal (TERM=xterm)
// cols columns wide, and stdout too unless the caller set it (a test that holds stdout
// to the command's summary sets it to a buffer). The command is killed,
// and the terminal closed, when the test ends.
func Start(t testing.TB, cmd *exec.Cmd, cols int) *Term {
	t.Helper()
	// The terminal is a VT100-like pty whatever the test runs under (CI
	// may say TERM=dumb); exec keeps the last of duplicate variables.
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: uint16(cols)})
	if err != nil {
		t.Fatalf("start %s on a pty: %v", cmd.Path, err)
	}
	tm := &Term{cmd: cmd, pty: f, read: make(chan struct{}), wait: make(chan struct{})}
	go func() {
		defer close(tm.read)
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			tm.mu.Lock()
			tm.out.Write(buf[:n])
			tm.mu.Unlock()
			if err != nil { // EIO once the command and its children have exited
				return
			}
		}
	}()
	go func() {
		tm.err = cmd.Wait()
		close(tm.wait)
	}()
	t.Cleanup(func() {
		select {
		case <-tm.wait:
		default:
			cmd.Process.Kill()
			<-tm.wait
		}
		f.Close()
		<-tm.read
	})
	return tm
}

// Output is everything written to the terminal so far, as written (with
// "\r\n" for each newline: the terminal's line discipline adds the "\r").
func (tm *Term) Output() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

// WaitFor waits until the output contains s, and fails the test after d.
func (tm *Term) WaitFor(t testing.TB, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(tm.Output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s the terminal does not show %q; it shows:\n%s", d, s, Screen(tm.Output()))
		}
		select {
		case <-tm.wait:
			if !strings.Contains(tm.Output(), s) {
				<-tm.read
				if !strings.Contains(tm.Output(), s) {
					t.Fatalf("the command exited (%v) without showing %q; the terminal shows:\n%s", tm.err, s, Screen(tm.Output()))
				}
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Wait waits for the command to exit (failing the test after d) and for
// the terminal's last bytes, and returns the command's exit error.
func (tm *Term) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-tm.wait:
	case <-time.After(d):
		t.Fatalf("the command did not exit within %s; the terminal shows:\n%s", d, Screen(tm.Output()))
	}
	select {
	case <-tm.read:
	case <-time.After(5 * time.Second):
		return errors.New("ptytest: the terminal did not reach EOF")
	}
	return tm.err
}

// Screen renders terminal output as the lines it leaves on screen: "\r"
// returns to the start of the line, ESC [ K erases to its end, "\n" ends
// it. Other escape sequences are dropped. Trailing blanks are trimmed.
func Screen(out string) string {
	var lines []string
	var line []rune
	col := 0
	r := []rune(out)
	for i := 0; i < len(r); i++ {
		switch c := r[i]; c {
		case '\r':
			col = 0
		case '\n':
			lines = append(lines, strings.TrimRight(string(line), " "))
			line, col = line[:0:0], 0
		case 0x1b:
			// CSI: ESC [ params final
			j := i + 1
			if j < len(r) && r[j] == '[' {
				j++
				for j < len(r) && (r[j] < 0x40 || r[j] > 0x7e) {
					j++
				}
				if j < len(r) && r[j] == 'K' {
					line = line[:min(col, len(line))]
				}
			}
			i = j
		default:
			for len(line) <= col {
				line = append(line, ' ')
			}
			line[col] = c
			col++
		}
	}
	if len(line) > 0 {
		lines = append(lines, strings.TrimRight(string(line), " "))
	}
	return strings.Join(lines, "\n")
}
