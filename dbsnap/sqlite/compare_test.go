package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/segmq/segmq/dbsnap/internal/dbsnaptest"
)

// TestCompareNamesTheFirstDifference: verify --db names the table and the
// row that differ, whichever side has the row: a changed row, a missing
// one, an extra one, and a table whose shape changed (no row search).
func TestCompareNamesTheFirstDifference(t *testing.T) {
	src := newFile(t,
		`CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT)`,
		`INSERT INTO a VALUES (1, 'one'), (2, 'two'), (3, NULL)`,
		`CREATE TABLE b (id INTEGER, score REAL)`,
		`INSERT INTO b VALUES (7, 1.5)`)
	snap := dumpFile(t, src)
	for _, c := range []struct {
		name     string
		change   []string
		want     string // FirstDifference; "…" stands for the digests
		bProblem string // table b's own Problem
	}{
		{"changed row", []string{`UPDATE a SET name = 'TWO' WHERE id = 2`},
			`table a: same row count, digests differ (snapshot …); row 2 of the snapshot is not in the database: (id=2, name="two")`, ""},
		{"missing row", []string{`DELETE FROM a WHERE id = 3`},
			`table a: 3 rows in the snapshot, 2 in the database; row 3 of the snapshot is not in the database: (id=3, name=NULL)`, ""},
		{"extra row", []string{`INSERT INTO b VALUES (8, -0.25)`},
			`table b: 1 rows in the snapshot, 2 in the database; the database has a row the snapshot lacks: (id=8, score=-0.25)`, "1 rows in the snapshot, 2 in the database"},
		{"extra column", []string{`ALTER TABLE a ADD COLUMN x INTEGER`, `DELETE FROM b`},
			`table a: 2 columns in the snapshot, 3 in the database`, "1 rows in the snapshot, 0 in the database"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "dst.db")
			if _, err := Restore(context.Background(), bytes.NewReader(snap), RestoreOptions{Path: dst}); err != nil {
				t.Fatal(err)
			}
			mustEqual(t, snap, dst)
			db, err := sql.Open("sqlite", "file:"+dst)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range c.change {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Close()
			got, err := Compare(context.Background(), bytes.NewReader(snap), dst)
			if err != nil {
				t.Fatal(err)
			}
			if fd := dbsnaptest.FirstDifference(got); fd != c.want {
				t.Errorf("first difference\n got %s\nwant %s", got.FirstDifference, c.want)
			}
			if len(got.Tables) != 2 || got.Tables[0].Name != "a" || got.Tables[1].Name != "b" || got.Tables[1].Problem != c.bProblem {
				t.Errorf("tables %+v, want a then b with problem %q", got.Tables, c.bProblem)
			}
		})
	}
}
