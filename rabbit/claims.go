package rabbit

import (
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The claims stream of a classic or quorum queue Q:
//
//	Q.claims  x-queue-type stream, x-max-age ClaimsMaxAge,
//	          x-max-length-bytes ClaimsMaxBytes: one small message per
//	          consumer that reaches its first ack of a (transfer, run)
//
// A consumer publishes its claim there with a confirm and reads the stream
// from its first offset until it sees its own claim; the claim at the
// lowest offset owns the run (package transfer, claim.go). A stream is
// read without taking anything away from other readers, and its offsets
// are one order that every reader sees, on every node of a cluster.

// Claims retention: a claim only matters while its transfer is being
// restored, so a month is far more than enough; the size limit (about
// 200,000 claims of ~300 bytes) keeps a runaway from filling the disk.
const (
	ClaimsMaxAge   = "30D"
	ClaimsMaxBytes = 64 << 20
	// claimsSegmentBytes keeps the stream's segment files small, so that
	// retention (which deletes whole segment files) bites.
	claimsSegmentBytes = 4 << 20
)

// ClaimsQueue is the stream of claims of a classic or quorum queue.
func (t Topology) ClaimsQueue() string { return t.queue() + ".claims" }

// DeclareClaims declares t's claims stream, on a channel of its own. A
// stream that exists with other retention (a policy, or by hand) is used
// as it is; anything else that holds the name is an error that says so.
func DeclareClaims(conn *amqp.Connection, t Topology) error {
	name := t.ClaimsQueue()
	args := amqp.Table{
		amqp.QueueTypeArg:                 Stream,
		amqp.StreamMaxAgeArg:              ClaimsMaxAge,
		amqp.QueueMaxLenBytesArg:          int64(ClaimsMaxBytes),
		amqp.StreamMaxSegmentSizeBytesArg: int64(claimsSegmentBytes),
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	_, err = ch.QueueDeclare(name, true, false, false, false, args)
	ch.Close()
	if err == nil {
		return nil
	}
	return declareFailed(conn, name, args, err, "")
}
