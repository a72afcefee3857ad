package transfer

import "testing"

// TestCrashWhileBackgroundSyncRunsNeverLosesAcked is
// TestCrashNeverAcksWhatPowerLossLoses with the plug pulled while a
// background batch may still be running (its fsync or its journal
// append), not after it finished, and 60 seeds.
func TestCrashWhileBackgroundSyncRunsNeverLosesAcked(t *testing.T) {
	runCrashes(t, crashRuns{seeds: 60, ackEvery: []int{1, 3, 8}, midSync: true})
}
