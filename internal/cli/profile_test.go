package cli

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// TestProfileWritesBoth: --cpuprofile and --memprofile leave non-empty
// pprof files once stop has run; without the flags nothing is written.
func TestProfileWritesBoth(t *testing.T) {
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	var p Profile
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	p.Register(fs)
	if err := fs.Parse([]string{"--cpuprofile", cpu, "--memprofile", mem}); err != nil {
		t.Fatal(err)
	}
	stop, err := p.Start()
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{cpu, mem} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v, %v", f, fi, err)
		}
	}
	var none Profile
	stop, err = none.Start()
	if err != nil || stop() != nil {
		t.Fatalf("no flags: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("%d files in %s, want 2", len(entries), dir)
	}
}
