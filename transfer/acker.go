package transfer

import (
	"fmt"
	"sort"
)

// acker tracks every delivery tag of one channel from delivery to
// settlement, and acks only what is safe: a multiple-ack up to tag T
// settles every unsettled delivery with a tag <= T, so T is never past a
// delivery that is not done (placed but not yet durable, parked, or being
// moved). Done deliveries above such a one are acked one by one.
//
// Delivery tags are per channel: a new channel needs a new acker.
type acker struct {
	ch interface {
		Ack(tag uint64, multiple bool) error
	}
	q []ackEntry // unsettled deliveries, in tag order
}

type ackEntry struct {
	tag  uint64
	done bool
}

// track records a new delivery; tags arrive in increasing order.
func (a *acker) track(tag uint64) { a.q = append(a.q, ackEntry{tag: tag}) }

func (a *acker) find(tag uint64) int {
	i := sort.Search(len(a.q), func(i int) bool { return a.q[i].tag >= tag })
	if i < len(a.q) && a.q[i].tag == tag {
		return i
	}
	return -1
}

// done marks a delivery as safe to ack.
func (a *acker) done(tag uint64) {
	if i := a.find(tag); i >= 0 {
		a.q[i].done = true
	}
}

// settled forgets a delivery that was settled on its own (nack).
func (a *acker) settled(tag uint64) {
	if i := a.find(tag); i >= 0 {
		a.q = append(a.q[:i], a.q[i+1:]...)
	}
}

// anyDone reports whether a delivery is waiting to be acked.
func (a *acker) anyDone() bool {
	for _, e := range a.q {
		if e.done {
			return true
		}
	}
	return false
}

// unsettled is the number of deliveries the broker counts against the
// prefetch.
func (a *acker) unsettled() int { return len(a.q) }

// ackDone acks every done delivery: the longest done prefix with one
// multiple-ack, the rest singly.
func (a *acker) ackDone() error {
	i := 0
	for i < len(a.q) && a.q[i].done {
		i++
	}
	if i > 0 {
		if err := a.ch.Ack(a.q[i-1].tag, true); err != nil {
			return lost(fmt.Errorf("ack: %w", err))
		}
	}
	kept := a.q[:0]
	for _, e := range a.q[i:] {
		if !e.done {
			kept = append(kept, e)
			continue
		}
		if err := a.ch.Ack(e.tag, false); err != nil {
			return lost(fmt.Errorf("ack: %w", err))
		}
	}
	a.q = kept
	return nil
}
