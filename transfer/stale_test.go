package transfer

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
)

// segmqBodiesRun is segmqBodies with a segmq-run header.
func segmqBodiesRun(t testing.TB, id, run string, data []byte, mss int) []msg {
	m := segmqBodies(t, id, data, mss)
	for i := range m {
		m[i].headers[HdrRun] = run
	}
	return m
}

// TestSameTransferIDNextRunRestored: a producer that reuses one
// --transfer id every night (producer --transfer nightly) sends a new run
// each time. After the first night's file is restored (and recorded in
// the registry), the second night's, of the same size and MSS but other
// bytes, is restored too: not dropped as a leftover, not set aside, not
// dead-lettered against the first.
func TestSameTransferIDNextRunRestored(t *testing.T) {
	e := newEnv(t)
	const mss = 1000
	night1, night2 := randData(71, 20*mss+7), randData(72, 20*mss+7)
	send := func(name string, data []byte) SendResult {
		res, err := Send(context.Background(), e.file(name, data), SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Raw: true, Transfer: "nightly", Log: e.log})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	s1 := send("night1.in", night1)
	out1 := filepath.Join(e.dir, "night1.bin")
	r1 := e.receive(e.receiveCfg(out1))
	e.mustEqualFile(out1, night1)
	if r1.Run != s1.Run || len(s1.Run) != 16 {
		t.Fatalf("consumer run %q, producer run %q (want 16 hex digits)", r1.Run, s1.Run)
	}
	// One done marker (claims go to the stream QUEUE.claims, not here).
	if n := e.queueDepth(e.topo.DoneQueue()); n != 1 {
		t.Fatalf("registry holds %d markers after one restore, want 1 (done)", n)
	}
	s2 := send("night2.in", night2)
	if s2.Run == s1.Run || s2.Transfer != s1.Transfer {
		t.Fatalf("second night: transfer %q run %q; first %q run %q", s2.Transfer, s2.Run, s1.Transfer, s1.Run)
	}
	for _, want := range []string{"", "nightly"} {
		out2 := filepath.Join(e.dir, "night2-"+want+".bin")
		cfg := e.receiveCfg(out2)
		cfg.Transfer, cfg.Timeout = want, 10*time.Second
		r2 := e.receive(cfg)
		e.mustEqualFile(out2, night2)
		if r2.Stale != 0 || r2.DeadLettered != 0 || r2.SetAside != 0 || r2.Run != s2.Run {
			t.Fatalf("--transfer %q: stale %d, dead-lettered %d, set aside %d, run %q (want %q)", want, r2.Stale, r2.DeadLettered, r2.SetAside, r2.Run, s2.Run)
		}
		if want == "" {
			s2 = send("night2.in", night2) // once more, for the consumer that names it (a third run)
		}
	}
	if n := e.queueDepth(e.topo.Name()); n != 0 {
		t.Fatalf("%d messages left in the queue", n)
	}
	if n := e.queueDepth(e.topo.DoneQueue()); n != 3 {
		t.Fatalf("registry holds %d markers after three restores, want 3 (a done marker each; claims go to QUEUE.claims)", n)
	}
}

