// Package dbsnaptest holds what the engines' tests share: a TestMain that
// provides PostgreSQL and checks for leaked goroutines, and the check that
// a database equals a snapshot.
package dbsnaptest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/segmq/segmq/dbsnap"
	"github.com/segmq/segmq/internal/pgtest"
)

// Main runs an engine's tests (pgtest.Main: PostgreSQL on first use) and
// then fails them if a goroutine outlived them:
//
//	func TestMain(m *testing.M) { os.Exit(dbsnaptest.Main(m)) }
func Main(m *testing.M) int {
	code := pgtest.Main(m)
	if code == 0 {
		// Every connection, COPY goroutine and worker is gone.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
			code = 1
		}
	}
	return code
}

// Conn connects to the PostgreSQL database at url for the test's
// duration.
func Conn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// Compare is an engine's Compare (pg.Compare, sqlite.Compare).
type Compare func(ctx context.Context, f io.ReadSeeker, db string) (*dbsnap.Comparison, error)

// MustEqual fails the test unless compare finds database db equal to
// the snapshot snap.
func MustEqual(t testing.TB, compare Compare, snap []byte, db string) {
	t.Helper()
	c, err := compare(context.Background(), bytes.NewReader(snap), db)
	if err != nil {
		t.Fatalf("compare: %v", err)
	}
	if !c.Equal() {
		t.Fatalf("database differs from the snapshot: %s", c.FirstDifference)
	}
}

var digests = regexp.MustCompile(`[0-9a-f]{16}…, database [0-9a-f]{16}…`)

// FirstDifference is c.FirstDifference with the digests of "digests
// differ (snapshot D1…, database D2…)" cut to "(snapshot …)", for tests
// that compare it with a fixed text.
func FirstDifference(c *dbsnap.Comparison) string {
	return digests.ReplaceAllString(c.FirstDifference, "…")
}
