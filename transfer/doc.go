// Package transfer moves one file through RabbitMQ: Send on the producer
// side, Receive on the consumer side. Commands producer and consumer are
// thin wrappers around it.
//
// A segment is one AMQP message whose body is the seed wire format (see
// package segment). Everything segmq adds travels in message headers,
// never in the body, so a seed-format producer (no headers) still works:
//
//	segmq-transfer  string  transfer id, one per producer run
//	segmq-run       string  16 hex digits, new per transfer, kept across --resume
//	segmq-mss       int64   maximum payload size
//	segmq-size      int64   file size in bytes
//	segmq-crc32c    int64   CRC-32C (Castagnoli) of this segment's payload as sent
//	segmq-sha256    string  hex SHA-256 of the whole file (required on the last segment)
//	segmq-encoding  string  "s2" (one S2 block) or "zstd" (one zstd frame); absent: as is
//	segmq-moved     int64   times a consumer moved this message to the queue's tail
//
// plus delivery mode persistent, content type application/octet-stream and
// message id "<transfer>/<seq>". A message with any segmq header must carry
// transfer, mss, size and crc32c; only a message with none of them is a
// seed-format segment.
//
// # Send
//
//	file ─► scanInput: framing walk + header/trailer check + fold of every segment's CRC-32C (one read)
//	     ─► read-ahead goroutine: Splitter into a ring of reused buffers; SHA-256 of
//	        the file, CRC-32C and fold of each payload, packer with --compress (s2, zstd, auto)
//	     ─► publisher: publish (mandatory, persistent) ─► confirm window ─► summary
//
// The publisher keeps one outstanding set: every seq taken to publish and
// not yet acked by the broker, with its payload's CRC-32C. A nack or a lost
// channel puts the seq in the retry queue; it leaves the set only on an
// ack, and the watermark recorded for --resume is min(outstanding ∪
// {next}). Republishes after a nack are paced, and --timeout bounds them.
// The SHA-256 rides on the last segment only if the bytes sent fold to the
// CRCs of the bytes checked, and a republished segment must read back with
// its first CRC: a file changed during the send fails with ErrInputChanged.
//
// # Receive
//
//	session  ─► readDone: the registry QUEUE.done of transfers already
//	            restored, read without ack, before consuming
//	delivery ─► acker.track(tag)
//	         ─► classifier (pure): dead-letter | set aside | drop leftover | place
//	         ─► s2/zstd decode when marked (unknown encoding: dead-letter), shape checked again
//	         ─► partFile.bind (first accepted segment only) ─► partFile.place
//	         ─► held while beyond the reorder window (at most prefetch-1)
//	flush    ─► partFile.persist (fsync .part, journal append) ─► acker: done ─► ack
//	complete ─► cancel, settle what was prefetched ─► partFile.commit: size,
//	            SHA-256, fsync, rename to --out ─► marker to QUEUE.done
//
// Each job has one owner:
//   - partFile (partfile.go) owns OUT.part, its journal OUT.part.state and
//     the lock OUT.part.lock; nothing is acked that persist has not made
//     durable, and commit is the only way to --out.
//   - classifier (classify.go) is a pure function of headers, body and the
//     binding; a transfer is bound only by a segment that passed every
//     check, so one bad message cannot capture the consumer.
//   - acker (acker.go) tracks every delivery tag of a channel and acks a
//     prefix with one multiple-ack, never past an unsettled delivery.
//   - the receiver (receive.go) moves deliveries between them, and the
//     reconnect loop (retry.go) is shared with Send.
//
// A delivery the consumer cannot take now (another transfer's, or held
// too long beyond the window) is moved to the queue's tail: a confirmed,
// persistent copy is published, then the original is acked. RabbitMQ
// returns a requeued message to the head of the queue, so nack(requeue)
// cannot get a consumer past a backlog, and on quorum queues (4.0–4.2)
// every requeue spends the delivery limit; a copy at the tail does
// neither. A crash between confirm and ack leaves a duplicate, which the
// consumer of that transfer drops. Set-asides with no progress are paced.
//
// Both commands take the nodes of a cluster as a list of URLs; the
// reconnect loop (retry.go) moves to another node when theirs dies,
// starting after the lost one. The queue has single-active-consumer, so a
// second consumer is a standby that receives nothing while the first
// lives (with the same --out and Standby, it waits for the lock and
// resumes the .part); on a queue created without it, a consumer that
// finds another attached refuses to start (SplitError). Quorum queues
// carry a delivery limit that is never reached; on one created without
// it (RabbitMQ 4.0+ then counts every return toward 20), a delivery whose
// x-delivery-count reaches 10 is acked at once, not with its batch.
//
// The producer is at-least-once (a --resume from a watermark that trails
// what was published, a republish after a lost connection), so copies of
// a restored transfer's segments can outlive its consumer. A transfer is
// its id and its run (segmq-run), so another night's transfer under the
// same --transfer id is never taken for them; after each restore the
// consumer records TRANSFER/RUN in QUEUE.done (the newest 1000 are kept),
// and every consumer acks and drops the segments of a transfer recorded
// there, instead of binding to them.
package transfer
