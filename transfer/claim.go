package transfer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
)

// HdrClaim marks a claim: the owner (host and absolute --out path) that
// acks the segments of a transfer's run. A consumer acks a segment only
// once its claim owns the run, so two consumers with different --out (a
// single-active-consumer standby that took over, or two consumers on a
// queue without it) never split a transfer: the later one refuses, and its
// unacked segments go back to the queue for the owner to finish.
//
// Claims live in the stream QUEUE.claims (rabbit.DeclareClaims). Older
// segmq versions put them in the registry QUEUE.done; those are still
// honoured (legacyClaim), but no new claim is written there.
const HdrClaim = "segmq-claim"

// HdrClaimAt is when the claim was made, in Unix nanoseconds, by the
// claimer's clock. It is shown in a ClaimError and decides nothing (clocks
// of two hosts disagree); in a legacy claim in QUEUE.done the earliest
// wins, as older versions decided.
const HdrClaimAt = "segmq-claim-at"

// HdrClaimPart is the claimer's .part id (binding.Part): what decides
// whether two claims have the same owner. HdrClaim (host and path) is
// only for people: two containers can share both, and a standby on shared
// storage or a recreated container changes the host.
const HdrClaimPart = "segmq-claim-part"

// HdrClaimNonce is a random id of one claim, so that its claimer knows it
// when it reads the stream back.
const HdrClaimNonce = "segmq-claim-nonce"

// claimReadTimeout bounds the wait for a consumer's own claim to come
// back from QUEUE.claims (it is confirmed, so it is there: only a stream
// that cannot be read takes this long).
const claimReadTimeout = time.Minute

// claim is one claim marker.
type claim struct {
	key    doneKey
	owner  string // HOST:/abs/--out, for people
	part   string // the owner's .part id (binding.Part); "" in older claims
	at     time.Time
	nonce  string // stream claims
	offset int64  // stream claims: x-stream-offset
}

// ClaimError: another consumer (its host and --out) owns the transfer's
// run; this one must not ack any of it.
type ClaimError struct {
	Transfer, Run, Owner, Queue string
	At                          time.Time
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("transfer %s run %s is being restored by %s (claimed at %s); what that consumer acked is no longer in %s: rerun it on its --out (its .part), or republish with producer --restart. Nothing was acked here; the segments held are back in the queue",
		e.Transfer, orNone(e.Run), e.Owner, e.At.UTC().Format(time.RFC3339), e.Queue)
}

// ClaimUnavailableError: the claims stream could not be declared, written
// or read, so this consumer cannot know that no other consumer owns the
// run. It acks nothing and stops.
type ClaimUnavailableError struct {
	Transfer, Run, Queue, Claims string
	Err                          error
}

func (e *ClaimUnavailableError) Error() string {
	return fmt.Sprintf("cannot claim transfer %s run %s in the stream %s: %v. Without a claim, two consumers with different --out on %s could split the transfer, so nothing was acked here and the segments held are back in the queue. Let this user declare, write and read %s (a stream: RabbitMQ 3.9 or later), or, if no other consumer can run on %s, pass --no-claim",
		e.Transfer, orNone(e.Run), e.Claims, e.Err, e.Queue, e.Claims, e.Queue)
}

func (e *ClaimUnavailableError) Unwrap() error { return e.Err }

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

// ownClaim reports whether c is this consumer's: the same .part id when
// both have one (the claim's host and path do not matter), else (a claim
// by an older segmq, or a .part bound before part ids) the same host and
// absolute --out.
func (r *receiver) ownClaim(c *claim) bool {
	if b := r.part.bound(); b != nil && b.Part != "" && c.part != "" {
		return c.part == b.Part
	}
	return c.owner == r.owner()
}

