// Package recordio reads and writes streams of length-prefixed records,
// the framing of a segmq snapshot file:
//
//	+---------------+-----------------+---------------+-----------------+--
//	| len u32 LE    | len bytes       | len u32 LE    | len bytes       | ...
//	+---------------+-----------------+---------------+-----------------+--
//
// The stream has no header of its own; what the bytes mean (a protobuf
// snapshotpb.Record for segmq) is up to the caller.
//
// Reading follows the standard library's stream discipline: Next returns
// io.EOF only at a clean record boundary; a stream that ends inside a
// length prefix or a record gives a *CorruptError wrapping
// io.ErrUnexpectedEOF, and a length above the reader's limit gives a
// *CorruptError wrapping ErrTooLarge before anything is allocated. Both
// carry the byte offset of the record that failed.
//
// OrderedEncoder encodes records on a pool of workers and writes them in
// input order: the output is byte-identical for any number of workers.
// Items are grouped in batches; at most 2×workers batches exist at once,
// so memory is bounded whatever the stream length.
package recordio
