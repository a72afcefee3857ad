package transfer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
)

// HdrClaim marks a claim in the registry (QUEUE.done): the owner (host and
// absolute --out path) that acks the segments of a transfer's run. A
// consumer acks a segment only once its claim is the first in the
// registry for that run, so two consumers with different --out (a
// single-active-consumer standby that took over, or two consumers on a
// queue without it) never split a transfer: the later one refuses, and its
// unacked segments go back to the queue for the owner to finish.
const HdrClaim = "segmq-claim"

// HdrClaimAt is when the claim was made, in Unix nanoseconds: the
// earliest claim wins (ties: the smaller owner). Queue order is not used:
// concurrent readers of the registry requeue what they got, which can
// reorder it.
const HdrClaimAt = "segmq-claim-at"

// claim is one claim marker read from the registry, in queue order.
type claim struct {
	key   doneKey
	owner string
	at    time.Time
}

// ClaimError: another consumer (its host and --out) has acked segments of
// the transfer's run; this one must not ack the rest.
type ClaimError struct {
	Transfer, Run, Owner, Queue string
	At                          time.Time
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("transfer %s run %s is being restored by %s (claimed at %s); its acked segments are no longer in %s: rerun that consumer, or republish with producer --restart. Nothing was acked here; the segments held are back in the queue",
		e.Transfer, orNone(e.Run), e.Owner, e.At.UTC().Format(time.RFC3339), e.Queue)
}

// owner names this consumer in a claim: the host and the absolute --out
// path. A standby with the same --out (it shares the .part) is the same
// owner, and so is the consumer rerun on its .part.
func (r *receiver) owner() string {
	if r.ownerID == "" {
		host, _ := os.Hostname()
		out, err := filepath.Abs(r.cfg.Out)
		if err != nil {
			out = r.cfg.Out
		}
		r.ownerID = host + ":" + out
	}
	return r.ownerID
}

// checkClaim runs before the first ack of the bound transfer's segments
// in this process. It reads the registry; with no claim of this owner
// there, it publishes one (confirmed) and reads again. The earliest claim
// (HdrClaimAt) wins; a consumer that is not its owner refuses with a
// ClaimError before acking anything. A registry that cannot be read or
// written is a warning, as for done markers: the consumer goes on.
func (r *receiver) checkClaim() error {
	if r.claimErr != nil || r.claimed {
		return r.claimErr
	}
	b := r.part.bound()
	if b == nil || r.conn == nil { // r.conn: unit tests without a broker
		return nil
	}
	key := doneKey{b.Transfer, b.Run}
	q := r.cfg.Topology.DoneQueue()
	warn := func(err error) error {
		if r.conn.IsClosed() {
			return lost(fmt.Errorf("claim %s in %s: %w", b.Transfer, q, err))
		}
		r.log.Warn("cannot claim the transfer in the registry; two consumers with different --out would not be kept from splitting it", "queue", q, "transfer", b.Transfer, "err", err)
		r.claimed = true
		return nil
	}
	first := func() (*claim, bool, error) {
		_, claims, err := r.readRegistry(r.conn)
		if err != nil {
			return nil, false, err
		}
		var win *claim
		mine := false
		for i := range claims {
			if claims[i].key != key {
				continue
			}
			if c := &claims[i]; win == nil || c.at.Before(win.at) || c.at.Equal(win.at) && c.owner < win.owner {
				win = c
			}
			mine = mine || claims[i].owner == r.owner()
		}
		return win, mine, nil
	}
	win, mine, err := first()
	if err != nil {
		return warn(err)
	}
	if !mine && win == nil {
		if err := r.publishClaim(b); err != nil {
			return warn(err)
		}
	}
	// Read until this owner's claim is seen (a concurrent reader holds
	// the markers it has got), twice, a random pause apart: both reads
	// must name the same first owner.
	var owners []string
	for try := 0; try < 20 && len(owners) < 2; try++ {
		if try > 0 {
			time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
		}
		if win, mine, err = first(); err != nil {
			return warn(err)
		}
		if win != nil && win.owner != r.owner() {
			r.claimErr = &ClaimError{Transfer: b.Transfer, Run: b.Run, Owner: win.owner, At: win.at, Queue: r.cfg.Topology.Name()}
			return r.claimErr
		}
		if mine {
			owners = append(owners, win.owner)
		}
	}
	if len(owners) < 2 {
		return warn(errors.New("this consumer's claim is not in the registry"))
	}
	r.claimed = true
	r.log.Debug("claimed the transfer in the registry", "queue", q, "transfer", b.Transfer, "run", b.Run, "owner", r.owner())
	return nil
}

// publishClaim publishes this owner's claim for b, with a confirm.
func (r *receiver) publishClaim(b *binding) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := r.ch.PublishWithDeferredConfirmWithContext(ctx, "", r.cfg.Topology.DoneQueue(), false, false, amqp.Publishing{
		Headers:      amqp.Table{HdrTransfer: b.Transfer, HdrRun: b.Run, HdrClaim: r.owner(), HdrClaimAt: time.Now().UnixNano()},
		Body:         []byte("claim " + b.Transfer + "/" + b.Run + " by " + r.owner()),
		ContentType:  "text/plain",
		DeliveryMode: amqp.Persistent,
		Timestamp:    time.Now(),
		AppId:        "segmq",
	})
	if err != nil {
		return err
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		if err == nil {
			err = errors.New("the broker nacked the claim")
		}
		return err
	}
	return nil
}

// readRegistry reads the registry (QUEUE.done) on a channel of its own:
// basic.get without ack until it is empty (at most rabbit.DoneMax
// markers, and a few more that race in), then the channel is closed and
// the broker requeues every marker; nothing is consumed. It returns the
// done markers and the claims, in queue order.
func (r *receiver) readRegistry(conn *amqp.Connection) (map[doneKey]doneInfo, []claim, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, lost(fmt.Errorf("open channel: %w", err))
	}
	defer ch.Close() // requeues every marker got
	done := map[doneKey]doneInfo{}
	var claims []claim
	for range doneReadMax {
		d, ok, err := ch.Get(r.cfg.Topology.DoneQueue(), false)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			break
		}
		tr, _ := d.Headers[HdrTransfer].(string)
		if CheckTransferID(tr) != nil {
			continue
		}
		run, _ := d.Headers[HdrRun].(string)
		if owner, ok := d.Headers[HdrClaim].(string); ok {
			at := d.Timestamp
			if n, ok := asInt(d.Headers[HdrClaimAt]); ok {
				at = time.Unix(0, n)
			}
			claims = append(claims, claim{key: doneKey{tr, run}, owner: owner, at: at})
			continue
		}
		info := doneInfo{}
		if n, ok := asInt(d.Headers[HdrSize]); ok {
			info.Size, info.HasSize = n, true
		}
		info.SHA256, _ = d.Headers[HdrSHA256].(string)
		done[doneKey{tr, run}] = info
	}
	return done, claims, nil
}

// doneReadMax bounds one read of the registry: drop-head keeps at most
// rabbit.DoneMax markers; a few more may race in.
const doneReadMax = rabbit.DoneMax + 16
