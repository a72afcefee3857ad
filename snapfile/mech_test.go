package snapfile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// Tests for what the mutation run (make mutate) found unguarded.

// genDigest2000 is the SHA-256 of Gen(2000 rows, seed 42). The small
// golden file holds too few rows to reach every generator branch (event
// payloads of every length); this pins all of them. Same seed, same
// bytes is the generator's contract: change the digest only with the
// generator, on purpose.
const genDigest2000 = "efdeb691a00b1c2f47c79fc54dc9514e2ccf4e4210563501083ff839796b1eef"

func TestGenDigestPinned(t *testing.T) {
	for _, workers := range []int{1, 3} {
		sum := sha256.Sum256(gen(t, 2000, workers, 42))
		if got := hex.EncodeToString(sum[:]); got != genDigest2000 {
			t.Fatalf("workers %d: Gen(2000 rows, seed 42) has sha256 %s, pinned %s", workers, got, genDigest2000)
		}
	}
}

func TestGenValidateBounds(t *testing.T) {
	if err := (GenOptions{Rows: 0, Workers: 0}).Validate(); err != nil {
		t.Errorf("0 rows, 0 workers: %v", err)
	}
	if err := (GenOptions{Rows: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "rows must be >= 0, got -1") {
		t.Errorf("-1 rows: %v", err)
	}
	if err := (GenOptions{Workers: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "workers must be >= 0, got -1") {
		t.Errorf("-1 workers: %v", err)
	}
	var buf bytes.Buffer
	if _, err := Gen(context.Background(), &buf, GenOptions{Rows: 0}); err != nil {
		t.Fatalf("an empty database: %v", err)
	}
	if _, _, err := Check(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("an empty database does not check: %v", err)
	}
}

// TestGenProgressCadence: Progress is called once per 64Ki rows queued,
// with the count so far, and once at the end with the total.
func TestGenProgressCadence(t *testing.T) {
	var calls []int64
	var buf bytes.Buffer
	if _, err := Gen(context.Background(), &buf, GenOptions{Rows: 1<<16 + 1, Seed: 1, Progress: func(n int64) { calls = append(calls, n) }}); err != nil {
		t.Fatal(err)
	}
	if want := []int64{1 << 16, 1<<16 + 1}; !slices.Equal(calls, want) {
		t.Fatalf("progress calls %v, want %v", calls, want)
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Offset: 12, Record: 3, Err: errors.New("boom")}
	if got := e.Error(); got != "offset 12 (record 3): boom" {
		t.Errorf("without detail: %q", got)
	}
	e.Detail = "why"
	if got := e.Error(); got != "offset 12 (record 3): boom: why" {
		t.Errorf("with detail: %q", got)
	}
}

// TestScanRowAcceptsCanonical: the fast path takes every row Gen writes
// (it may refuse only what is not canonical), with the table and kinds
// proto.Unmarshal finds.
func TestScanRowAcceptsCanonical(t *testing.T) {
	rows := 0
	for _, r := range records(t, gen(t, 300, 1, 5)) {
		var rec pb.Record
		if err := proto.Unmarshal(r, &rec); err != nil {
			t.Fatal(err)
		}
		row := rec.GetRow()
		table, kinds, ok := scanRow(r, nil)
		if row == nil {
			if ok {
				t.Fatalf("scanRow took a %T for a row", rec.Kind)
			}
			continue
		}
		rows++
		if !ok || table != row.GetTableId() || !bytes.Equal(kinds, appendKinds(nil, row)) {
			t.Fatalf("row %d: scanRow ok %v table %d kinds %v; want table %d kinds %v", rows, ok, table, kinds, row.GetTableId(), appendKinds(nil, row))
		}
	}
	if rows != 300 {
		t.Fatalf("%d rows scanned, want 300", rows)
	}
}
