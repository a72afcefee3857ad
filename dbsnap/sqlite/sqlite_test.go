package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmq/segmq/dbsnap/internal/dbsnaptest"
	"github.com/segmq/segmq/dbsnap/pg"
	"github.com/segmq/segmq/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(dbsnaptest.Main(m)) }

func newFile(t *testing.T, stmts ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return path
}

// contents lists every table's schema and rows with their storage
// classes, read by SQLite itself.
func contents(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	rows.Close()
	var b strings.Builder
	for _, n := range names {
		q := fmt.Sprintf(`SELECT * FROM %s ORDER BY 1`, quote(n))
		r, err := db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		cols, _ := r.Columns()
		fmt.Fprintf(&b, "table %s %v\n", n, cols)
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for r.Next() {
			r.Scan(ptrs...)
			for _, v := range vals {
				fmt.Fprintf(&b, " %T:%q", v, fmt.Sprint(v))
			}
			b.WriteString("\n")
		}
		r.Close()
	}
	return b.String()
}

func dumpFile(t *testing.T, path string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Dump(context.Background(), &buf, DumpOptions{Path: path}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	return buf.Bytes()
}

func mustEqual(t *testing.T, snap []byte, path string) {
	t.Helper()
	dbsnaptest.MustEqual(t, Compare, snap, path)
}

var sqliteSchema = []string{
	`CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email VARCHAR(40) NOT NULL UNIQUE, name TEXT, score REAL,
		balance DECIMAL(12,2), active BOOLEAN, created DATETIME, avatar BLOB)`,
	`CREATE TABLE "Order Lines ""x""" ("Line No" INTEGER NOT NULL, user_id INTEGER REFERENCES users, qty INT, note TEXT,
		PRIMARY KEY ("Line No", qty))`,
	`CREATE INDEX order_user ON "Order Lines ""x""" (user_id)`,
	`CREATE TABLE empty_t (a INTEGER, b TEXT)`,
	`INSERT INTO users (email, name, score, balance, active, created, avatar) VALUES
		('a@x', 'Ann 🎉', 1.5, 12.25, 1, '2026-01-02 03:04:05', x'00ff00'),
		('b@x', NULL, -1e300, 3, 0, NULL, x''),
		('c@x', 'O''Brien "q"', 9007199254740993e0, NULL, NULL, '1999-12-31', NULL)`,
	`INSERT INTO users (id, email) VALUES (100, 'd@x')`,
	`DELETE FROM users WHERE id = 100`, // AUTOINCREMENT remembers 100
	`INSERT INTO "Order Lines ""x""" VALUES (1, 1, 2, 'two'), (2, 1, 9223372036854775807, NULL), (3, NULL, -9223372036854775808, '')`,
}

func TestSQLiteRoundTrip(t *testing.T) {
	src := newFile(t, sqliteSchema...)
	snap := dumpFile(t, src)
	mustEqual(t, snap, src)
	dst := filepath.Join(t.TempDir(), "restored.db")
	if _, err := Restore(context.Background(), bytes.NewReader(snap), RestoreOptions{Path: dst}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, snap, dst)
	if want, got := contents(t, src), contents(t, dst); want != got {
		t.Fatalf("restored rows differ:\nwant %s\ngot  %s", want, got)
	}
	// The next id follows AUTOINCREMENT's counter, not max(id).
	db, _ := sql.Open("sqlite", "file:"+dst)
	defer db.Close()
	var id int64
	if err := db.QueryRow(`INSERT INTO users (email) VALUES ('new@x') RETURNING id`).Scan(&id); err != nil || id != 101 {
		t.Fatalf("next id %d (%v), want 101", id, err)
	}
	if _, err := db.Exec(`PRAGMA foreign_keys = ON`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO "Order Lines ""x""" VALUES (9, 4242, 1, 'x')`); err == nil {
		t.Error("the foreign key was not restored")
	}
	if _, err := db.Exec(`INSERT INTO users (email) VALUES ('a@x')`); err == nil {
		t.Error("the unique constraint was not restored")
	}
}

func TestSQLiteToPostgres(t *testing.T) {
	src := newFile(t, sqliteSchema...)
	snap := dumpFile(t, src)
	url := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := pg.Restore(ctx, bytes.NewReader(snap), pg.RestoreOptions{URL: url}); err != nil {
		t.Fatal(err)
	}
	c, err := pg.Compare(ctx, bytes.NewReader(snap), url)
	if err != nil || !c.Equal() {
		t.Fatalf("compare: %v %v", err, c)
	}
	conn := dbsnaptest.Conn(t, url)
	var id int64
	if err := conn.QueryRow(ctx, `INSERT INTO users (email) VALUES ('new@x') RETURNING id`).Scan(&id); err != nil || id != 101 {
		t.Fatalf("next id %d (%v), want 101", id, err)
	}
	var got string
	if err := conn.QueryRow(ctx, `SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, email, name, score, balance, active, encode(avatar, 'hex')), ';' ORDER BY id) FROM users WHERE id < 101`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	want := `1|a@x|Ann 🎉|1.5|12.25|t|00ff00;2|b@x||-1e+300|3|f|;3|c@x|O'Brien "q"|9.007199254740992e+15|||`
	if got != want {
		t.Fatalf("rows in PostgreSQL:\n got %s\nwant %s", got, want)
	}

	// SQLite text may hold a NUL byte; PostgreSQL text cannot.
	nul := newFile(t, `CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)`,
		`INSERT INTO notes VALUES (1, 'fine'), (2, 'a' || char(0) || 'b')`)
	url2 := pgtest.NewDB(t)
	_, err = pg.Restore(ctx, bytes.NewReader(dumpFile(t, nul)), pg.RestoreOptions{URL: url2})
	if err == nil || !strings.Contains(err.Error(), "table public.notes, row 2, column body: text holds a NUL byte") {
		t.Fatalf("restore of a NUL into PostgreSQL: %v", err)
	}
}

