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
//	segmq-encoding  string  "zstd" when the payload is one zstd frame
//	segmq-moved     int64   times a consumer moved this message to the queue's tail
//
// plus delivery mode persistent, content type application/octet-stream and
// message id "<transfer>/<seq>". A message with any segmq header must carry
// transfer, mss, size and crc32c; only a message with none of them is a
// seed-format segment.
//
// # Send
//
//	file ─► scanInput: framing check + fold of every segment's CRC-32C (one read)
//	     ─► read-ahead goroutine: Splitter into a ring of reused buffers; SHA-256 of
//	        the file, CRC-32C and fold of each payload, zstd with --compress
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
//	         ─► zstd decode when marked, shape checked again
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
// The producer is at-least-once (a --resume from a watermark that trails
// what was published, a republish after a lost connection), so copies of
// a restored transfer's segments can outlive its consumer. A transfer is
// its id and its run (segmq-run), so another night's transfer under the
// same --transfer id is never taken for them; after each restore the
// consumer records TRANSFER/RUN in QUEUE.done (the newest 1000 are kept),
// and every consumer acks and drops the segments of a transfer recorded
// there, instead of binding to them.
//
// # Streams (--queue-type stream): publish once, restore many times
//
// A stream is read, never consumed: any number of consumers restore the
// same transfer, at once or days later, from one publish, and the broker
// stores its bytes once. There is no requeue (nack only gives credit), no
// dead-lettering and no registry of restored transfers: the consumer
// (stream.go) reads in offset order, places this transfer's segments at
// their offsets (no reorder window is needed: nothing waits in memory),
// and skips everything else, malformed copies included; the SHA-256
// decides at the end. Acks are credit only (half the prefetch at a time).
//
//	QUEUE        stream: segments, then one done marker per transfer
//	             (segmq-kind "done"), published after the last confirm
//	QUEUE.index  stream: one "start" entry per producer run (before its first
//	             publish) and one "done" entry (after the done marker),
//	             headers only: transfer, run, size, mss, total, started
//	             (producer's clock, ms), sha256 on "done"; and one "located"
//	             entry (segmq-offset) from the first consumer that restored
//	             the transfer whole: the offset of the first segment it placed
//
// Finding a transfer. The consumer reads QUEUE.index from its first
// entry, never QUEUE: a stream tells a consumer nothing about its end
// (queue.declare-ok counts 0 messages), so the reader publishes a probe
// entry with a nonce of its own and reads until it returns. The newest
// transfer with a done entry is taken (or --transfer's newest run;
// failing a complete one, the newest still being published; with an
// empty index, the first transfer to arrive). It then reads QUEUE from
// the located offset when a consumer recorded one (exactly the transfer's
// segments and what was interleaved with them), else from the transfer's
// start time less StreamSkew (10 s, for the producer's clock against the
// broker's) with x-stream-offset as a timestamp. Cost per restore: the
// index (about 300 bytes per transfer start, end and location, plus one
// probe per consumer run, all under the index's own retention), and for
// the first restore up to StreamSkew of other traffic. If the
// done marker in QUEUE arrives with segments missing (a producer clock
// ahead of the broker's), the consumer reads once more from the first
// offset, then fails naming the missing segments.
//
// Resuming. Every persist of the part file also journals the stream
// offset after the last delivery handled ('O' record, partfile.go):
// everything before it is durable in OUT.part or was not this transfer's.
// A rerun reads from that offset, not from the transfer's start.
//
// Listing (consumer --list) is the index alone, plus one delivery: the
// first message still retained in QUEUE; if retention has removed anything
// (its offset is not 0), the transfers recorded before its transfer are
// reported expired.
package transfer
