package rabbit

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Streams (--queue-type stream). The topology for a stream Q is two streams:
//
//	Q        x-queue-type stream, x-max-age, x-max-length-bytes
//	         (x-stream-max-segment-size-bytes when set): the segments, and
//	         per transfer a "start" marker before its first segment and a
//	         "done" marker after its last confirm
//	Q.index  x-queue-type stream, the same x-max-age, at most
//	         IndexMaxBytes: one small message per transfer start and end,
//	         with the offsets of its markers in Q, so that a consumer finds
//	         the newest complete transfer, and where it starts, without
//	         reading Q from its beginning (see package transfer)
//
// A stream keeps what is published until retention removes it; nothing is
// consumed away, so there is no dead-letter queue and no registry of
// restored transfers. Retention is set when the stream is created: a
// stream that exists with other retention is used as it is (change it with
// a policy, rabbitmqctl set_policy ... '{"max-age":"1D"}' --apply-to queues).

// Retention defaults: a stream with no retention grows until the broker's
// disk fills, so segmq always sets both limits unless told otherwise.
const (
	DefaultMaxAge   = "7D"     // a week
	DefaultMaxBytes = 16 << 30 // 16 GiB
	// IndexMaxBytes bounds Q.index (one message of a few hundred bytes
	// per transfer start or end, and per consumer's end-of-index probe).
	IndexMaxBytes = 64 << 20
	// indexSegmentBytes keeps Q.index's segment files small, so that its
	// retention (which deletes whole segment files) bites.
	indexSegmentBytes = 4 << 20
)

// Retention is what a stream keeps. Zero values mean the defaults;
// retention removes whole segment files, oldest first, once either limit
// is passed.
type Retention struct {
	// MaxAge is x-max-age: a number and a unit, Y M D h m s ("7D",
	// "12h"); "" means DefaultMaxAge, "0" no age limit.
	MaxAge string
	// MaxBytes is x-max-length-bytes; 0 means DefaultMaxBytes, < 0 no
	// size limit.
	MaxBytes int64
	// SegmentBytes is x-stream-max-segment-size-bytes, the size of one
	// segment file on the broker's disk (the unit retention removes); 0
	// means the broker's default (500 MB).
	SegmentBytes int64
}

var maxAgeRE = regexp.MustCompile(`^[1-9][0-9]*[YMDhms]$`)

// Validate says what is wrong with r.
func (r Retention) Validate() error {
	if r.MaxAge != "" && r.MaxAge != "0" && !maxAgeRE.MatchString(r.MaxAge) {
		return fmt.Errorf("--stream-max-age %q: want a number and one of the units Y M D h m s (e.g. 7D, 12h), or 0 for no age limit", r.MaxAge)
	}
	if r.SegmentBytes < 0 {
		return fmt.Errorf("--stream-segment-bytes must be >= 0, got %d", r.SegmentBytes)
	}
	return nil
}

// Age returns the effective x-max-age, "" for none.
func (r Retention) Age() string {
	switch r.MaxAge {
	case "":
		return DefaultMaxAge
	case "0":
		return ""
	}
	return r.MaxAge
}

// Bytes returns the effective x-max-length-bytes, 0 for none.
func (r Retention) Bytes() int64 {
	switch {
	case r.MaxBytes == 0:
		return DefaultMaxBytes
	case r.MaxBytes < 0:
		return 0
	}
	return r.MaxBytes
}

// String describes r for logs and errors.
func (r Retention) String() string {
	age, size := r.Age(), "unlimited"
	if age == "" {
		age = "unlimited"
	}
	if b := r.Bytes(); b > 0 {
		size = fmt.Sprintf("%d bytes", b)
	}
	return "max age " + age + ", max size " + size
}

func (r Retention) args(maxBytes, segment int64) amqp.Table {
	args := amqp.Table{amqp.QueueTypeArg: Stream}
	if a := r.Age(); a != "" {
		args[amqp.StreamMaxAgeArg] = a
	}
	if maxBytes > 0 {
		args[amqp.QueueMaxLenBytesArg] = maxBytes
	}
	if segment > 0 {
		args[amqp.StreamMaxSegmentSizeBytesArg] = segment
	}
	return args
}

// IndexQueue is a stream's index of transfers (Stream only).
func (t Topology) IndexQueue() string { return t.queue() + ".index" }

// IsStream reports whether t is a stream.
func (t Topology) IsStream() bool { return t.Type == Stream }

// ErrNotStream: --queue-type stream, but the queue exists with another type.
var ErrNotStream = errors.New("not a stream")

