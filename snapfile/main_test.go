package snapfile

import (
	"flag"
	"os"
	"testing"
)

// TestMain gives the package's fuzzers a short minimization by default.
// FuzzVerify's coverage varies with goroutine scheduling (the parallel
// Verify), so the engine keeps "finding" new inputs and minimizing each one
// for 60 s, the default: it sat at 0 execs/s for the last half of a 60 s run.
// Ten attempts per input are plenty here. A -test.fuzzminimizetime on the
// command line still wins: flag.Parse in m.Run applies it after this.
func TestMain(m *testing.M) {
	if f := flag.Lookup("test.fuzzminimizetime"); f != nil {
		if err := f.Value.Set("10x"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
