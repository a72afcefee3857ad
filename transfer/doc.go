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
//	flush    ─► first ack of the run in this process: claim it in the stream
//	            QUEUE.claims (claim.go); another owner's claim at a lower
//	            offset ─► ClaimError, no ack
//	         ─► partFile.startSync: fsync .part, then journal append, in the
//	            background while the next batch is placed (one at a time)
//	         ─► done (loop select, or the next flush waits) ─► acker: done ─► ack
//	complete ─► cancel, settle what was prefetched ─► partFile.commit: size,
//	            SHA-256, fsync, rename to --out ─► marker to QUEUE.done
//
// Each job has one owner:
//   - partFile (partfile.go) owns OUT.part, its journal OUT.part.state and
//     the lock OUT.part.lock; nothing is acked that a finished persist
//     (persist, or startSync once its done is closed) has not made
//     durable, and commit is the only way to --out. Only one persist runs
//     at a time, and while it runs only it touches the journal.
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
// finds another attached refuses to start (SplitError). Neither stops a
// standby with another --out that the broker activates when the first
// dies or loses its connection once, nor two consumers on an old queue
// after a reconnect: so before its first ack of a (transfer, run), once
// its first batch is durable, a consumer publishes a confirmed claim
// (owner: its .part's random id from the binding, which a rerun or a
// standby on the same .part shares whatever its host; host and absolute
// --out only for people; and a random nonce) to the stream QUEUE.claims
// and reads the stream from
// its first offset until it meets its own claim. The claim at the lowest
// offset owns the run: a stream reader holds nothing from other readers,
// and the later of two claimers always reads the earlier's claim, so
// exactly one owns it, with no clock involved. Any other consumer stops
// with a ClaimError before acking a segment of it (what it holds unacked
// returns to the queue; the owner, rerun on its .part, finishes). A claims
// stream that cannot be used stops the consumer too (ClaimUnavailableError)
// unless NoClaim; claims an older segmq left in QUEUE.done are honoured.
// Quorum queues
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
//	QUEUE        stream: per transfer, a start marker (segmq-kind "start",
//	             before its first segment), its segments, and a done marker
//	             (segmq-kind "done", after its last confirm); each marker's
//	             message id ends in a random nonce
//	QUEUE.index  stream: one "start" entry per producer run (before its first
//	             publish) and one "done" entry (after the done marker),
//	             headers only: transfer, run, size, mss, total, started
//	             (producer's clock, ms, shown by --list only), sha256 on
//	             "done", and the markers' offsets and ids: segmq-offset and
//	             segmq-marker (start marker), segmq-end-offset and
//	             segmq-end-marker (done marker, "done" only)
//
// Offsets, not clocks. The producer learns each marker's offset by
// attaching a reader to QUEUE at x-stream-offset "next" before publishing
// the marker (confirmed), and reading until the marker's id comes by.
// Cost: one reader and one small message per marker. No timestamp is used
// to find anything, so no clock skew can make a consumer start past a
// transfer (and wait for ever) or skip its first segments.
//
// Finding a transfer. The consumer reads QUEUE.index from its first
// entry: a stream tells a consumer nothing about its end
// (queue.declare-ok counts 0 messages), so the reader publishes a probe
// entry with a nonce of its own and reads until it returns. The newest
// transfer with a done entry that has not expired is taken (or
// --transfer's newest run; failing a complete one, the newest still being
// published; with an empty index, the first transfer to arrive). It reads
// QUEUE from just after the start marker: the transfer's segments and
// whatever was interleaved with them. Cost per restore: the index (about
// 400 bytes per transfer start and end, plus one probe per consumer run,
// all under the index's own retention) and the two checks below.
//
// Expiry and identity. A marker is "still there" when the first message
// read at its recorded offset is at that offset and has its id. If the
// first message is later, retention removed it; if another message is at
// the offset, or the stream ends before it (found by a probe published
// into QUEUE after one silent second: the only case that writes to QUEUE),
// QUEUE was deleted and recreated since: its offsets restart at 0, and the
// random id is what tells the two streams apart. Listing (and the
// consumer's choice) reads QUEUE's first retained offset once: a start
// offset before it has expired, whatever message sits at the head; of the
// others, the oldest is checked for identity: when it is there, QUEUE was
// not recreated since, so every later transfer is in it too (else the
// next one is checked). So a transfer whose first segments retention
// removed is listed expired, a non-segmq message at the head expires
// nothing, and `--transfer OLD` after a recreation is an error, not a
// wait. The producer makes the same check of its start marker after the
// done marker: gone (a stream whose retention is smaller than the file)
// is ErrHeadGone, a non-zero exit and no done entry; a file larger than
// the --stream-max-bytes it declares is refused before anything is sent
// (unless compressed: it may fit).
//
// Resuming. Every persist of the part file also journals the stream
// offset after the last delivery handled ('O' record, partfile.go). A
// rerun first checks its transfer's markers: the start marker, or failing
// that the done marker (the head is gone but the tail is there); neither
// is an error naming why (retention, or a recreated stream), with OUT.part
// kept. A journal offset past the done marker is brought back to it. It
// then reads from the journal offset. If the done marker arrives with
// segments missing (published before the start marker, which segmq's
// producer never does, or never confirmed), the consumer reads once more
// from the stream's first message, then fails naming the missing segments
// and records the done marker's own offset, so that a rerun reads the
// marker again and fails the same way instead of waiting past it.
package transfer