// checkClaim runs before the first ack of the bound transfer's segments
// in this process. It publishes a claim (owner, random nonce) to the
// stream QUEUE.claims with a confirm, then reads the stream from its first
// offset until it meets its own claim. The claim at the lowest offset owns
// the run: every claim below this one's has been read, so of two racing
// consumers the later always sees the earlier, and exactly one owns the
// run, whatever the timing and whatever the hosts' clocks say. A consumer
// that is not the owner refuses with a ClaimError before acking anything.
// The same owner (a rerun, a standby on the same .part) is no conflict.
//
// A stream that cannot be declared, written or read is a
// ClaimUnavailableError (the consumer stops, having acked nothing),
// unless ReceiveConfig.NoClaim; a lost connection is retried by the
// reconnect loop, which claims again.
func (r *receiver) checkClaim() error {
	if r.claimErr != nil || r.claimed {
		return r.claimErr
	}
	b := r.part.bound()
	if b == nil || r.conn == nil { // r.conn: unit tests without a broker
		return nil
	}
	if b.raw() {
		// A seed-format transfer has no id: every such transfer would
		// share one claim, so it cannot be claimed. Single-active-consumer
		// alone keeps it to one consumer.
		r.claimed = true
		r.log.Debug("seed-format transfer: no id to claim it by")
		return nil
	}
	key := doneKey{b.Transfer, b.Run}
	topo := r.cfg.Topology
	if win, err := r.legacyClaim(key); err != nil {
		return err
	} else if win != nil {
		if !r.ownClaim(win) {
			r.claimErr = &ClaimError{Transfer: b.Transfer, Run: b.Run, Owner: win.owner, At: win.at, Queue: topo.Name()}
			return r.claimErr
		}
		r.claimed = true
		r.log.Debug("owns the transfer by an older segmq's claim in the registry", "queue", topo.DoneQueue(), "transfer", b.Transfer, "run", b.Run)
		return nil
	}
	if r.cfg.NoClaim {
		return r.lookForClaims(b)
	}
	fail := func(err error) error {
		if r.conn.IsClosed() || rabbit.IsUnavailable(err) {
			// A new session (maybe on another node) claims again.
			return lost(fmt.Errorf("claim %s in %s: %w", b.Transfer, topo.ClaimsQueue(), err))
		}
		r.claimErr = &ClaimUnavailableError{Transfer: b.Transfer, Run: b.Run, Queue: topo.Name(), Claims: topo.ClaimsQueue(), Err: err}
		return r.claimErr
	}
	if err := rabbit.DeclareClaims(r.conn, topo); err != nil {
		return fail(err)
	}
	win, err := r.claimStream(b, false)
	if err != nil {
		return fail(err)
	}
	if !r.ownClaim(win) {
		r.claimErr = &ClaimError{Transfer: b.Transfer, Run: b.Run, Owner: win.owner, At: win.at, Queue: topo.Name()}
		return r.claimErr
	}
	r.claimed = true
	r.log.Debug("claimed the transfer", "stream", topo.ClaimsQueue(), "offset", win.offset, "transfer", b.Transfer, "run", b.Run, "owner", r.owner())
	return nil
}

// legacyClaim returns the earliest claim for key that an older segmq
// left in the registry QUEUE.done, or nil. A registry that cannot be read
// is no error here (readDone has said so); a lost connection is.
func (r *receiver) legacyClaim(key doneKey) (*claim, error) {
	_, claims, err := r.readRegistry(r.conn)
	if err != nil {
		if r.conn.IsClosed() {
			return nil, lost(fmt.Errorf("read %s: %w", r.cfg.Topology.DoneQueue(), err))
		}
		return nil, nil
	}
	var win *claim
	for i := range claims {
		if c := &claims[i]; c.key == key && (win == nil || c.at.Before(win.at) || c.at.Equal(win.at) && c.owner < win.owner) {
			win = c
		}
	}
	return win, nil
}

// lookForClaims is --no-claim's check: it makes no claim, but where it can
// read the claims stream it honours a claim another owner made first.
// Where it cannot (no streams, no permission: what --no-claim is for), it
// goes on with a warning.
func (r *receiver) lookForClaims(b *binding) error {
	topo := r.cfg.Topology
	err := rabbit.DeclareClaims(r.conn, topo)
	var win *claim
	if err == nil {
		win, err = r.claimStream(b, true)
	}
	switch {
	case err != nil && r.conn.IsClosed():
		return lost(fmt.Errorf("read the claims in %s: %w", topo.ClaimsQueue(), err))
	case err != nil:
		r.log.Warn("--no-claim: this consumer does not claim the transfer, and cannot read the claims of others; a second consumer with another --out on the queue could split it", "queue", topo.Name(), "transfer", b.Transfer, "claims", topo.ClaimsQueue(), "err", err)
	case win != nil && !r.ownClaim(win):
		r.claimErr = &ClaimError{Transfer: b.Transfer, Run: b.Run, Owner: win.owner, At: win.at, Queue: topo.Name()}
		return r.claimErr
	default:
		r.log.Warn("--no-claim: this consumer does not claim the transfer (no other owner has); a second consumer with another --out on the queue could split it", "queue", topo.Name(), "transfer", b.Transfer)
	}
	r.claimed = true
	return nil
}

