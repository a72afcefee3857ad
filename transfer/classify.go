package transfer

import (
	"fmt"
	"hash/crc32"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/segment"
)

// action is what the consumer does with one delivery.
type action int

const (
	// actPlace: a well-formed segment of the transfer being received (or,
	// while none is, one that may start it): offer it to the part file.
	actPlace action = iota + 1
	// actDead: malformed, or in conflict with the transfer; it can never
	// be placed. Nack without requeue: the broker dead-letters it.
	actDead
	// actAside: well-formed, but another transfer's. Not ours to take and
	// not ours to lose: move it to the queue's tail.
	actAside
	// actStale: a leftover copy of a transfer that a consumer already
	// restored (it is in the registry, QUEUE.done): ack and drop it.
	actStale
)

// binding is the transfer a consumer is bound to. It is made from the
// first segment that is accepted, never from one that was refused, and
// is recorded in the part file's journal.
type binding struct {
	Transfer string `json:"transfer"`      // "" for a seed-format transfer (no segmq headers)
	Run      string `json:"run,omitempty"` // segmq-run; "" from a producer that sends none
	MSS      int    `json:"mss"`           // segmq transfers: from the headers
	Size     int64  `json:"size"`          // segmq transfers: from the headers
	Total    uint32 `json:"total"`         // segmq transfers: from the first accepted segment
	// Part is a random id of this .part, made when it is bound: what a
	// claim names as its owner. A standby on the same .part (shared
	// storage, another host), or a rerun in a recreated container, reads
	// the same id; two .parts never share one, whatever their host names
	// and paths. "" in a journal written before it existed.
	Part string `json:"part,omitempty"`
}

func (b *binding) raw() bool { return b.Transfer == "" }

// verdict is the classifier's answer for one delivery.
type verdict struct {
	act    action
	reason string // why, for actDead
	m      meta
	h      segment.Header
	// payload as sent: still a zstd frame when m.Encoding is set. The
	// shape of a packed payload is checked once decoded (checkDecoded).
	payload []byte
}

// classifier decides what a delivery is, from its headers and body and
// the binding (nil while unbound), and nothing else: no broker, no file.
type classifier struct {
	want   string // take only this transfer id ("" any)
	maxMSS int    // refuse headers that claim a larger MSS
	seed   bool   // take seed-format segments (no segmq headers: nothing to verify against)
	digest string // the transfer's SHA-256, once known
	// done lists the transfers a consumer has already restored (read from
	// the registry, QUEUE.done, at the start of each session).
	done map[doneKey]doneInfo
}

// doneKey is a completed transfer in the registry: its id and run.
type doneKey struct{ Transfer, Run string }

// doneInfo is what the registry's marker says about the restored file.
type doneInfo struct {
	Size    int64
	HasSize bool
	SHA256  string
}

// restored reports whether a segment is a leftover copy of a transfer in
// the registry. The run decides; size and digest, when the marker and the
// segment carry them, must agree too, which is all that tells two runs
// apart for a producer that sends no segmq-run (run "").
func (c *classifier) restored(m meta) bool {
	if m.raw() || c.done == nil {
		return false
	}
	d, ok := c.done[doneKey{m.Transfer, m.Run}]
	switch {
	case !ok:
		return false
	case d.HasSize && m.Size != d.Size:
		return false
	case d.SHA256 != "" && m.SHA256 != "" && m.SHA256 != d.SHA256:
		return false
	}
	return true
}

// Why a delivery was set aside, for the consumer's hint.
const (
	asideOther    = "another transfer"
	asideInstance = "the same transfer id from another run, or with another size or MSS (an earlier run with the same --transfer?)"
	asideSeed     = "seed-format (no segmq headers; pass --seed-format to take such a transfer, which cannot be verified)"
)

func dead(reason string, args ...any) verdict {
	return verdict{act: actDead, reason: fmt.Sprintf(reason, args...)}
}

func (c *classifier) classify(b *binding, headers amqp.Table, body []byte) verdict {
	m, err := parseMeta(headers)
	if err != nil {
		return dead("%v", err)
	}
	h, payload, err := segment.Decode(body)
	if err != nil {
		return dead("%v", err)
	}
	v := verdict{act: actPlace, m: m, h: h, payload: payload}
	// Checks that need nothing but the message itself come first: a
	// malformed message is dead whichever transfer it claims.
	if err := h.Valid(); err != nil {
		return dead("%v (seq %d, total %d)", err, h.Seq, h.Total)
	}
	if h.Total > segment.MaxTotal {
		return dead("%v: total %d, limit %d", segment.ErrTotalTooLarge, h.Total, segment.MaxTotal)
	}
	if m.raw() {
		if len(payload) > c.maxMSS {
			return dead("seed-format payload of %d bytes over the limit of %d (--max-mss)", len(payload), c.maxMSS)
		}
	} else {
		switch {
		case m.MSS > c.maxMSS:
			return dead("header %s %d over the limit of %d bytes (--max-mss)", HdrMSS, m.MSS, c.maxMSS)
		case !m.HasSize:
			return dead("header %s missing: segmq's producer always sends it", HdrSize)
		case !m.HasCRC:
			return dead("header %s missing: segmq's producer always sends it", HdrCRC)
		}
		if got := crc32.Checksum(payload, castagnoli); got != m.CRC {
			return dead("payload CRC-32C %08x, header says %08x", got, m.CRC)
		}
		n := len(payload)
		if m.Encoding != "" {
			n = -1 // checked once decoded
		}
		if err := checkShape(h, n, m); err != nil {
			return dead("%v", err)
		}
		if h.Seq == h.Total-1 && m.SHA256 == "" {
			return dead("the last segment carries no %s: a segmq transfer is only taken with its digest", HdrSHA256)
		}
	}
	// Whose is it? A transfer is its id together with its run, MSS and
	// size: a segment with the same id but another run or shape is another
	// run that reused the id, set aside rather than dead-lettered, so that
	// neither run can destroy the other. A segment of a transfer already
	// restored is dropped first, whatever --transfer says, unless it is
	// the bound transfer's own (a .part of it may still need it).
	aside := func(why string) verdict { return verdict{act: actAside, reason: why, m: m, h: h} }
	switch {
	case c.restored(m) && (b == nil || b.Transfer != m.Transfer || b.Run != m.Run):
		return verdict{act: actStale, m: m, h: h}
	case m.raw() && !c.seed:
		return aside(asideSeed)
	case c.want != "" && m.Transfer != c.want:
		return aside(asideOther)
	case b == nil:
		return v
	case m.Transfer != b.Transfer:
		return aside(asideOther)
	case !m.raw() && (m.Run != b.Run || m.MSS != b.MSS || m.Size != b.Size || h.Total != b.Total):
		return aside(asideInstance)
	case !m.raw() && m.SHA256 != "" && c.digest != "" && m.SHA256 != c.digest:
		return dead("segment %d carries a different file SHA-256 (%s) than the transfer's (%s)", h.Seq, m.SHA256, c.digest)
	}
	return v
}

// checkShape checks a segmq segment's header and payload length (n < 0:
// not known yet) against the size and MSS its headers declare.
func checkShape(h segment.Header, n int, m meta) error {
	if n < 0 {
		// Only what does not depend on the payload: a payload of the
		// right length, whatever it is.
		n = m.MSS
		if h.Seq == h.Total-1 {
			n = int(max(m.Size-int64(h.Total-1)*int64(m.MSS), 0))
		}
	}
	return segment.CheckShape(h, n, m.MSS, m.Size)
}
