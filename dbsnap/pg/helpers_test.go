package pg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/segmq/segmq/dbsnap/internal/dbsnaptest"
)

func TestMain(m *testing.M) { os.Exit(dbsnaptest.Main(m)) }

func mustConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	return dbsnaptest.Conn(t, url)
}

func mustExec(t *testing.T, url string, sql ...string) {
	t.Helper()
	conn := mustConn(t, url)
	for _, q := range sql {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("exec %.200s: %v", q, err)
		}
	}
}

func dump(t *testing.T, url string, o DumpOptions) []byte {
	t.Helper()
	o.URL = url
	var buf bytes.Buffer
	if _, err := Dump(context.Background(), &buf, o); err != nil {
		t.Fatalf("dump: %v", err)
	}
	return buf.Bytes()
}

func restore(t *testing.T, snap []byte, url string, o RestoreOptions) {
	t.Helper()
	o.URL = url
	if _, err := Restore(context.Background(), bytes.NewReader(snap), o); err != nil {
		t.Fatalf("restore: %v", err)
	}
}

func mustEqual(t *testing.T, snap []byte, url string) {
	t.Helper()
	dbsnaptest.MustEqual(t, Compare, snap, url)
}

// fingerprint describes a database independently of this package: every
// user table's rows in text form (sorted), its columns, constraints,
// indexes and sequences, as the catalog prints them.
func fingerprint(t *testing.T, url string) string {
	t.Helper()
	ctx := context.Background()
	conn := mustConn(t, url)
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, tbl := range tables {
		var n int64
		var sum string
		q := fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(x::text, E'\n' ORDER BY x::text)), '') FROM %s x`, tbl)
		if err := conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		fmt.Fprintf(&b, "table %s: %d rows, md5 %s\n", tbl, n, sum)
		for _, q := range []string{
			`SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
			   || ' ' || a.attidentity::text || ' ' || a.attgenerated::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
			   FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			  WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
			`SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass ORDER BY 1`,
			`SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1`,
		} {
			rows, err := conn.Query(ctx, q, tbl)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lines {
				fmt.Fprintf(&b, "  %s\n", l)
			}
		}
	}
	rows, err = conn.Query(ctx, `SELECT format('%I.%I', schemaname, sequencename) || ' ' || coalesce(last_value::text, 'unused')
		FROM pg_sequences ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seqs {
		fmt.Fprintf(&b, "sequence %s\n", s)
	}
	return b.String()
}

// tableNames lists the user tables of a database and their row counts.
func tableNames(t *testing.T, url string) string {
	t.Helper()
	var s string
	conn := mustConn(t, url)
	if err := conn.QueryRow(context.Background(), `SELECT coalesce(string_agg(format('%I.%I', n.nspname, c.relname), ',' ORDER BY 1), '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'S', 'i') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
