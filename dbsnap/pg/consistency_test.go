package pg

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segmq/segmq/dbsnap"
	"github.com/segmq/segmq/internal/pgtest"
)

// TestDumpSplitsBigTables: a table larger than ChunkPages is read in ctid
// ranges by every worker, and the dump still holds each row exactly once.
func TestDumpSplitsBigTables(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	mustExec(t, src,
		`CREATE TABLE big (id bigint PRIMARY KEY, v text, n numeric(12,2))`,
		`INSERT INTO big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 30000) g`,
		`DELETE FROM big WHERE id % 10 = 0`, // holes in the pages
		`CREATE TABLE small (k int)`,
		`INSERT INTO small VALUES (1), (2)`,
	)
	var pages int64
	if err := mustConn(t, src).QueryRow(context.Background(), `SELECT pg_relation_size('big') / 8192`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages < 100 {
		t.Fatalf("big has %d pages; the test wants many chunks", pages)
	}
	snap := dump(t, src, DumpOptions{Workers: 3, ChunkPages: 7})
	mustEqual(t, snap, src)
	restore(t, snap, dst, RestoreOptions{})
	if want, got := fingerprint(t, src), fingerprint(t, dst); want != got {
		t.Fatalf("restored database differs (-want +got):\n%s", lineDiff(want, got))
	}
}

// TestDumpIsConsistent moves money between two tables in transactions
// while a dump with several workers runs: the dump must see a total that
// some committed state had, i.e. the constant total.
func TestDumpIsConsistent(t *testing.T) {
	src := pgtest.NewDB(t)
	const accounts, start = 2000, 1000
	mustExec(t, src,
		`CREATE TABLE checking (id int PRIMARY KEY, balance bigint NOT NULL, pad text)`,
		`CREATE TABLE savings (id int PRIMARY KEY, balance bigint NOT NULL, pad text)`,
		`INSERT INTO checking SELECT g, 1000, repeat('x', 200) FROM generate_series(1, 2000) g`,
		`INSERT INTO savings SELECT g, 1000, repeat('y', 200) FROM generate_series(1, 2000) g`,
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var moves atomic.Int64
	var wg sync.WaitGroup
	for w := range 3 {
		conn, err := pgx.Connect(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer conn.Close(context.Background())
			for i := 0; ctx.Err() == nil; i++ {
				id := (i*7919+w*104729)%accounts + 1
				amt := i%50 + 1
				tx, err := conn.Begin(ctx)
				if err != nil {
					return
				}
				// Both orders of the two updates, so that neither table's
				// read alone could make the sum come out right.
				q1, q2 := `UPDATE checking SET balance = balance - $2 WHERE id = $1`, `UPDATE savings SET balance = balance + $2 WHERE id = $1`
				if i%2 == 1 {
					q1, q2 = `UPDATE savings SET balance = balance - $2 WHERE id = $1`, `UPDATE checking SET balance = balance + $2 WHERE id = $1`
				}
				if _, err := tx.Exec(ctx, q1, id, amt); err != nil {
					tx.Rollback(context.Background())
					return
				}
				if _, err := tx.Exec(ctx, q2, id, amt); err != nil {
					tx.Rollback(context.Background())
					return
				}
				if tx.Commit(ctx) == nil {
					moves.Add(1)
				}
			}
		})
	}
	for moves.Load() < 200 {
		time.Sleep(5 * time.Millisecond)
	}
	for round := range 3 {
		before := moves.Load()
		snap := dump(t, src, DumpOptions{Workers: 2, ChunkPages: 5})
		during := moves.Load() - before
		total, rows := sumBalances(t, snap)
		if rows != 2*accounts {
			t.Fatalf("round %d: %d rows in the dump, want %d", round, rows, 2*accounts)
		}
		if total != 2*accounts*start {
			t.Fatalf("round %d: balances sum to %d in the dump, want %d (%d transfers committed during the dump)", round, total, 2*accounts*start, during)
		}
		t.Logf("round %d: sum %d, %d transfers committed during the dump", round, total, during)
	}
	cancel()
	wg.Wait()
}

// sumBalances adds up column 2 (bigint, binary) of every row of a snapshot.
func sumBalances(t *testing.T, snap []byte) (total int64, rows int) {
	t.Helper()
	sr, err := dbsnap.NewReader(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	for {
		row, err := sr.Next()
		if err == io.EOF {
			return total, rows
		}
		if err != nil {
			t.Fatal(err)
		}
		v := row.Values[1]
		if v.Kind != dbsnap.KindPg || len(v.B) != 8 {
			t.Fatalf("balance value %+v", v)
		}
		total += int64(binary.BigEndian.Uint64(v.B))
		rows++
	}
}
