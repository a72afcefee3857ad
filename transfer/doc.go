// Package transfer moves one file through RabbitMQ: Send on the producer
// side, Receive on the consumer side. Commands producer and consumer are
// thin wrappers around it.
//
// A segment is one AMQP message whose body is the seed wire format (see
// package segment). Everything segmq adds travels in message headers,
// never in the body, so a seed-format producer (no headers) still works:
//
//	segmq-transfer  string  transfer id, one per producer run
//	segmq-mss       int64   maximum payload size
//	segmq-size      int64   file size in bytes
//	segmq-crc32c    int64   CRC-32C (Castagnoli) of this segment's payload
//	segmq-sha256    string  hex SHA-256 of the whole file (on the last segment)
//	segmq-encoding  string  "zstd" when the payload is one zstd frame
//
// plus delivery mode persistent, content type application/octet-stream and
// message id "<transfer>/<seq>".
//
// Send: file ─► Check (framing walk) ─► read-ahead goroutine: Splitter
// into a ring of reused buffers, SHA-256 of the file and CRC-32C of each
// payload, once per byte (and zstd, with --compress) ─► publisher: publish
// (mandatory, persistent) ─► confirm window (bounded; a nack is
// republished) ─► summary. Hashing overlaps the wait for confirms.
//
// Receive: deliveries ─► headers and body checked (bad: nack without
// requeue ─► dead-letter queue, with a log line) ─► other transfer: nack
// with requeue, paced ─► zstd decoded if so marked ─► Assembler.Add writes
// the payload at seq×MSS in <out>.part ─► hasher goroutine: SHA-256 of the
// contiguous prefix as it grows (payloads from memory; segments placed
// ahead of a gap read back once) ─► every FsyncEvery segments or
// FsyncInterval: fsync .part, save the received set to <out>.part.state,
// then ack ─► complete: cancel the consumer and settle what the broker
// had already sent, check size and SHA-256, rename to <out>.
//
// Segments the reorder window cannot take yet are parked (held unacked)
// and retried after progress; when the parking lot is full the oldest is
// nacked with requeue (one message, never multiple). RabbitMQ puts a
// requeued message back at or near the head of the queue, so requeues
// without progress are paced with a growing delay instead of spinning.
package transfer
