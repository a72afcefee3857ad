package transfer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/segmq/segmq/internal/fsutil"
	"github.com/segmq/segmq/rabbit"
)

// riskyDeliveries is the x-delivery-count from which a delivery is acked
// at once rather than with its batch, on a queue subject to the broker's
// default delivery limit (20 on RabbitMQ 4.0–4.2): half way there.
const riskyDeliveries = 10

// open opens the part file. A standby waits while another consumer holds
// its lock; byOther reports that this consumer restored --out meanwhile.
func (r *receiver) open(ctx context.Context) (_ *partFile, byOther bool, err error) {
	cfg := r.cfg
	before, _ := os.Stat(cfg.Out)
	told := false
	for {
		part, err := openPart(cfg.fs, cfg.Out, cfg.Restart, cfg.Transfer, cfg.ReorderWindow, r.log)
		if !cfg.Standby || !errors.Is(err, fsutil.ErrLocked) {
			if err == nil && told && part.bound() == nil {
				// The consumer we stood by for is gone and left no
				// journal: it finished (and renamed its file to --out)
				// unless --out is what it was before.
				if after, serr := os.Stat(cfg.Out); serr == nil && (before == nil || !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime())) {
					part.close()
					r.log.Info("the consumer this one stood by for has restored the file", "out", cfg.Out)
					return nil, true, nil
				}
			}
			return part, false, err
		}
		if !told {
			told = true
			r.log.Info("standing by: another consumer holds "+cfg.Out+".part.lock; this one takes over (from the .part it leaves) when it stops", "out", cfg.Out, "holder", strings.TrimPrefix(err.Error(), "another consumer is restoring into "))
		}
		select {
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: %w; stood by for another consumer of %s", ErrIncomplete, ctx.Err(), cfg.Out)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkQueue runs once the consumer is subscribed. On a queue with
// single-active-consumer, other consumers are standbys (or this one is):
// say so. On a queue created without it, a second consumer would split
// a transfer with the first, so a consumer that finds another one
// attached when it starts refuses to go on. It also warns once when the
// queue is subject to the broker's default delivery limit.
func (r *receiver) checkQueue(info sessionInfo) error {
	q := info.Queue
	name := r.cfg.Topology.Name()
	r.limited = q.LimitApplies()
	if r.limited && !r.warnedLim {
		r.warnedLim = true
		r.log.Warn(fmt.Sprintf("quorum queue %s was created without segmq's x-delivery-limit, so RabbitMQ %s's default limit applies: a segment returned 20 times (a consumer whose connection is lost while it holds it unacked) goes to %s; lift it with: rabbitmqctl set_policy --apply-to quorum_queues segmq-%s '^%s$' '{\"delivery-limit\":-1}'",
			name, q.Version, r.cfg.Topology.DeadQueue(), name, regexp.QuoteMeta(name)), "missing", strings.Join(q.Missing, ", "))
	}
	if q.DoneErr != nil {
		r.log.Warn("the registry of completed transfers is unavailable this session; leftover copies of restored transfers will not be recognised", "err", q.DoneErr)
	}
	if q.DoneClassic && !r.warnedDone {
		r.warnedDone = true
		r.log.Warn(fmt.Sprintf("%s is a classic queue (made by an older segmq): on a cluster it lives on one node and is unavailable while that node is down; delete it when no consumer runs (rabbitmqctl delete_queue %s) and the next run makes it a quorum queue", r.cfg.Topology.DoneQueue(), r.cfg.Topology.DoneQueue()))
	}
	consumers, _, err := rabbit.Consumers(r.conn, name)
	if err != nil {
		return lost(fmt.Errorf("count the consumers of %s: %w", name, err))
	}
	switch {
	case consumers <= 1:
	case q.SingleActive:
		r.log.Info(fmt.Sprintf("standby: queue %s has %d other consumer(s) and single-active-consumer, so the broker delivers to one consumer at a time and the others are hot standbys; this one receives nothing until the active one stops, then takes over. One restore per queue at a time: use one queue (--queue) per concurrent restore", name, consumers-1))
	case r.res.Reconnects == 0:
		return &SplitError{Queue: name, Consumers: consumers - 1, Missing: q.Missing}
	}
	return nil
}

// SplitError: the queue has no single-active-consumer and another
// consumer is attached; two consumers would split a transfer between
// them, and neither could finish it.
type SplitError struct {
	Queue     string
	Consumers int // the others
	Missing   []string
}

func (e *SplitError) Error() string {
	return fmt.Sprintf("queue %s already has %d other consumer(s), and it was created without x-single-active-consumer, so two consumers would split a transfer between them and neither could finish it. Stop the other consumer, or wait for it; to have a second consumer wait as a hot standby, recreate the queue when it is empty (rabbitmqctl delete_queue %s; the next producer or consumer declares it with single-active-consumer)",
		e.Queue, e.Consumers, e.Queue)
}
