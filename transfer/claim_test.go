package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/rabbit"
)

// claimant is one consumer at the moment of its first ack: its own
// connection (as a separate process would have), a confirm-mode channel
// and a part file bound to (transfer, run). Only what checkClaim reads is
// set.
func (e *env) claimant(out string, b binding) *receiver {
	e.t.Helper()
	conn := connectTB(e.t, e.url)
	e.t.Cleanup(func() { conn.Close() })
	ch := openChannel(e.t, conn)
	if err := ch.Confirm(false); err != nil {
		e.t.Fatal(err)
	}
	cfg := e.receiveCfg(out)
	return &receiver{cfg: cfg, log: e.log.With("out", filepath.Base(out)), part: &partFile{b: &b}, conn: conn, ch: ch}
}

// TestClaimRace: on a queue without single-active-consumer (or after a
// reconnect, when the consumer count cannot tell who came first) several
// consumers with different --out reach their first ack of one transfer at
// the same instant. Exactly one may own the run; every other must refuse
// with a ClaimError naming that owner, whatever the timing. The race is
// run many times (a fresh transfer run each round), each consumer on its
// own connection, released together.
func TestClaimRace(t *testing.T) {
	e := newEnv(t)
	conn := declaredConn(t, e.url, e.topo)
	defer conn.Close()
	const rounds, racers = 25, 4
	failures := 0
	for round := range rounds {
		b := binding{Transfer: "race", Run: fmt.Sprintf("%016x", round)}
		rs := make([]*receiver, racers)
		for i := range rs {
			rs[i] = e.claimant(filepath.Join(e.dir, fmt.Sprintf("out%d.bin", i)), b)
		}
		errs := make([]error, racers)
		var start, done sync.WaitGroup
		start.Add(1)
		for i, r := range rs {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				errs[i] = r.checkClaim()
			}()
		}
		start.Done()
		done.Wait()
		var owners, refusals []string
		for i, err := range errs {
			var ce *ClaimError
			switch {
			case err == nil:
				owners = append(owners, rs[i].owner())
			case errors.As(err, &ce):
				refusals = append(refusals, ce.Owner)
			default:
				t.Errorf("round %d: consumer %d: %v (want ownership or a ClaimError)", round, i, err)
			}
		}
		ok := len(owners) == 1
		for _, o := range refusals {
			ok = ok && len(owners) == 1 && o == owners[0]
		}
		if !ok {
			failures++
			t.Errorf("round %d: %d consumers own the run %v, the others refused naming %v: want exactly one owner, named by every other", round, len(owners), owners, refusals)
		}
		for _, r := range rs {
			r.conn.Close()
		}
	}
	if failures > 0 {
		t.Logf("%d of %d rounds broke", failures, rounds)
	}
	if logs := e.logs.String(); strings.Contains(logs, "cannot claim") {
		t.Errorf("a consumer could not claim and went on:\n%s", logs)
	}
}

// TestClaimOwnerLaterAndSame: after a consumer owns a run, a later
// consumer with another --out refuses naming it, and the same owner (a
// rerun on its .part, a standby with the same --out) is no conflict.
// Another run of the same transfer id is another claim.
func TestClaimOwnerLaterAndSame(t *testing.T) {
	e := newEnv(t)
	b := binding{Transfer: "nightly", Run: "00000000000000aa"}
	owner := e.claimant(filepath.Join(e.dir, "a.bin"), b)
	if err := owner.checkClaim(); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	var ce *ClaimError
	late := e.claimant(filepath.Join(e.dir, "b.bin"), b)
	if err := late.checkClaim(); !errors.As(err, &ce) || ce.Owner != owner.owner() {
		t.Fatalf("later consumer with another --out: %v, want a ClaimError naming %s", err, owner.owner())
	}
	if err := late.checkClaim(); !errors.As(err, &ce) {
		t.Fatalf("the refusal is not sticky: %v", err)
	}
	for _, want := range []string{"transfer nightly run 00000000000000aa is being restored by " + owner.owner(), "Nothing was acked here"} {
		if !strings.Contains(ce.Error(), want) {
			t.Fatalf("ClaimError %q does not say %q", ce.Error(), want)
		}
	}
	if err := e.claimant(filepath.Join(e.dir, "a.bin"), b).checkClaim(); err != nil {
		t.Fatalf("same --out again (a rerun): %v", err)
	}
	next := b
	next.Run = "00000000000000bb"
	if err := e.claimant(filepath.Join(e.dir, "b.bin"), next).checkClaim(); err != nil {
		t.Fatalf("the next run of the same transfer id, other --out: %v", err)
	}
}