// declareStream declares Q and Q.index (ch is Declare's channel; conn opens
// more when a declaration fails and closes one).
func declareStream(conn *amqp.Connection, ch *amqp.Channel, t Topology) error {
	r := t.Retention
	idxBytes := int64(IndexMaxBytes)
	if b := r.Bytes(); b > 0 {
		idxBytes = min(idxBytes, b)
	}
	for _, q := range []struct {
		name string
		args amqp.Table
	}{
		{t.Name(), r.args(r.Bytes(), r.SegmentBytes)},
		{t.IndexQueue(), r.args(idxBytes, indexSegmentBytes)},
	} {
		if ch == nil {
			var err error
			if ch, err = conn.Channel(); err != nil {
				return fmt.Errorf("open channel: %w", err)
			}
			defer ch.Close()
		}
		_, err := ch.QueueDeclare(q.name, true, false, false, false, q.args)
		if err == nil {
			continue
		}
		ch = nil // a failed declaration closed it
		if err := declareFailed(conn, q.name, q.args, err, "; use --queue-type classic or quorum"); err != nil {
			return err
		}
	}
	return nil
}

// declareFailed handles a failed declaration of stream name with args:
// one that exists with other arguments is adopted (a stream with other
// retention is used as it is); anything else is an error, hint appended
// when the broker cannot make streams at all.
func declareFailed(conn *amqp.Connection, name string, args amqp.Table, err error, hint string) error {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		return fmt.Errorf("declare stream %s: %w", name, err)
	}
	if !strings.Contains(ae.Reason, "inequivalent arg") {
		if strings.Contains(ae.Reason, amqp.QueueTypeArg) {
			// RabbitMQ before 3.9 has no streams.
			return fmt.Errorf("declare stream %s: %s: this broker cannot make a stream (RabbitMQ 3.9 or later can)%s", name, ae.Reason, hint)
		}
		return fmt.Errorf("declare stream %s: %s", name, ae.Reason)
	}
	return adopt(conn, name, args)
}

var (
	inequivalentArg = regexp.MustCompile(`inequivalent arg '([^']+)'.*but current is (none|the value '([^']*)' of type '([a-z]+)'|'([^']*)')`)
	currentType     = regexp.MustCompile(`inequivalent arg 'x-queue-type'.*current is '?([a-z]+)'?`)
)

// adopt accepts an existing stream whatever its retention: it declares
// again with each argument the broker names as different set to the
// broker's value (or left out), until the declaration matches, or the
// broker names the queue type, which is then not a stream.
func adopt(conn *amqp.Connection, name string, args amqp.Table) error {
	args = maps.Clone(args)
	last := ""
	for range 8 {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		_, err = ch.QueueDeclare(name, true, false, false, false, args)
		ch.Close()
		if err == nil {
			return nil
		}
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
			return fmt.Errorf("declare stream %s: %w", name, err)
		}
		if m := currentType.FindStringSubmatch(ae.Reason); m != nil {
			return fmt.Errorf("queue %q already exists as a %s queue, %w (segmq wants --queue-type stream): pass --queue-type %s, or another --queue, or delete it (rabbitmqctl delete_queue %s) if it holds nothing you need",
				name, m[1], ErrNotStream, m[1], name)
		}
		last = ae.Reason
		m := inequivalentArg.FindStringSubmatch(ae.Reason)
		if m == nil {
			return fmt.Errorf("declare stream %s: %s", name, ae.Reason)
		}
		switch {
		case m[2] == "none":
			delete(args, m[1])
		case m[4] == "long" || m[4] == "signedint" || m[4] == "short":
			n, err := strconv.ParseInt(m[3], 10, 64)
			if err != nil {
				return fmt.Errorf("declare stream %s: %s", name, ae.Reason)
			}
			args[m[1]] = n
		case m[5] == "true" || m[5] == "false":
			// A boolean: x-single-active-consumer, which segmq's classic
			// and quorum queues have (the broker names it before the type).
			args[m[1]] = m[5] == "true"
		case m[5] != "":
			// Same type as ours, another value.
			if _, isInt := args[m[1]].(int64); isInt {
				n, err := strconv.ParseInt(m[5], 10, 64)
				if err != nil {
					return fmt.Errorf("declare stream %s: %s", name, ae.Reason)
				}
				args[m[1]] = n
			} else {
				args[m[1]] = m[5]
			}
		default:
			args[m[1]] = m[3]
		}
	}
	return fmt.Errorf("queue %q exists with arguments segmq cannot match (%s); delete it (rabbitmqctl delete_queue %s) or use another --queue", name, last, name)
}