// TestLeftoverCopiesDropped: a producer interrupted after publishing, and
// resumed from a watermark that trails what it had published, sends some
// segments twice (at-least-once). The consumer restores from the first
// copies and leaves the rest; the next consumer (no --transfer) drops
// those leftovers, which the registry names, and restores the new
// transfer, leaving the queue empty. The resumed producer keeps its run.
func TestLeftoverCopiesDropped(t *testing.T) {
	e := newEnv(t)
	const mss, run = 100, "0123456789abcdef"
	day1 := randData(73, 600*mss+3)
	in := e.file("day1.in", day1)
	fold, err := scanInput(in, mustOpen(t, in), int64(len(day1)), mss, true)
	if err != nil {
		t.Fatal(err)
	}
	// Run 1 published all 601 segments, but journaled a watermark of 100.
	first := segmqBodiesRun(t, "day1", run, day1, mss)
	e.publish(first)
	st := sendState{Transfer: "day1", Run: run, MSS: mss, Size: int64(len(day1)), Fold: fold.sum()}
	writeSendState(t, in+".segmq-send", st, 100)
	s1, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Raw: true, Resume: true, Log: e.log})
	if err != nil {
		t.Fatal(err)
	}
	if s1.Run != run || s1.Resumed != 100 {
		t.Fatalf("resumed with run %q (want %q), resumed %d", s1.Run, run, s1.Resumed)
	}
	out1 := filepath.Join(e.dir, "day1.bin")
	cfg := e.receiveCfg(out1)
	cfg.Prefetch = 32
	r1 := e.receive(cfg)
	e.mustEqualFile(out1, day1)
	if r1.SetAside != 0 || r1.DeadLettered != 0 {
		t.Fatalf("the resumed run's segments were not taken as the same transfer: set aside %d, dead-lettered %d", r1.SetAside, r1.DeadLettered)
	}
	left := e.queueDepth(e.topo.Name())
	if left < 400 {
		t.Fatalf("%d leftover copies in the queue, want about 500", left)
	}
	// Day 2.
	day2 := randData(74, 70*mss+1)
	s2 := e.send(e.file("day2.in", day2), mss, true)
	out2 := filepath.Join(e.dir, "day2.bin")
	cfg = e.receiveCfg(out2)
	cfg.Timeout = 10 * time.Second
	logged := strings.Count(e.logs.String(), "was already restored; dropping its leftover copies")
	r2 := e.receive(cfg)
	e.mustEqualFile(out2, day2)
	if r2.Transfer != s2.Transfer || r2.Stale != left || r2.SetAside != 0 || r2.DeadLettered != 0 {
		t.Fatalf("day 2: transfer %q (want %q), stale %d (want %d), set aside %d, dead-lettered %d", r2.Transfer, s2.Transfer, r2.Stale, left, r2.SetAside, r2.DeadLettered)
	}
	if n := e.queueDepth(e.topo.Name()); n != 0 {
		t.Fatalf("%d messages left in the queue after day 2", n)
	}
	if got, want := strings.Count(e.logs.String(), "was already restored; dropping its leftover copies")-logged, 1; got != want {
		t.Fatalf("%d log lines about leftovers, want %d:\n%s", got, want, e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "transfer day1 (run "+run+") was already restored") {
		t.Fatalf("log does not name the transfer and run:\n%s", e.logs.String())
	}
	// A consumer that names the restored transfer drops its leftovers
	// too, and then has nothing to take.
	e.publish(first[:10])
	named := e.receiveCfg(filepath.Join(e.dir, "named.bin"))
	named.Transfer, named.Timeout = "day1", 2*time.Second
	rn, err := Receive(context.Background(), named)
	if !errors.Is(err, ErrIncomplete) || rn.Stale != 10 {
		t.Fatalf("--transfer day1 after it was restored: stale %d, err %v (want 10 and incomplete)", rn.Stale, err)
	}
	if n := e.queueDepth(e.topo.Name()); n != 0 {
		t.Fatalf("%d messages left in the queue after the named consumer", n)
	}
}