func TestPostgresToSQLite(t *testing.T) {
	url := pgtest.NewDB(t)
	ctx := context.Background()
	conn := dbsnaptest.Conn(t, url)
	for _, q := range []string{
		`CREATE TYPE mood AS ENUM ('sad', 'happy')`,
		`CREATE TABLE people (id bigserial PRIMARY KEY, name varchar(20) NOT NULL UNIQUE, born date, seen timestamptz, local timestamp,
			balance numeric(12,2), ratio double precision, small real, ok boolean, photo bytea, tags text[], ids int[],
			m mood, doc jsonb, u uuid, took interval, at time, ip inet)`,
		`CREATE TABLE pets (id int PRIMARY KEY, owner bigint REFERENCES people, name text)`,
		`CREATE INDEX pets_owner ON pets (owner)`,
		`INSERT INTO people (name, born, seen, local, balance, ratio, small, ok, photo, tags, ids, m, doc, u, took, at, ip) VALUES
			('ann', '2000-02-29', '2026-01-02 03:04:05.123456+02', '2026-01-02 03:04:05', 1234567890.12, 1e300, 1.5, true, '\xdead',
			 '{"a b",NULL}', '{1,NULL,3}', 'happy', '{"k": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 02:00:00', '13:14:15', '10.0.0.1/8'),
			('bob', NULL, 'infinity', NULL, -0.01, '-Infinity', NULL, false, NULL, '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
		`INSERT INTO pets VALUES (1, 1, 'rex'), (2, NULL, 'stray')`,
		`SELECT setval('people_id_seq', 50)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var buf bytes.Buffer
	if _, err := pg.Dump(ctx, &buf, pg.DumpOptions{URL: url}); err != nil {
		t.Fatal(err)
	}
	snap := buf.Bytes()
	dst := filepath.Join(t.TempDir(), "from-pg.db")
	var warnings []string
	if _, err := Restore(ctx, bytes.NewReader(snap), RestoreOptions{Path: dst, Warn: func(s string) { warnings = append(warnings, s) }}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, snap, dst)
	got := contents(t, dst)
	for _, want := range []string{
		`int64:"1" string:"ann" string:"2000-02-29" string:"2026-01-02 01:04:05.123456+00:00" string:"2026-01-02 03:04:05" string:"1234567890.12" float64:"1e+300" float64:"1.5" int64:"1" []uint8:"[222 173]" string:"{\"a b\",NULL}" string:"{1,NULL,3}" string:"happy" string:"{\"k\": [1, 2]}" string:"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" string:"1 day 02:00:00" string:"13:14:15" string:"10.0.0.1/8"`,
		`int64:"2" string:"bob" <nil>:"<nil>" string:"infinity" <nil>:"<nil>" string:"-0.01" float64:"-Inf"`,
		`table pets [id owner name]`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("restored SQLite lacks\n%s\nin\n%s", want, got)
		}
	}
	db, _ := sql.Open("sqlite", "file:"+dst)
	defer db.Close()
	var id int64
	if err := db.QueryRow(`INSERT INTO people (name) VALUES ('new') RETURNING id`).Scan(&id); err != nil || id != 51 {
		t.Fatalf("next id %d (%v), want 51", id, err)
	}
	t.Logf("warnings: %q", warnings)

	// NaN has no SQLite form: a clear error, and no file left behind.
	if _, err := conn.Exec(ctx, `UPDATE people SET ratio = 'NaN' WHERE name = 'bob'`); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if _, err := pg.Dump(ctx, &buf, pg.DumpOptions{URL: url}); err != nil {
		t.Fatal(err)
	}
	nan := filepath.Join(t.TempDir(), "nan.db")
	_, err := Restore(ctx, bytes.NewReader(buf.Bytes()), RestoreOptions{Path: nan})
	var ve *ValueError
	if !errors.As(err, &ve) || ve.Table != "people" || ve.Row != 2 || ve.Column != "ratio" {
		t.Fatalf("restore with NaN: %v, want a ValueError for people row 2 ratio", err)
	}
	if _, err := os.Stat(nan); !os.IsNotExist(err) {
		t.Errorf("a failed restore left %s behind", nan)
	}
}

