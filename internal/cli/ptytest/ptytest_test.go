package ptytest

import (
	"os/exec"
	"testing"
	"time"
)

// TestScreen: carriage returns overwrite, erase-line cuts, newlines end a
// line, other escape sequences vanish.
func TestScreen(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"abc", "abc"},
		{"waiting… 1s\r\x1b[Kwaiting… 2s", "waiting… 2s"},
		{"wait\r\x1b[Klog line\r\nbar 10%\rbar 100%\x1b[K\r\n", "log line\nbar 100%"},
		{"long line\rab", "abng line"},
		{"\x1b[1mbold\x1b[0m", "bold"},
	} {
		if got := Screen(tc.out); got != tc.want {
			t.Errorf("Screen(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}

// TestStart: a command started by Start sees a terminal of the width asked
// for on stdin, stdout and stderr.
func TestStart(t *testing.T) {
	tm := Start(t, exec.Command("sh", "-c", `[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && stty size >&2`), 77)
	if err := tm.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("%v: %q", err, tm.Output())
	}
	if got := Screen(tm.Output()); got != "40 77" {
		t.Fatalf("screen %q, want the size 40 77", got)
	}
}
