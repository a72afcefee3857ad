// Package dbsnap moves real databases into and out of snapshot files:
// `snapshot dump` (database → file), `snapshot restore` (file → database)
// and `snapshot verify --db` (is this database equal to this file?). The
// engine-specific work is in dbsnap/pg (PostgreSQL) and dbsnap/sqlite
// (SQLite, and the conversions of PostgreSQL values for it); this package holds
// what every engine shares: the snapshot reader the restore and verify
// walk, the allocation-free row record codec, the order-independent
// table digest, and verify's walks over an engine's canonical rows
// (compare.go).
//
// # Data flow
//
//	dump:    BEGIN REPEATABLE READ READ ONLY; pg_export_snapshot()  (one snapshot for all)
//	         catalog ─► Header (enums) + Table records (columns, declared
//	                    types, constraints, indexes, sequences)
//	         K workers, each: SET TRANSACTION SNAPSHOT; for each chunk
//	         (table, ctid block range): COPY (SELECT …) TO STDOUT (FORMAT binary)
//	             ─► parse tuples ─► Row records, framed, in 256 KiB batches
//	         batches ─► one writer goroutine ─► FILE.tmp ─► Trailer ─► fsync, rename
//
//	restore: read Header + Tables ─► BEGIN; CREATE TYPE/TABLE (no keys)
//	         runs of rows of one table ─► COPY … FROM STDIN (FORMAT binary, FREEZE)
//	         Trailer (counts checked) ─► casts of text-form columns, primary
//	         keys, unique, indexes, checks, foreign keys, setval ─► COMMIT
//
// A restore is one transaction: a cut file (no trailer), a garbage record,
// a value the target refuses, a constraint violation or a lost connection
// all end in ROLLBACK, and the target is as it was.
//
// # Values
//
// A PostgreSQL column travels in one of two forms (Column.pg_encoding):
//
//   - BINARY: Value.pg holds the field exactly as COPY (FORMAT binary)
//     wrote it, i.e. the type's send function output: int8 as 8 bytes big
//     endian, numeric as base-10000 digits with its scale and NaN, float8
//     bits (NaN, ±Infinity, -0), timestamptz micros since 2000 (±infinity),
//     jsonb with its version byte, arrays with dimensions, lower bounds, NULLs and
//     element type. Used for every built-in type and built-in arrays
//     (whose element OIDs are the same in every cluster) and for enums
//     (whose binary form is the label). Restored byte for byte: lossless.
//   - TEXT: Value.pg holds the type's text output (DateStyle ISO,
//     IntervalStyle postgres, extra_float_digits 3). Used for the types
//     whose binary form depends on the cluster (arrays of enums, domains,
//     composites, types from extensions). Restored as text, then
//     ALTER COLUMN … TYPE declared USING col::declared in the same
//     transaction.
//
// Column.type is the portable kind (int64, decimal, json, …) for other
// engines; Column.declared_type the source's type (numeric(12,2)).
// Snapshots written by `snapshot gen` carry portable values (int64,
// float64, text, bytes, bool, timestamp); a PostgreSQL restore encodes them
// as bigint, double precision, text, bytea, boolean, timestamptz.
//
// SQLite columns travel as the portable kinds too, chosen by SQLite's
// type affinity. A restore into SQLite converts PostgreSQL values to
// INTEGER, REAL, BLOB or the exact text PostgreSQL's output function
// prints, and refuses a type it has no exact conversion for.
//
// # Digest
//
// A table's digest is the sum, lane by lane mod 2^64, of SHA-256 of every
// row, where a row is the concatenation of its fields as COPY binary
// writes them ([int32 BE length or -1][bytes]) in the target's form. A sum
// does not depend on row order, so a dump with many workers and the
// database it came from digest the same, and verify streams both sides in
// constant memory.
package dbsnap