func TestSQLiteBadInput(t *testing.T) {
	snap := dumpFile(t, newFile(t, sqliteSchema...))
	target := newFile(t, `CREATE TABLE keep (x INTEGER)`, `INSERT INTO keep VALUES (1), (2)`)
	before := contents(t, target)
	ctx := context.Background()
	for name, bad := range map[string][]byte{
		"cut":         snap[:len(snap)-3],
		"no trailer":  snap[:len(snap)/2],
		"garbage":     append(append(bytes.Clone(snap[:200]), bytes.Repeat([]byte{0xff}, 50)...), snap[250:]...),
		"not at all":  []byte("nope"),
		"empty input": nil,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Restore(ctx, bytes.NewReader(bad), RestoreOptions{Path: target})
			if err == nil {
				t.Fatal("restore of a bad snapshot succeeded")
			}
			t.Logf("error (as wanted): %v", err)
			if got := contents(t, target); got != before {
				t.Fatalf("target changed:\n%s", got)
			}
		})
	}
	if _, err := Restore(ctx, bytes.NewReader(snap), RestoreOptions{Path: target}); err != nil {
		t.Fatal(err)
	}
	_, err := Restore(ctx, bytes.NewReader(snap), RestoreOptions{Path: target})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), `table Order Lines "x"`) {
		t.Fatalf("second restore: %v, want ErrExists naming the table", err)
	}
	if _, err := Restore(ctx, bytes.NewReader(snap), RestoreOptions{Path: target, Clean: true}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, snap, target)

	// A changed row is found and shown.
	db, _ := sql.Open("sqlite", "file:"+target)
	if _, err := db.Exec(`UPDATE users SET name = 'Eve' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c, err := Compare(ctx, bytes.NewReader(snap), target)
	if err != nil || c.Equal() || !strings.Contains(c.FirstDifference, `row 1 of the snapshot is not in the database: (id=1, email="a@x", name="Ann 🎉"`) {
		t.Fatalf("compare after a change: %v, %+v", err, c)
	}
	if _, err := Dump(ctx, io_discard{}, DumpOptions{Path: filepath.Join(t.TempDir(), "missing.db")}); err == nil {
		t.Error("dump of a missing file succeeded")
	}
}

type io_discard struct{}

func (io_discard) Write(p []byte) (int, error) { return len(p), nil }

// TestSQLiteDumpSaysWhatItLeavesBehind: views and triggers are listed.
func TestSQLiteDumpSaysWhatItLeavesBehind(t *testing.T) {
	path := newFile(t,
		`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`,
		`CREATE VIEW v AS SELECT id FROM t`,
		`CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET v = 'x' WHERE id = NEW.id; END`)
	var buf bytes.Buffer
	st, err := Dump(context.Background(), &buf, DumpOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(st.NotCarried, "|"); got != "trigger tr|view v" {
		t.Fatalf("NotCarried = %q, want trigger tr|view v", got)
	}
}
