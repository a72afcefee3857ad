package pg

import (
	"bytes"
	"context"
	"testing"

	"github.com/segmq/segmq/dbsnap/internal/dbsnaptest"
	"github.com/segmq/segmq/internal/pgtest"
)

// TestCompareNamesTheFirstDifference: verify --db names the table and the
// row that differ, whichever side has the row: a changed row, a missing
// one, an extra one, and a table whose shape changed (no row search).
func TestCompareNamesTheFirstDifference(t *testing.T) {
	src := pgtest.NewDB(t)
	mustExec(t, src,
		`CREATE TABLE a (id int PRIMARY KEY, name text)`,
		`INSERT INTO a VALUES (1, 'one'), (2, 'two'), (3, NULL)`,
		`CREATE TABLE b (id bigint, score float8)`,
		`INSERT INTO b VALUES (7, 1.5)`)
	snap := dump(t, src, DumpOptions{})
	for _, c := range []struct {
		name     string
		change   []string
		want     string // FirstDifference; "…" stands for the digests
		bProblem string // table b's own Problem
	}{
		{"changed row", []string{`UPDATE a SET name = 'TWO' WHERE id = 2`},
			`table public.a: same row count, digests differ (snapshot …); row 2 of the snapshot is not in the database: (id=2, name="two")`, ""},
		{"missing row", []string{`DELETE FROM a WHERE id = 3`},
			`table public.a: 3 rows in the snapshot, 2 in the database; row 3 of the snapshot is not in the database: (id=3, name=NULL)`, ""},
		{"extra row", []string{`INSERT INTO b VALUES (8, -0.25)`},
			`table public.b: 1 rows in the snapshot, 2 in the database; the database has a row the snapshot lacks: (id=8, score=-0.25)`, "1 rows in the snapshot, 2 in the database"},
		{"extra column", []string{`ALTER TABLE a ADD COLUMN x int`, `DELETE FROM b`},
			`table public.a: 2 columns in the snapshot, 3 in the database`, "1 rows in the snapshot, 0 in the database"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := pgtest.NewDB(t)
			restore(t, snap, dst, RestoreOptions{})
			mustEqual(t, snap, dst)
			mustExec(t, dst, c.change...)
			got, err := Compare(context.Background(), bytes.NewReader(snap), dst)
			if err != nil {
				t.Fatal(err)
			}
			fd := dbsnaptest.FirstDifference(got)
			if fd != c.want {
				t.Errorf("first difference\n got %s\nwant %s", got.FirstDifference, c.want)
			}
			if len(got.Tables) != 2 || got.Tables[0].Name != "public.a" || got.Tables[1].Name != "public.b" || got.Tables[1].Problem != c.bProblem {
				t.Errorf("tables %+v, want public.a then public.b with problem %q", got.Tables, c.bProblem)
			}
		})
	}
}
