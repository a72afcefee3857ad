package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmq/segmq/dbsnap/internal/dbsnaptest"
	"github.com/segmq/segmq/dbsnap/pg"
	"github.com/segmq/segmq/internal/pgtest"
)

// TestPostgresTextForms: what a restore into SQLite stores as TEXT is
// exactly what PostgreSQL prints for the value; types without an exact
// conversion are refused by name.
func TestPostgresTextForms(t *testing.T) {
	url := pgtest.NewDB(t)
	ctx := context.Background()
	conn := dbsnaptest.Conn(t, url)
	exact := map[string][]string{
		"numeric":         {"'NaN'", "'12.50'", "'-0.0000001234'", "1e30::numeric", "0", "'Infinity'", "'-Infinity'", "123456789.000000001", "-1"},
		"numeric(12,2)[]": {"'{1.5,NULL,-0.01}'"},
		"interval": {"'-1 mon 2 days'", "'1 year 2 mons -3 days 04:05:06.789'", "'-00:00:01.5'", "'0'", "'-1 days -02:00:00'",
			"'1 mon -1 day 01:00'", "'-7 years'", "'100:00:00.000001'"},
		"inet":      {"'10.0.0.1'", "'::1'", "'10.1.0.0/16'", "'2001:db8::1/64'", "'::ffff:1.2.3.4'"},
		"cidr":      {"'10.1.0.0/16'", "'2001:db8::/32'"},
		"int[]":     {"'{{1,2},{NULL,4}}'", "'[0:1]={1,2}'", "'{}'"},
		"text[]":    {`'{"a b",NULL,"NULL","","q\"x","b\\\\s",plain,"{x}"}'`},
		"boolean[]": {"'{t,f,NULL}'"},
		"uuid[]":    {"'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'"},
		"bigint[]":  {"'{-9223372036854775808,9223372036854775807}'"},
		"date":      {"'2000-02-29'", "'infinity'", "'-infinity'", "'1970-01-01'"},
		"time":      {"'00:00'", "'24:00'", "'13:14:15.5'", "'23:59:59.999999'"},
		"uuid":      {"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"},
		"xml":       {`'<a x="1">t</a>'`},
		`"char"`:    {"'x'"},
		"json":      {`'{"b": 1,   "a": 2}'`},
		"jsonb":     {`'{"b": 1, "a": [1, null]}'`},
	}
	var n int
	for typ, vals := range exact {
		for _, v := range vals {
			n++
			tbl := fmt.Sprintf("t%d", n)
			if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (v %s); INSERT INTO %s VALUES (%s)`, tbl, typ, tbl, v)); err != nil {
				t.Fatalf("%s %s: %v", typ, v, err)
			}
			var want string
			conn.QueryRow(ctx, "SELECT concat(v) FROM "+tbl).Scan(&want) // the output function, as psql shows it
			got, err := viaSQLite(t, url, tbl)
			if err != nil {
				t.Errorf("%s %s: %v", typ, v, err)
				continue
			}
			if got != want {
				t.Errorf("%s %s: SQLite holds %q, PostgreSQL prints %q", typ, v, got, want)
			}
		}
	}
	for typ, v := range map[string]string{"point": "'(1,2)'", "int4range": "'[1,2)'", "timetz": "'12:00+01'", "money": "'1.5'", "real[]": "'{1.5}'"} {
		n++
		tbl := fmt.Sprintf("t%d", n)
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (v %s); INSERT INTO %s VALUES (%s)`, tbl, typ, tbl, v)); err != nil {
			t.Fatal(err)
		}
		if _, err := viaSQLite(t, url, tbl); err == nil || !strings.Contains(err.Error(), "no exact SQLite form") ||
			!strings.Contains(err.Error(), "table "+tbl+", row 1, column v") {
			t.Errorf("%s: err = %v, want a refusal naming table, row and column", typ, err)
		}
	}
}

// viaSQLite dumps one PostgreSQL table, restores it into a new SQLite
// file and returns the value stored there.
func viaSQLite(t *testing.T, url, table string) (string, error) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := pg.Dump(context.Background(), &buf, pg.DumpOptions{URL: url, Tables: []string{table}}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "v.db")
	if _, err := Restore(context.Background(), bytes.NewReader(buf.Bytes()), RestoreOptions{Path: dst}); err != nil {
		return "", err
	}
	db, err := sql.Open("sqlite", "file:"+dst)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v any
	if err := db.QueryRow("SELECT +v FROM " + quote(table)).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(v), nil
}
