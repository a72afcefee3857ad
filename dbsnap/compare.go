package dbsnap

import (
	"crypto/sha256"
	"fmt"
	"io"

	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// What every engine's verify shares. An engine gives a canonical form of
// a row (the bytes both the snapshot and the database reduce to when
// they hold the same row); the walks below do the rest:
//
//   - DigestSnapshot reduces each table of a snapshot to a row count and a
//     Digest;
//   - Comparison.Add turns a table's counts and digests into its Problem
//     and the comparison's FirstDifference;
//   - FirstRowDiff names the first row that differs, by counting the
//     database's rows by key and then walking the snapshot.

// MaxDetailRows bounds the row-level search for the first difference,
// which keeps 16 bytes per database row in memory.
const MaxDetailRows = 20_000_000

// Canon appends the canonical bytes of a snapshot row to dst: the row in
// the form a restore writes it and the engine reads it back. The error is
// a value the engine cannot hold.
type Canon func(dst []byte, row *Row) ([]byte, error)

// RowKey identifies a row by its canonical bytes: the first 16 bytes of
// their SHA-256.
type RowKey [16]byte

// KeyOf is the key of the row whose canonical bytes are b.
func KeyOf(b []byte) RowKey {
	h := sha256.Sum256(b)
	return RowKey(h[:16])
}

// DigestSnapshot reads a whole snapshot and reduces each of its tables to
// a row count and a digest of its rows' canonical bytes (SnapRows and
// SnapDigest, by table id; a table without rows is absent, the zero
// TableCompare). It returns the reader for its Tables.
func DigestSnapshot(r io.Reader, canon Canon) (*Reader, map[uint32]TableCompare, error) {
	sr, err := NewReader(r)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	byID := map[uint32]*TableCompare{}
	var buf []byte
	for {
		row, err := sr.Next()
		if err == io.EOF {
			out := make(map[uint32]TableCompare, len(byID))
			for id, tc := range byID {
				out[id] = *tc
			}
			return sr, out, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("snapshot: %w", err)
		}
		if buf, err = canon(buf[:0], row); err != nil {
			return nil, nil, err
		}
		tc := byID[row.Table.GetId()]
		if tc == nil {
			tc = &TableCompare{}
			byID[row.Table.GetId()] = tc
		}
		tc.SnapRows++
		tc.SnapDigest.AddRow(buf)
	}
}

// Add appends a table's comparison. A table without a Problem (its shape
// matched) gets one when its row counts or digests differ. The first
// table with a Problem sets FirstDifference, followed by what detail
// finds, when detail is not nil and finds anything.
func (c *Comparison) Add(tc TableCompare, detail func() (string, error)) error {
	if tc.Problem == "" {
		switch {
		case tc.DBRows != tc.SnapRows:
			tc.Problem = fmt.Sprintf("%d rows in the snapshot, %d in the database", tc.SnapRows, tc.DBRows)
		case tc.DBDigest != tc.SnapDigest:
			tc.Problem = fmt.Sprintf("same row count, digests differ (snapshot %.16s…, database %.16s…)", tc.SnapDigest, tc.DBDigest)
		}
	}
	if tc.Problem != "" && c.FirstDifference == "" {
		c.FirstDifference = fmt.Sprintf("table %s: %s", tc.Name, tc.Problem)
		if detail != nil {
			d, err := detail()
			if err != nil {
				return err
			}
			if d != "" {
				c.FirstDifference += "; " + d
			}
		}
	}
	c.Tables = append(c.Tables, tc)
	return nil
}

// RowSides is what FirstRowDiff reads of one table: the snapshot's rows
// through Canon, the database's through ScanDB, and how to show a row of
// either in a message.
type RowSides struct {
	// Canon gives a snapshot row's canonical bytes.
	Canon Canon
	// ShowSnap renders the snapshot row whose canonical bytes Canon
	// returned last.
	ShowSnap func(canon []byte) string
	// ScanDB calls each with the canonical bytes of every row of the
	// table in the database.
	ScanDB func(each func(canon []byte)) error
	// ShowDB renders the database row being passed to each, during the
	// call.
	ShowDB func(canon []byte) string
	// DBRows, when known, sizes the count of the database's rows.
	DBRows int64
}

// FirstRowDiff finds the first row of table t in the snapshot f that the
// database lacks, else a row of the database that the snapshot lacks, and
// describes it; "" when the rows are the same multiset. It counts the
// database's rows by key, walks the snapshot from the start (so it seeks
// f back), and then, when every snapshot row was found, reads the database
// again for a row left over.
func FirstRowDiff(f io.ReadSeeker, t *pb.Table, s RowSides) (string, error) {
	have := make(map[RowKey]int32, s.DBRows)
	if err := s.ScanDB(func(canon []byte) { have[KeyOf(canon)]++ }); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	sr, err := NewReader(f)
	if err != nil {
		return "", err
	}
	var buf []byte
	for {
		row, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		if row.Table.GetId() != t.GetId() {
			continue
		}
		if buf, err = s.Canon(buf[:0], row); err != nil {
			return "", err
		}
		k := KeyOf(buf)
		if have[k] == 0 {
			return fmt.Sprintf("row %d of the snapshot is not in the database: %s", row.N, s.ShowSnap(buf)), nil
		}
		have[k]--
	}
	var found string
	err = s.ScanDB(func(canon []byte) {
		if found == "" && have[KeyOf(canon)] > 0 {
			found = "the database has a row the snapshot lacks: " + s.ShowDB(canon)
		}
	})
	return found, err
}