// claimStream publishes this owner's claim for b to QUEUE.claims (on a
// channel of its own, mandatory, with a confirm), then reads the stream
// from its first offset up to that claim and returns the claim for b's
// run at the lowest offset. With lookOnly it publishes a marker that is
// no claim (no owner: readers skip it) and reads up to the marker: the
// claims made before it, the lowest first, or nil when there is none.
func (r *receiver) claimStream(b *binding, lookOnly bool) (*claim, error) {
	q := r.cfg.Topology.ClaimsQueue()
	ctx, cancel := context.WithTimeout(context.Background(), claimReadTimeout)
	defer cancel()
	ch, err := r.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	returned := ch.NotifyReturn(make(chan amqp.Return, 1))
	var nb [16]byte
	rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	now := time.Now()
	headers := amqp.Table{HdrTransfer: b.Transfer, HdrRun: b.Run, HdrClaim: r.owner(), HdrClaimPart: b.Part, HdrClaimAt: now.UnixNano(), HdrClaimNonce: nonce}
	body := "claim " + b.Transfer + "/" + b.Run + " by " + r.owner()
	if lookOnly {
		headers = amqp.Table{HdrTransfer: b.Transfer, HdrRun: b.Run, HdrClaimAt: now.UnixNano(), HdrClaimNonce: nonce}
		body = "no claim (--no-claim): " + r.owner() + " reads the claims of " + b.Transfer + "/" + b.Run
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, amqp.Publishing{
		Headers:      headers,
		Body:         []byte(body),
		ContentType:  "text/plain",
		DeliveryMode: amqp.Persistent,
		Timestamp:    now,
		AppId:        "segmq",
	})
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		if err == nil {
			err = errors.New("the broker nacked the claim")
		}
		return nil, fmt.Errorf("publish: %w", err)
	}
	select {
	case ret, ok := <-returned: // a return comes before its confirm
		if ok {
			return nil, fmt.Errorf("publish: the broker returned the claim: %s", ret.ReplyText)
		}
	default:
	}
	if err := ch.Qos(claimPrefetch, 0, false); err != nil {
		return nil, fmt.Errorf("set prefetch: %w", err)
	}
	ds, err := ch.Consume(q, "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	key := doneKey{b.Transfer, b.Run}
	var win *claim
	for n := 1; ; n++ {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-ds:
		case <-ctx.Done():
			return nil, fmt.Errorf("read: this consumer's confirmed claim did not come back within %s", claimReadTimeout)
		}
		if !ok {
			return nil, errors.New("read: the broker ended the stream's reader")
		}
		if n%(claimPrefetch/2) == 0 {
			if err := d.Ack(true); err != nil { // on a stream, an ack is credit
				return nil, fmt.Errorf("read: %w", err)
			}
		}
		if lookOnly && d.Headers[HdrClaimNonce] == nonce {
			return win, nil // the marker: every claim made before it is read
		}
		c, err := streamClaim(d)
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if c == nil || c.key != key {
			continue
		}
		if win == nil || c.offset < win.offset {
			win = c
		}
		if c.nonce == nonce {
			return win, nil
		}
	}
}

// claimPrefetch is the credit of a reader of QUEUE.claims.
const claimPrefetch = 2000

// streamClaim decodes a message of QUEUE.claims; nil for one that is not
// a claim (nothing else is published there, but the stream is open to
// anyone who may write to the vhost).
func streamClaim(d amqp.Delivery) (*claim, error) {
	off, ok := asInt(d.Headers["x-stream-offset"])
	if !ok {
		return nil, errors.New("the broker gave no x-stream-offset")
	}
	tr, _ := d.Headers[HdrTransfer].(string)
	owner, _ := d.Headers[HdrClaim].(string)
	nonce, _ := d.Headers[HdrClaimNonce].(string)
	if CheckTransferID(tr) != nil || owner == "" || nonce == "" {
		return nil, nil
	}
	run, _ := d.Headers[HdrRun].(string)
	part, _ := d.Headers[HdrClaimPart].(string)
	at := d.Timestamp
	if n, ok := asInt(d.Headers[HdrClaimAt]); ok {
		at = time.Unix(0, n)
	}
	return &claim{key: doneKey{tr, run}, owner: owner, part: part, at: at, nonce: nonce, offset: off}, nil
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
