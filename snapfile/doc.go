// Package snapfile gives meaning to a snapshot file's records: it
// generates realistic synthetic snapshots (Gen), checks that a file is a
// complete, well-formed snapshot (Verify, and the faster framing-only
// Check), and prints records as JSON lines (Cat).
//
// A snapshot file is a recordio stream of snapshotpb.Record messages:
//
//	Header, Table..., Row..., Trailer
//
// The Trailer's per-table row counts let a reader tell a complete snapshot
// from one cut at a record boundary, which framing alone cannot.
//
// Gen builds row i from (seed, i) alone, on an OrderedEncoder: rows are
// distinct and deterministic for a seed, and the bytes do not depend on
// the number of workers.
package snapfile