// TestDoneQueueTopology: Declare makes QUEUE.done a queue of the main
// queue's type that keeps the newest rabbit.DoneMax markers (drop-head);
// a classic one an older segmq made for a quorum queue is kept; a QUEUE.done declared otherwise is refused with advice;
// reading the registry consumes nothing.
func TestDoneQueueTopology(t *testing.T) {
	e := newEnv(t)
	conn := declaredConn(t, e.url, e.topo)
	defer conn.Close()
	ch := openChannel(t, conn)
	defer ch.Close()
	for i := range rabbit.DoneMax + 3 {
		id := "t" + itoa(i)
		if err := ch.PublishWithContext(context.Background(), "", e.topo.DoneQueue(), false, false, amqp.Publishing{
			Headers: amqp.Table{HdrTransfer: id, HdrRun: "0123456789abcdef", HdrSize: int64(i)}, Body: []byte(id + "/0123456789abcdef")}); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.waitDepth(e.topo.DoneQueue(), rabbit.DoneMax, 10*time.Second); n != rabbit.DoneMax {
		t.Fatalf("%s holds %d markers, want %d", e.topo.DoneQueue(), n, rabbit.DoneMax)
	}
	r := &receiver{cfg: ReceiveConfig{Topology: e.topo}, log: e.log}
	if err := r.readDone(conn); err != nil {
		t.Fatal(err)
	}
	if len(r.cls.done) != rabbit.DoneMax {
		t.Fatalf("read %d transfers from the registry, want %d", len(r.cls.done), rabbit.DoneMax)
	}
	if _, ok := r.cls.done[doneKey{"t2", "0123456789abcdef"}]; ok {
		t.Fatal("the oldest markers were kept, not dropped")
	}
	if d, ok := r.cls.done[doneKey{"t1002", "0123456789abcdef"}]; !ok || d.Size != 1002 || !d.HasSize {
		t.Fatalf("newest marker: %+v %v", d, ok)
	}
	if n := e.waitDepth(e.topo.DoneQueue(), rabbit.DoneMax, 10*time.Second); n != rabbit.DoneMax {
		t.Fatalf("after reading the registry it holds %d markers, want %d: reading consumed some", n, rabbit.DoneMax)
	}

	// A quorum main queue gets a quorum registry (replicated: on a
	// cluster it outlives any one node), or keeps an older classic one.
	q := rabbit.Topology{Queue: e.topo.Queue + "-q", Type: rabbit.Quorum}
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			for _, n := range []string{q.Name(), q.DeadQueue(), q.DoneQueue()} {
				ch.QueueDelete(n, false, false, false)
			}
			ch.ExchangeDelete(q.DLX(), false, false)
		}
	})
	if _, err := ch.QueueDeclare(q.DoneQueue(), true, false, false, false, amqp.Table{amqp.QueueTypeArg: rabbit.Classic, "x-max-length": int64(rabbit.DoneMax), "x-overflow": "drop-head"}); err != nil {
		t.Fatal(err)
	}
	if qi, err := rabbit.Ensure(conn, q); err != nil || !qi.DoneClassic {
		t.Fatalf("quorum topology over a classic registry: %+v, %v", qi, err)
	}
	ch.QueueDelete(q.DoneQueue(), false, false, false)
	if qi, err := rabbit.Ensure(conn, q); err != nil || qi.DoneClassic {
		t.Fatalf("quorum topology: %+v, %v", qi, err)
	}
	if _, err := ch.QueueDeclare(q.DoneQueue(), true, false, false, false, amqp.Table{amqp.QueueTypeArg: rabbit.Quorum, "x-max-length": int64(rabbit.DoneMax), "x-overflow": "drop-head", "x-delivery-limit": int64(rabbit.DeliveryLimit)}); err != nil {
		t.Fatalf("the registry of a quorum queue is not quorum: %v", err)
	}
	// QUEUE.done declared by someone else, otherwise.
	o := rabbit.Topology{Queue: e.topo.Queue + "-o"}
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			for _, n := range []string{o.Name(), o.DeadQueue(), o.DoneQueue()} {
				ch.QueueDelete(n, false, false, false)
			}
			ch.ExchangeDelete(o.DLX(), false, false)
		}
	})
	if _, err := ch.QueueDeclare(o.DoneQueue(), true, false, false, false, amqp.Table{"x-max-length": int64(5)}); err != nil {
		t.Fatal(err)
	}
	err := rabbit.Declare(conn, o)
	t.Logf("Declare over a foreign %s: %v", o.DoneQueue(), err)
	if err == nil || !strings.Contains(err.Error(), "registry of completed transfers") || !strings.Contains(err.Error(), "delete_queue "+o.DoneQueue()) {
		t.Fatalf("err = %v", err)
	}
}
