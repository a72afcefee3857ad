package transfer

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// ackLog is a channel that records acks and checks them against the
// deliveries' real state, as the broker would (PRECONDITION_FAILED
// "unknown delivery tag" for a tag acked twice).
type ackLog struct {
	t       *testing.T
	durable map[uint64]bool // tag -> safe to ack
	acked   map[uint64]bool
	nacked  map[uint64]bool // settled by a nack: a later multiple-ack skips them
	max     uint64          // highest tag delivered
}

func (l *ackLog) Ack(tag uint64, multiple bool) error {
	from := tag
	if multiple {
		from = 1
	}
	for x := from; x <= tag; x++ {
		if l.nacked[x] {
			if x == tag {
				return fmt.Errorf("unknown delivery tag %d", x)
			}
			continue
		}
		if l.acked[x] {
			if !multiple || x == tag {
				return fmt.Errorf("unknown delivery tag %d", x)
			}
			continue
		}
		if !l.durable[x] {
			l.t.Fatalf("ack(%d, multiple=%v) covers tag %d, which is not safe to ack", tag, multiple, x)
		}
		l.acked[x] = true
	}
	return nil
}

// TestAckerNeverPastUnsettled: deliveries become done (or are nacked) in
// random order, with ackDone in between; no ack ever covers a delivery
// that is not done, and every done delivery is acked in the end.
func TestAckerNeverPastUnsettled(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		nacked := map[uint64]bool{}
		l := &ackLog{t: t, durable: map[uint64]bool{}, acked: map[uint64]bool{}, nacked: nacked}
		a := &acker{ch: l}
		var open []uint64
		for step := 0; step < 300; step++ {
			switch op := r.IntN(10); {
			case op < 4 || len(open) == 0:
				l.max++
				a.track(l.max)
				open = append(open, l.max)
			case op < 7:
				i := r.IntN(len(open))
				l.durable[open[i]] = true
				a.done(open[i])
				open = append(open[:i], open[i+1:]...)
			case op < 8:
				i := r.IntN(len(open))
				nacked[open[i]] = true
				a.settled(open[i])
				open = append(open[:i], open[i+1:]...)
			default:
				if err := a.ackDone(); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
		}
		for _, tag := range open {
			l.durable[tag] = true
			a.done(tag)
		}
		if err := a.ackDone(); err != nil {
			t.Fatal(err)
		}
		for tag := uint64(1); tag <= l.max; tag++ {
			if !nacked[tag] && !l.acked[tag] {
				t.Fatalf("seed %d: tag %d done but never acked", seed, tag)
			}
			if nacked[tag] && l.acked[tag] {
				t.Fatalf("seed %d: tag %d nacked and acked", seed, tag)
			}
		}
		if a.unsettled() != 0 {
			t.Fatalf("seed %d: %d left unsettled", seed, a.unsettled())
		}
	}
}

// TestAckerParkedBelowPlaced is defect 1's shape: parked deliveries with
// low tags, placed ones above them. Only the placed ones are acked.
func TestAckerParkedBelowPlaced(t *testing.T) {
	l := &ackLog{t: t, durable: map[uint64]bool{}, acked: map[uint64]bool{}}
	a := &acker{ch: l}
	for tag := uint64(1); tag <= 10; tag++ {
		a.track(tag)
	}
	for _, tag := range []uint64{1, 2, 5, 6, 9} {
		l.durable[tag] = true
		a.done(tag)
	}
	if err := a.ackDone(); err != nil {
		t.Fatal(err)
	}
	if a.unsettled() != 5 {
		t.Fatalf("%d unsettled, want 5 (3, 4, 7, 8, 10)", a.unsettled())
	}
}

// TestAckerUnknownTagIgnored: done or settled for a tag the acker no
// longer holds (already acked) or never held changes nothing.
func TestAckerUnknownTagIgnored(t *testing.T) {
	l := &ackLog{t: t, durable: map[uint64]bool{1: true}, acked: map[uint64]bool{}}
	a := &acker{ch: l}
	a.track(1)
	a.track(2)
	a.done(1)
	if err := a.ackDone(); err != nil {
		t.Fatal(err)
	}
	a.done(1)
	a.done(7)
	a.settled(1)
	a.settled(9)
	if a.unsettled() != 1 || !l.acked[1] || l.acked[2] {
		t.Fatalf("unsettled %d, acked %v", a.unsettled(), l.acked)
	}
}
