package pg

import (
	"context"
	"strings"
	"testing"

	"github.com/segmq/segmq/internal/pgtest"
)

// schemaSQL covers every type issue 10 lists, with edge values, names
// that need quoting, a table without a primary key, an empty table,
// enums and arrays with NULLs, serial and identity columns, a foreign
// key, a check, a unique constraint and secondary indexes.
var schemaSQL = []string{
	`CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'it''s "complicated"')`,
	`CREATE SCHEMA "Other Schema"`,
	`CREATE TABLE users (id bigserial PRIMARY KEY, email varchar(40) UNIQUE NOT NULL, name text,
		created timestamptz NOT NULL DEFAULT now())`,
	`CREATE TABLE alltypes (
		id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		s smallint, i integer, b bigint, n numeric, n2 numeric(12,2), r real, d double precision,
		t text, vc varchar(10), c char(5), by bytea, bo boolean, da date, ti time, ts timestamp, tz timestamptz,
		iv interval, u uuid, j json, jb jsonb, ip inet, ia int[], ta text[], tza timestamptz[], na numeric[],
		m public.mood, ma public.mood[], p point, ir int4range,
		user_id bigint REFERENCES users (id) ON DELETE CASCADE,
		CHECK (s IS NULL OR s > -32768 OR i > 0))`,
	`CREATE INDEX alltypes_t_idx ON alltypes (t)`,
	`CREATE INDEX alltypes_lower_idx ON alltypes (lower(t)) WHERE t IS NOT NULL`,
	`CREATE TABLE nopk (a int, b text, price numeric(10,2), qty int, total numeric GENERATED ALWAYS AS (price * qty) STORED, c2 text DEFAULT 'x')`,
	`CREATE TABLE more_types (tt timetz, mo money, bi bit(8), vb varbit, ts tsvector, tq tsquery, ci cidr, ma macaddr, m8 macaddr8,
		r8 int8range, nr numrange, tr tstzrange, dr daterange, x xml, ba bytea[], ua uuid[], ja jsonb[], ba2 boolean[], ln line, bx box,
		pa path, pg polygon, ci2 circle, ls lseg, oi oid, ch "char", nm name, pl pg_lsn, f4a real[], ia2 interval[])`,
	`INSERT INTO more_types VALUES ('12:34:56.789+05:30', '-12.34', B'10101010', B'1', 'a fat:2 cat', 'fat & rat', '10.1.0.0/16',
		'08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', '[1,100)', '(-1.5,2.25]', '[2026-01-01 00:00:00+00,infinity)', 'empty',
		'<a x="1">t</a>', '{"\\x00ff",NULL}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', ARRAY['{"a":1}'::jsonb, NULL], '{t,f,NULL}',
		'{1,2,3}', '((0,0),(1,1))', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))', '<(1,1),2>', '[(0,0),(1,1)]', 4294967295, 'x', 'a name',
		'16/B374D848', '{NaN,-Infinity,-0}', '{"1 day","-00:00:01"}'), (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
	`CREATE TABLE nocols ()`,
	`INSERT INTO nocols DEFAULT VALUES`,
	`INSERT INTO nocols DEFAULT VALUES`,
	`CREATE TABLE empty_t (x int PRIMARY KEY, y text)`,
	`CREATE TABLE "Other Schema"."Mixed ""Quoted"" t.a.b le" ("Key Col" serial PRIMARY KEY, "sp ace" text, "quo""te" bigint REFERENCES users (id),
		UNIQUE ("sp ace", "quo""te"))`,
	`CREATE INDEX "Idx ""x""" ON "Other Schema"."Mixed ""Quoted"" t.a.b le" ("quo""te" DESC)`,
	`INSERT INTO users (email, name, created) VALUES ('a@x', 'Ann', '2026-01-02 03:04:05.678901+00'), ('b@x', NULL, 'infinity'), ('c@x', 'Çé 🎉', '-infinity')`,
	`INSERT INTO alltypes (s, i, b, n, n2, r, d, t, vc, c, by, bo, da, ti, ts, tz, iv, u, j, jb, ip, ia, ta, tza, na, m, ma, p, ir, user_id) VALUES
		(-32768, 2147483647, -9223372036854775808, 'NaN', 1234567890.12, '-0', 'Infinity',
		 E'multi\nline ünïcödé 🎉 \\ '' "', 'ten chars!', 'ab', '\x00ff00'::bytea, true, '4713-01-01 BC', '24:00:00',
		 'infinity', '-infinity', '1 year 2 mons -3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		 '{"b": 1,   "a": [1, 2]}', '{"b": 1, "a": [1, null, "x"]}', '192.168.1.0/24', '{1,NULL,3}', '{"a b",NULL,"c\"d",""}',
		 '{infinity,NULL,"2026-01-01 00:00:00+00"}', '{NaN,1.50,NULL}',
		 'it''s "complicated"', '{happy,NULL,"it''s \"complicated\""}', '(1.5,-2)', '[1,10)', 1),
		(32767, -2147483648, 9223372036854775807, '-0.000000000000000000000000000001234567890123456789', -0.01, 'NaN', '-0',
		 '', '', '', ''::bytea, false, '5874897-12-31', '00:00:00', '1999-12-31 23:59:59.999999', '2026-11-22 15:00:00.123456+00',
		 '-178000000 years', '00000000-0000-0000-0000-000000000000', 'null', '[]', '::1', '{}', '{NULL}', '{}', '{}',
		 'sad', '{}', '(0,0)', 'empty', 2),
		(NULL, NULL, NULL, 9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999.5, NULL,
		 '-Infinity', 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		 NULL, NULL, NULL, NULL, NULL),
		(1, 1, 1, 1, 1, 1.17549435e-38, 4.9406564584124654e-324, repeat('long text ', 10000), NULL, NULL,
		 decode(repeat('00ff', 50000), 'hex'), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		 '{{1,2},{3,NULL}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
	`INSERT INTO nopk (a, b, price, qty) VALUES (1, 'dup', 1.5, 3), (1, 'dup', 1.5, 3), (NULL, NULL, NULL, 2), (2, 'x', 0.01, -7)`,
	`INSERT INTO "Other Schema"."Mixed ""Quoted"" t.a.b le" ("sp ace", "quo""te") VALUES ('one', 1), ('two', NULL), (NULL, 3)`,
	// Leave gaps in the sequences: the next value must follow the
	// sequence, not max(id).
	`SELECT setval('users_id_seq', 100)`,
	`SELECT setval(pg_get_serial_sequence('alltypes', 'id'), 500)`,
}

func TestRoundTripAllTypes(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	mustExec(t, src, schemaSQL...)
	snap := dump(t, src, DumpOptions{Workers: 2})
	restore(t, snap, dst, RestoreOptions{})

	want, got := fingerprint(t, src), fingerprint(t, dst)
	t.Logf("fingerprint:\n%s", want)
	if want != got {
		t.Fatalf("restored database differs (-want +got):\n%s", lineDiff(want, got))
	}
	mustEqual(t, snap, src)
	mustEqual(t, snap, dst)

	// A second dump of the restored database has the same rows.
	mustEqual(t, dump(t, dst, DumpOptions{}), src)

	// INSERT without an id continues the sequences.
	ctx := context.Background()
	for _, url := range []string{src, dst} {
		conn := mustConn(t, url)
		var u, a, k int64
		if err := conn.QueryRow(ctx, `INSERT INTO users (email) VALUES ('new@x') RETURNING id`).Scan(&u); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `INSERT INTO alltypes DEFAULT VALUES RETURNING id`).Scan(&a); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `INSERT INTO "Other Schema"."Mixed ""Quoted"" t.a.b le" DEFAULT VALUES RETURNING "Key Col"`).Scan(&k); err != nil {
			t.Fatal(err)
		}
		if u != 101 || a != 501 || k != 4 {
			t.Errorf("%s: next ids %d %d %d, want 101 501 4", url, u, a, k)
		}
	}
	// The foreign key works in the restored database.
	if _, err := mustConn(t, dst).Exec(ctx, `INSERT INTO alltypes (user_id) VALUES (424242)`); err == nil || !strings.Contains(err.Error(), "foreign key") {
		t.Errorf("insert violating the foreign key: err = %v, want a foreign key violation", err)
	}
}

// lineDiff shows the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	in := func(l string, s []string) bool {
		for _, x := range s {
			if x == l {
				return true
			}
		}
		return false
	}
	var b strings.Builder
	for _, l := range w {
		if !in(l, g) {
			b.WriteString("-" + l + "\n")
		}
	}
	for _, l := range g {
		if !in(l, w) {
			b.WriteString("+" + l + "\n")
		}
	}
	return b.String()
}
