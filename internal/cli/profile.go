package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// Profile holds the --cpuprofile and --memprofile flags that producer and
// consumer share, so that `make bench -profile` (and anyone chasing a
// slow transfer) can look inside a real run with `go tool pprof`.
type Profile struct {
	CPU string
	Mem string
}

// Register adds the flags to fs.
func (p *Profile) Register(fs *flag.FlagSet) {
	fs.StringVar(&p.CPU, "cpuprofile", "", "write a CPU profile to this file (go tool pprof)")
	fs.StringVar(&p.Mem, "memprofile", "", "write an allocation profile to this file when done (go tool pprof -sample_index=alloc_space)")
}

// Start starts CPU profiling if asked; stop ends it and writes the
// allocation profile. stop is never nil.
func (p *Profile) Start() (stop func() error, err error) {
	var cpu *os.File
	if p.CPU != "" {
		if cpu, err = os.Create(p.CPU); err != nil {
			return func() error { return nil }, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return func() error { return nil }, fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	return func() error {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpu.Close())
		}
		if p.Mem != "" {
			f, err := os.Create(p.Mem)
			if err == nil {
				runtime.GC()
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				errs = append(errs, f.Close())
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}, nil
}