// TestClaimUnavailableRefuses: when the claims stream cannot be used (here
// the name is taken by a classic queue), the consumer must not go on
// silently: it refuses, naming the stream and the way out, unless told
// --no-claim.
func TestClaimUnavailableRefuses(t *testing.T) {
	e := newEnv(t)
	conn := connectTB(t, e.url)
	defer conn.Close()
	ch := openChannel(t, conn)
	if _, err := ch.QueueDeclare(e.topo.ClaimsQueue(), true, false, false, false, amqp.Table{amqp.QueueTypeArg: rabbit.Classic}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.QueueDelete(e.topo.ClaimsQueue(), false, false, false) })
	b := binding{Transfer: "t1", Run: "00000000000000cc"}
	r := e.claimant(filepath.Join(e.dir, "a.bin"), b)
	err := r.checkClaim()
	var ue *ClaimUnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("claims stream unusable: %v, want a ClaimUnavailableError", err)
	}
	for _, want := range []string{"cannot claim transfer t1 run 00000000000000cc in the stream " + e.topo.ClaimsQueue(), "already exists as a classic queue", "pass --no-claim"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	if again := r.checkClaim(); again != err {
		t.Fatalf("the refusal is not sticky: %v", again)
	}
	r = e.claimant(filepath.Join(e.dir, "a.bin"), b)
	r.cfg.NoClaim = true
	if err := r.checkClaim(); err != nil {
		t.Fatalf("--no-claim: %v", err)
	}
	if !strings.Contains(e.logs.String(), "--no-claim: this consumer does not claim the transfer") {
		t.Fatalf("--no-claim said nothing:\n%s", e.logs.String())
	}
}

// TestClaimLegacyHonoured: a claim that an older segmq left in the
// registry QUEUE.done still owns its run: another owner refuses naming it,
// the owner itself goes on.
func TestClaimLegacyHonoured(t *testing.T) {
	e := newEnv(t)
	conn := declaredConn(t, e.url, e.topo)
	defer conn.Close()
	b := binding{Transfer: "old", Run: "00000000000000dd"}
	old := e.claimant(filepath.Join(e.dir, "old.bin"), b)
	ch := openChannel(t, conn)
	defer ch.Close()
	if err := ch.Publish("", e.topo.DoneQueue(), false, false, amqp.Publishing{
		Headers: amqp.Table{HdrTransfer: b.Transfer, HdrRun: b.Run, HdrClaim: old.owner(), HdrClaimAt: int64(1)},
		Body:    []byte("claim"),
	}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); e.queueDepth(e.topo.DoneQueue()) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the legacy claim never reached the registry")
		}
	}
	var ce *ClaimError
	if err := e.claimant(filepath.Join(e.dir, "new.bin"), b).checkClaim(); !errors.As(err, &ce) || ce.Owner != old.owner() {
		t.Fatalf("another owner than the legacy claim's: %v, want a ClaimError naming %s", err, old.owner())
	}
	if err := old.checkClaim(); err != nil {
		t.Fatalf("the legacy claim's owner: %v", err)
	}
}

// claimBenchQueue declares a fresh queue's topology for a claims
// benchmark, on a connection closed when b ends; QUEUE.done is deleted
// then too (the queue and its claims stream go with brokertest.Queue).
func claimBenchQueue(b *testing.B) (string, rabbit.Topology, *amqp.Connection) {
	b.Helper()
	url := brokertest.URL(b)
	topo := rabbit.Topology{Queue: brokertest.Queue(b)}
	conn := declaredConn(b, url, topo)
	b.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			ch.QueueDelete(topo.DoneQueue(), false, false, false)
		}
	})
	return url, topo, conn
}

// BenchmarkClaim: one claim (publish, confirm, read the stream back to
// it) on a claims stream that already holds 10,000 claims of other runs,
// each read by every claim.
func BenchmarkClaim(b *testing.B) {
	_, topo, conn := claimBenchQueue(b)
	ch := openChannel(b, conn)
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	const prior = 10_000
	var last *amqp.DeferredConfirmation
	var err error
	for i := range prior {
		run := fmt.Sprintf("%016x", i)
		last, err = ch.PublishWithDeferredConfirm("", topo.ClaimsQueue(), false, false, amqp.Publishing{
			Headers: amqp.Table{HdrTransfer: "other", HdrRun: run, HdrClaim: "host:/other", HdrClaimNonce: run, HdrClaimAt: int64(i)},
			Body:    []byte("claim other/" + run + " by host:/other"),
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if ok, err := last.WaitContext(context.Background()); !ok || err != nil {
		b.Fatalf("prior claims not confirmed: %v", err)
	}
	cch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := cch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		r := &receiver{cfg: ReceiveConfig{Topology: topo, Out: "/bench/out.bin"}, log: slog.New(slog.DiscardHandler),
			part: &partFile{b: &binding{Transfer: "bench", Run: fmt.Sprintf("%016x", i)}}, conn: conn, ch: cch}
		if err := r.checkClaim(); err != nil {
			b.Fatal(err)
		}
	}
}
