package main

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// buildProducer builds the producer command and returns a runner for it.
func buildProducer(t *testing.T) func(in string, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "producer")
	if out, err := exec.Command("go", "build", "-o", bin, "../producer").CombinedOutput(); err != nil {
		t.Fatalf("build producer: %v\n%s", err, out)
	}
	return func(in string, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"--in", in}, args...)...)
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out) + string(ee.Stderr), err
		}
		return string(out), err
	}
}
