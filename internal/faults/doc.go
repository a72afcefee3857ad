// Package faults holds segmq's fault-injection tests: processes killed
// with SIGKILL, the broker stopped and started, connections reset by a
// proxy, corrupt copies, a digest mismatch, a full disk, a memory alarm.
// Each runs against a real broker and is judged by the output's bytes.
//
// The randomised scenarios run SEGMQ_FAULT_RUNS times (default 1) with
// seeds SEGMQ_FAULT_SEED+run (default 1, so make test always runs the
// same kill points); SEGMQ_FAULT_SEED=random draws a seed and prints it.
// Each run logs a MATRIX line. `make faults` runs them 5 times from a
// random seed (FAULT_SEED=N reproduces one) and collects the matrix.
package faults
