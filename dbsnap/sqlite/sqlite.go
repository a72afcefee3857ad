// Package sqlite dumps an SQLite database into a snapshot file, restores a
// snapshot (from SQLite or from PostgreSQL) into an SQLite database and
// compares the two. The driver is modernc.org/sqlite: SQLite compiled to
// pure Go, so the binaries stay CGO_ENABLED=0.
//
// SQLite values travel as the portable kinds (int64, float64, text,
// bytes, bool); a PostgreSQL value restored into SQLite is converted as
// the README's mapping table says (numeric, dates, intervals, uuid, json,
// arrays, enums become TEXT in PostgreSQL's text form; timestamptz becomes
// ISO 8601 text in UTC). What SQLite cannot hold (NaN, which SQLite
// stores as NULL) is an error naming table, row and column.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/segmq/segmq/dbsnap"
)

// ErrExists is a table of the snapshot that exists in the target.
var ErrExists = errors.New("sqlite: already exists in the target (use --clean to replace it)")

// open opens the database file at path. readOnly refuses a missing file.
func open(path string, readOnly bool) (*sql.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlite: no database path")
	}
	if readOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"
	if readOnly {
		dsn += "&mode=ro"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// quote quotes an SQLite identifier.
func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// affinity returns SQLite's column affinity for a declared type (the
// rules of section 3.1 of https://sqlite.org/datatype3.html).
func affinity(decl string) string {
	d := strings.ToUpper(decl)
	switch {
	case strings.Contains(d, "INT"):
		return "INTEGER"
	case strings.Contains(d, "CHAR"), strings.Contains(d, "CLOB"), strings.Contains(d, "TEXT"):
		return "TEXT"
	case d == "" || strings.Contains(d, "BLOB"):
		return "BLOB"
	case strings.Contains(d, "REAL"), strings.Contains(d, "FLOA"), strings.Contains(d, "DOUB"):
		return "REAL"
	}
	return "NUMERIC"
}

// Comparison is dbsnap's.
type Comparison = dbsnap.Comparison
