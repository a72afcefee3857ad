package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
	"github.com/segmq/segmq/snapfile"
)

func TestMain(m *testing.M) { os.Exit(brokertest.Main(m)) }

// env is one test's broker, queue and directory.
type env struct {
	t    *testing.T
	url  string
	topo rabbit.Topology
	dir  string
	log  *slog.Logger
	logs *brokertest.LogBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, url: brokertest.URL(t), topo: rabbit.Topology{Queue: brokertest.Queue(t)}, dir: t.TempDir(), logs: &brokertest.LogBuffer{}}
	e.log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() { // brokertest.Queue deletes the others
		if conn, err := amqp.Dial(e.url); err == nil {
			defer conn.Close()
			if ch, err := conn.Channel(); err == nil {
				ch.QueueDelete(e.topo.DoneQueue(), false, false, false)
			}
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *env) dial() rabbit.DialConfig { return rabbit.DialConfig{URL: e.url} }

func (e *env) file(name string, data []byte) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) send(path string, mss int, raw bool) SendResult {
	e.t.Helper()
	res, err := Send(context.Background(), path, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Raw: raw, Log: e.log})
	if err != nil {
		e.t.Fatalf("Send: %v", err)
	}
	return res
}

func (e *env) receiveCfg(out string) ReceiveConfig {
	return ReceiveConfig{Dial: e.dial(), Topology: e.topo, Out: out, Timeout: 20 * time.Second, Log: e.log}
}

func (e *env) receive(cfg ReceiveConfig) ReceiveResult {
	e.t.Helper()
	res, err := Receive(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("Receive: %v", err)
	}
	return res
}

// mustEqualFile compares the output with the input and checks that no
// work files are left.
func (e *env) mustEqualFile(out string, want []byte) {
	e.t.Helper()
	got, err := os.ReadFile(out)
	if err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		e.t.Fatalf("%s: %d bytes, want %d; equal prefix %d", out, len(got), len(want), commonPrefix(got, want))
	}
	for _, suffix := range []string{".part", ".part.state"} {
		if _, err := os.Stat(out + suffix); !errors.Is(err, os.ErrNotExist) {
			e.t.Fatalf("%s%s left behind", out, suffix)
		}
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// queueDepth returns the number of ready messages in a queue.
func (e *env) queueDepth(name string) int {
	e.t.Helper()
	q, err := brokertest.Inspect(e.t, e.url, name)
	if err != nil {
		e.t.Fatalf("inspect %s: %v", name, err)
	}
	return q.Messages
}

// connectTB connects to the broker at url; the connection is closed when
// tb ends (or earlier by the caller).
func connectTB(tb testing.TB, url string) *amqp.Connection {
	tb.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// declaredConn is connectTB with topo declared on the broker.
func declaredConn(tb testing.TB, url string, topo rabbit.Topology) *amqp.Connection {
	tb.Helper()
	conn := connectTB(tb, url)
	if err := rabbit.Declare(conn, topo); err != nil {
		tb.Fatal(err)
	}
	return conn
}

// openChannel opens a channel on conn.
func openChannel(tb testing.TB, conn *amqp.Connection) *amqp.Channel {
	tb.Helper()
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatal(err)
	}
	return ch
}

type msg struct {
	body    []byte
	headers amqp.Table
}

// publish publishes messages as a foreign client would: in the given
// order, persistent, with confirms.
func (e *env) publish(msgs []msg) {
	e.t.Helper()
	e.publishWithIDs(msgs, nil)
}

// publishWithIDs is publish with a message id for each message: id(i, m)
// for msgs[i], none where id is nil.
func (e *env) publishWithIDs(msgs []msg, id func(i int, m msg) string) {
	e.t.Helper()
	conn := declaredConn(e.t, e.url, e.topo)
	defer conn.Close()
	ch := openChannel(e.t, conn)
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		e.t.Fatal(err)
	}
	var dcs []*amqp.DeferredConfirmation
	for i, m := range msgs {
		p := amqp.Publishing{Body: m.body, Headers: m.headers, DeliveryMode: amqp.Persistent}
		if id != nil {
			p.MessageId = id(i, m)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", e.topo.Name(), false, false, p)
		if err != nil {
			e.t.Fatal(err)
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			e.t.Fatalf("publish not confirmed: %v", err)
		}
	}
}

// seedBodies cuts data like the seed's Node.js producer: total =
// trunc(len/MSS)+1, so an exact multiple gets an extra empty segment, and
// the header written with writeIntLE (little-endian, as here).
func seedBodies(data []byte, mss int) []msg {
	total := len(data)/mss + 1
	var out []msg
	for seq := 0; seq < total; seq++ {
		end := min((seq+1)*mss, len(data))
		b := make([]byte, 8, 8+mss)
		binary.LittleEndian.PutUint32(b[0:], uint32(seq))
		binary.LittleEndian.PutUint32(b[4:], uint32(total))
		out = append(out, msg{body: append(b, data[seq*mss:end]...)})
	}
	return out
}

// segmqBodies cuts data as segmq's producer does, headers included.
func segmqBodies(t testing.TB, id string, data []byte, mss int) []msg {
	s, err := segment.NewSplitter(bytes.NewReader(data), int64(len(data)), mss)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	var out []msg
	for seq := uint32(0); seq < s.Total(); seq++ {
		b, _ := s.Segment(seq, nil)
		out = append(out, msg{body: b, headers: SegmentHeaders(id, mss, int64(len(data)), b[8:], hex.EncodeToString(sum[:]))})
	}
	return out
}

// zstdBodies packs every non-empty payload as the producer's --compress
// zstd does, even where packing does not make it smaller.
func zstdBodies(t testing.TB, in []msg) []msg {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	out := make([]msg, len(in))
	for i, m := range in {
		out[i] = m
		if len(m.body) == segment.HeaderSize {
			continue
		}
		body := enc.EncodeAll(m.body[segment.HeaderSize:], append([]byte(nil), m.body[:segment.HeaderSize]...))
		h := amqp.Table{}
		for k, v := range m.headers {
			h[k] = v
		}
		h[HdrEncoding] = EncodingZstd
		h[HdrCRC] = int64(crc32.Checksum(body[segment.HeaderSize:], castagnoli))
		out[i] = msg{body: body, headers: h}
	}
	return out
}

// s2Bodies packs every non-empty payload into one S2 block, as the
// producer's --compress s2 does, even where that does not make it smaller.
func s2Bodies(in []msg) []msg {
	out := make([]msg, len(in))
	for i, m := range in {
		out[i] = m
		if len(m.body) == segment.HeaderSize {
			continue
		}
		body := s2Encode(append([]byte(nil), m.body[:segment.HeaderSize]...), m.body[segment.HeaderSize:])
		h := amqp.Table{}
		for k, v := range m.headers {
			h[k] = v
		}
		h[HdrEncoding] = EncodingS2
		h[HdrCRC] = int64(crc32.Checksum(body[segment.HeaderSize:], castagnoli))
		out[i] = msg{body: body, headers: h}
	}
	return out
}

func randData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestRoundTripSizes sends files of edge-case sizes through the broker
// with segmq's producer and consumer.
func TestRoundTripSizes(t *testing.T) {
	const mss = 1000
	for _, size := range []int{0, 1, mss - 1, mss, mss + 1, 7 * mss, 3<<20 + 17} {
		t.Run(strings.ReplaceAll(itoa(size), "-", "m"), func(t *testing.T) {
			e := newEnv(t)
			data := randData(uint64(size), size)
			in := e.file("in.bin", data)
			sent := e.send(in, mss, true)
			out := filepath.Join(e.dir, "out.bin")
			res := e.receive(e.receiveCfg(out))
			e.mustEqualFile(out, data)
			if !res.Verified || res.SHA256 != sent.SHA256 || res.Transfer != sent.Transfer || res.Segments != sent.Segments {
				t.Fatalf("sent %+v, received %+v", sent, res)
			}
			if n := e.queueDepth(e.topo.Name()); n != 0 {
				t.Fatalf("%d messages left in the queue", n)
			}
		})
	}
}

// TestSnapshotRoundTrip sends a generated snapshot of several MiB with the
// default MSS and checks the output is a valid snapshot, byte-identical.
func TestSnapshotRoundTrip(t *testing.T) {
	e := newEnv(t)
	var buf bytes.Buffer
	if _, err := snapfile.Gen(context.Background(), &buf, snapfile.GenOptions{Rows: 100_000, Workers: 2, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	in := e.file("db.bin", buf.Bytes())
	e.send(in, 0, false)
	out := filepath.Join(e.dir, "got.bin")
	e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, buf.Bytes())
	f, _ := os.Open(out)
	defer f.Close()
	if _, err := snapfile.Verify(context.Background(), f, nil); err != nil {
		t.Fatal(err)
	}
}

func TestProducerRefusesNonSnapshot(t *testing.T) {
	e := newEnv(t)
	in := e.file("junk.bin", []byte("this is not a snapshot"))
	_, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo})
	if err == nil || !strings.Contains(err.Error(), "not a complete snapshot") || !strings.Contains(err.Error(), "--raw") {
		t.Fatalf("err = %v", err)
	}
}

// TestArrivalOrders publishes segments in reverse, shuffled and with
// duplicates, as raw seed-format bodies and as segmq bodies.
func TestArrivalOrders(t *testing.T) {
	const mss = 512
	data := randData(5, 40*mss) // an exact multiple: the seed adds an empty last segment
	r := rand.New(rand.NewPCG(9, 9))
	orders := map[string]func([]msg) []msg{
		"reverse": func(in []msg) []msg {
			out := make([]msg, len(in))
			for i := range in {
				out[len(in)-1-i] = in[i]
			}
			return out
		},
		"shuffled": func(in []msg) []msg {
			out := append([]msg(nil), in...)
			r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
			return out
		},
		"duplicates": func(in []msg) []msg {
			out := append([]msg(nil), in...)
			for i := 0; i < len(in); i += 3 {
				out = append(out, in[i])
			}
			r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
			return out
		},
	}
	for name, order := range orders {
		for _, format := range []string{"seed", "segmq", "zstd", "s2"} {
			t.Run(name+"/"+format, func(t *testing.T) {
				e := newEnv(t)
				bodies := seedBodies(data, mss)
				switch format {
				case "segmq":
					bodies = segmqBodies(t, "tx-"+name, data, mss)
				case "zstd":
					bodies = zstdBodies(t, segmqBodies(t, "tz-"+name, data, mss))
				case "s2":
					bodies = s2Bodies(segmqBodies(t, "ts-"+name, data, mss))
				}
				msgs := order(bodies)
				e.publish(msgs)
				out := filepath.Join(e.dir, "out.bin")
				cfg := e.receiveCfg(out)
				cfg.SeedFormat = format == "seed"
				res := e.receive(cfg)
				e.mustEqualFile(out, data)
				// Duplicates that arrive after completion stay in the queue:
				// seen + left must account for every extra copy.
				left := e.queueDepth(e.topo.Name())
				if want := len(msgs) - len(bodies); res.Duplicates+left != want {
					t.Fatalf("duplicates seen %d + left in queue %d, want %d", res.Duplicates, left, want)
				}
				if res.Verified != (format != "seed") {
					t.Fatalf("verified = %v for %s", res.Verified, format)
				}
			})
		}
	}
}

// TestStrictWindowAdjacentSwaps: --window 1 (the seed's in-order mode)
// with every pair of neighbours swapped.
func TestStrictWindowAdjacentSwaps(t *testing.T) {
	e := newEnv(t)
	const mss = 256
	data := randData(6, 30*mss+100)
	msgs := segmqBodies(t, "swap", data, mss)
	for i := 0; i+1 < len(msgs); i += 2 {
		msgs[i], msgs[i+1] = msgs[i+1], msgs[i]
	}
	e.publish(msgs)
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.ReorderWindow = 1
	e.receive(cfg)
	e.mustEqualFile(out, data)
}

// TestStrictWindowSeedStall is the seed's stall: --window 1 with a
// prefetch of 1 and segment 1 ahead of segment 0. RabbitMQ puts a
// requeued segment back at the head, so with nack(requeue) segment 0 could
// never arrive. segmq moves segment 1 to the tail instead, so the
// transfer completes, with nothing requeued.
func TestStrictWindowSeedStall(t *testing.T) {
	e := newEnv(t)
	const mss = 128
	data := randData(7, 6*mss)
	msgs := segmqBodies(t, "strict", data, mss)
	msgs[0], msgs[1] = msgs[1], msgs[0]
	e.publish(msgs)
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.ReorderWindow, cfg.Prefetch = 1, 1
	res := e.receive(cfg)
	e.mustEqualFile(out, data)
	if res.SetAside < 1 || res.Requeued != 0 {
		t.Fatalf("set aside %d, requeued %d; want segment 1 moved to the tail, nothing requeued", res.SetAside, res.Requeued)
	}
	if n := e.queueDepth(e.topo.Name()); n != 0 {
		t.Fatalf("queue holds %d after the transfer, want 0", n)
	}
}

// TestSeedMessageFirstDoesNotCaptureConsumer: a stray seed-format message
// (no headers, total 1) at the head of a queue holding a segmq transfer
// does not make a consumer with no --transfer exit 0 with an unverified
// --out. It once caught the consumer binding to the stray message and
// writing its 5 bytes to --out.
func TestSeedMessageFirstDoesNotCaptureConsumer(t *testing.T) {
	e := newEnv(t)
	data := randData(2, 5000)
	stray := segment.Header{Seq: 0, Total: 1}.Bytes()
	e.publish(append([]msg{{body: append(stray[:], "hello"...)}}, segmqBodies(t, "real", data, 1000)...))
	out := filepath.Join(e.dir, "out.bin")
	res, err := Receive(context.Background(), e.receiveCfg(out))
	got, _ := os.ReadFile(out)
	t.Logf("err=%v transfer=%q verified=%v out=%q", err, res.Transfer, res.Verified, got)
	if err == nil && !res.Verified {
		t.Errorf("exit 0 with an unverified %d-byte --out (%q) from a stray headerless message; the segmq transfer %q (%d bytes, with SHA-256) was in the queue",
			len(got), got, "real", len(data))
	}
}

// TestSeedMessageFirstDoesNotBlockTransfer: with a stray headerless
// message of total 2 (its second segment never comes) at the head of the
// queue, the consumer still restores the segmq transfer behind it without
// error. It once caught the consumer binding to the seed-format stray and
// moving every real segment to the tail until --timeout.
func TestSeedMessageFirstDoesNotBlockTransfer(t *testing.T) {
	e := newEnv(t)
	data := randData(3, 5000)
	stray := segment.Header{Seq: 0, Total: 2}.Bytes()
	e.publish(append([]msg{{body: append(stray[:], make([]byte, 1000)...)}}, segmqBodies(t, "real", data, 1000)...))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 3 * time.Second
	res, err := Receive(context.Background(), cfg)
	t.Logf("err=%v transfer=%q setaside=%d", err, res.Transfer, res.SetAside)
	if err != nil {
		t.Errorf("a single stray headerless message captured the consumer; the intact segmq transfer in the queue was not restored: %v", err)
	}
}

// TestWindow1ReversedCompletes: --window 1 with 40 segments in reverse
// order completes within 60 s at --prefetch 1, 2 and 4 (README: the
// seed's stall completes). It once caught runs with more than two
// reversed segments and a small prefetch that did not complete.
func TestWindow1ReversedCompletes(t *testing.T) {
	for _, prefetch := range []int{1, 2, 4} {
		t.Run(itoa(prefetch), func(t *testing.T) {
			e := newEnv(t)
			const mss, n = 100, 40
			data := randData(7, n*mss)
			m := segmqBodies(t, "rev", data, mss)
			for i, j := 0, len(m)-1; i < j; i, j = i+1, j-1 {
				m[i], m[j] = m[j], m[i]
			}
			e.publish(m)
			out := filepath.Join(e.dir, "out.bin")
			cfg := e.receiveCfg(out)
			cfg.ReorderWindow, cfg.Prefetch, cfg.Timeout = 1, prefetch, 10*time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			res, err := Receive(ctx, cfg)
			t.Logf("prefetch %d, %d segments reversed: err=%v in %s, set aside %d", prefetch, n, err, time.Since(start).Round(time.Millisecond), res.SetAside)
			if err != nil {
				t.Errorf("--window 1 --prefetch %d with %d reversed segments did not complete within 60s: %v", prefetch, n, err)
			}
		})
	}
}

// TestSeedFormatResumeWithShortLastSegmentFirst: a seed-format
// (headerless) transfer whose short last segment arrives first is
// interrupted (ErrIncomplete), then resumed, and restores the file
// exactly. It once caught seed-format resumes that did not complete.
func TestSeedFormatResumeWithShortLastSegmentFirst(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(12, 10*mss+37)
	m := seedBodies(data, mss)
	out := filepath.Join(e.dir, "out.bin")
	e.publish([]msg{m[len(m)-1], m[3], m[0]})
	cfg := e.receiveCfg(out)
	cfg.Timeout, cfg.SeedFormat = time.Second, true
	if _, err := Receive(context.Background(), cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	e.publish(m)
	cfg.Timeout = 3 * time.Second
	if _, err := Receive(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	e.mustEqualFile(out, data)
}

// TestSmallWindowAndPrefetchShuffledExact: 60 shuffled segments with
// --window 1 or 2 and --prefetch 2, 3 or 16 restore the file exactly
// within 30 s; the log shows how long each took and how many set-asides
// it cost. It guards against reorder stalls at small windows; a run whose
// context deadline fired once hung in ch.Close (see
// TestReceiveReturnsAfterContextEnds).
func TestSmallWindowAndPrefetchShuffledExact(t *testing.T) {
	for _, w := range []uint32{1, 2} {
		for _, pf := range []int{2, 3, 16} {
			t.Run("w"+itoa(int(w))+"p"+itoa(pf), func(t *testing.T) {
				e := newEnv(t)
				const mss, n = 100, 60
				data := randData(uint64(w)*100+uint64(pf), n*mss)
				m := segmqBodies(t, "sw", data, mss)
				r := rand.New(rand.NewPCG(uint64(w), uint64(pf)))
				r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
				e.publish(m)
				out := filepath.Join(e.dir, "out.bin")
				cfg := e.receiveCfg(out)
				cfg.ReorderWindow, cfg.Prefetch, cfg.Timeout = w, pf, 15*time.Second
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				start := time.Now()
				res, err := Receive(ctx, cfg)
				t.Logf("window %d prefetch %d: %s, set aside %d, err %v", w, pf, time.Since(start).Round(time.Millisecond), res.SetAside, err)
				if err != nil {
					t.Errorf("window %d prefetch %d, %d shuffled segments: %v", w, pf, n, err)
					return
				}
				e.mustEqualFile(out, data)
			})
		}
	}
}

// TestMalformedDeadLettered mixes every malformed case of the wire
// contract into a good transfer: each goes to the dead-letter queue with
// a log line, and the file still comes out exact.
func TestMalformedDeadLettered(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(8, 10*mss+50)
	good := segmqBodies(t, "good", data, mss)
	base := func() amqp.Table {
		h := amqp.Table{}
		for k, v := range good[1].headers {
			h[k] = v
		}
		return h
	}
	with := func(k string, v any) amqp.Table { h := base(); h[k] = v; return h }
	hdr := func(seq, total uint32, payload []byte) []byte {
		b := segment.Header{Seq: seq, Total: total}.Bytes()
		return append(b[:], payload...)
	}
	payload := data[mss : 2*mss]
	long := append(append([]byte(nil), payload...), 1)
	withAll := func(k1 string, v1 any, k2 string, v2 any) amqp.Table { h := with(k1, v1); h[k2] = v2; return h }
	enc, _ := zstd.NewWriter(nil)
	bomb := enc.EncodeAll(make([]byte, 8<<20), nil) // a few hundred bytes that decode to 8 MiB
	enc.Close()
	s2bomb := s2.Encode(nil, make([]byte, 8<<20)) // a small block that states 8 MiB
	bad := []struct {
		name string
		m    msg
		log  string
	}{
		{"short body", msg{[]byte{1, 2, 3}, base()}, "shorter than the 8-byte header"},
		{"empty body", msg{nil, base()}, "shorter than the 8-byte header"},
		{"seq >= total", msg{hdr(11, 11, payload), base()}, "seq >= total"},
		{"total 0", msg{hdr(0, 0, payload), base()}, "total is 0"},
		{"absurd total", msg{hdr(1, 0xFFFFFFF0, payload), base()}, "total"},
		{"total disagrees", msg{hdr(1, 12, payload), base()}, "total"},
		{"payload > MSS", msg{hdr(1, 11, long), with(HdrCRC, int64(crc32.Checksum(long, castagnoli)))}, "longer than MSS"},
		{"short non-final", msg{hdr(1, 11, payload[:10]), with(HdrCRC, int64(crc32.Checksum(payload[:10], castagnoli)))}, "shorter than MSS"},
		{"crc mismatch", msg{hdr(1, 11, payload), with(HdrCRC, int64(12345))}, "CRC-32C"},
		{"size disagrees", msg{hdr(1, 11, payload), with(HdrSize, int64(5000))}, "total differs from the transfer's (its earlier segments, or its size and MSS) (seq 1, total 11, payload 100 bytes): size 5000 at MSS 100"},
		{"mss disagrees", msg{hdr(1, 11, payload), with(HdrMSS, int64(99))}, "longer than MSS (seq 1, total 11, payload 100 bytes): MSS 99"},
		{"bad mss type", msg{hdr(1, 11, payload), with(HdrMSS, "big")}, "segmq-mss"},
		{"bad sha", msg{hdr(1, 11, payload), with(HdrSHA256, "zz")}, "segmq-sha256"},
		{"headers without transfer", msg{hdr(1, 11, payload), amqp.Table{HdrMSS: int64(100)}}, "without segmq-transfer"},
		{"unknown encoding", msg{hdr(1, 11, payload), with(HdrEncoding, "lz4")}, `unknown encoding \"lz4\"`}, // quoted in the log line
		{"s2 garbage", msg{hdr(1, 11, payload), with(HdrEncoding, EncodingS2)}, "s2 payload does not decode within 100 bytes"},
		{"s2 bomb", msg{hdr(1, 11, s2bomb), withAll(HdrEncoding, EncodingS2, HdrCRC, int64(crc32.Checksum(s2bomb, castagnoli)))}, "s2 payload does not decode within 100 bytes: the block states 8388608 bytes"},
		{"zstd garbage", msg{hdr(1, 11, payload), with(HdrEncoding, EncodingZstd)}, "zstd payload does not decode within"},
		{"zstd bomb", msg{hdr(1, 11, bomb), withAll(HdrEncoding, EncodingZstd, HdrCRC, int64(crc32.Checksum(bomb, castagnoli)))}, "does not decode within 1048576 bytes"},
		{"last segment wrong size", msg{hdr(10, 11, data[10*mss:10*mss+49]), with(HdrCRC, int64(crc32.Checksum(data[10*mss:10*mss+49], castagnoli)))}, "declared file size"},
	}
	// Bad messages between good ones; the last good segment comes last,
	// so every bad one is seen before the transfer completes.
	msgs := []msg{good[0]}
	for i, b := range bad {
		msgs = append(msgs, b.m)
		if i+1 < len(good)-1 {
			msgs = append(msgs, good[i+1])
		}
	}
	msgs = append(msgs, good[len(good)-1])
	e.publish(msgs)
	out := filepath.Join(e.dir, "out.bin")
	res := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if res.DeadLettered != len(bad) {
		t.Fatalf("dead-lettered %d, want %d", res.DeadLettered, len(bad))
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.queueDepth(e.topo.DeadQueue()) != len(bad) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.queueDepth(e.topo.DeadQueue()); n != len(bad) {
		t.Fatalf("dead-letter queue holds %d, want %d", n, len(bad))
	}
	logs := e.logs.String()
	for _, b := range bad {
		if !strings.Contains(logs, b.log) {
			t.Errorf("%s: no log line containing %q", b.name, b.log)
		}
	}
	if c := strings.Count(logs, "segment dead-lettered"); c != len(bad) {
		t.Errorf("%d dead-letter log lines, want %d", c, len(bad))
	}
}

// TestTwoTransfersOneQueue: two producers on one queue, interleaved; two
// consumer runs take one transfer each, no mixing, no loss.
func TestTwoTransfersOneQueue(t *testing.T) {
	e := newEnv(t)
	const mss = 200
	a, b := randData(20, 30*mss+7), randData(21, 25*mss+3)
	ma, mb := segmqBodies(t, "transfer-a", a, mss), segmqBodies(t, "transfer-b", b, mss)
	var msgs []msg
	for i := 0; i < max(len(ma), len(mb)); i++ {
		if i < len(mb) {
			msgs = append(msgs, mb[i])
		}
		if i < len(ma) {
			msgs = append(msgs, ma[i])
		}
	}
	e.publish(msgs)
	outA, outB := filepath.Join(e.dir, "a.bin"), filepath.Join(e.dir, "b.bin")
	cfg := e.receiveCfg(outA)
	cfg.Transfer = "transfer-a"
	ra := e.receive(cfg)
	e.mustEqualFile(outA, a)
	if ra.Transfer != "transfer-a" {
		t.Fatalf("first consumer took %q", ra.Transfer)
	}
	if n := e.queueDepth(e.topo.Name()); n != len(mb) {
		t.Fatalf("after transfer a, %d messages left, want all %d of b", n, len(mb))
	}
	rb := e.receive(e.receiveCfg(outB)) // takes whatever is first: b
	e.mustEqualFile(outB, b)
	if rb.Transfer != "transfer-b" {
		t.Fatalf("second consumer took %q", rb.Transfer)
	}
}

// TestConsumerFirst starts the consumer before the producer has declared
// anything: it declares the queue itself and waits.
func TestConsumerFirst(t *testing.T) {
	e := newEnv(t)
	data := randData(30, 50_000)
	in := e.file("in.bin", data)
	out := filepath.Join(e.dir, "out.bin")
	done := make(chan error, 1)
	go func() {
		_, err := Receive(context.Background(), e.receiveCfg(out))
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	e.send(in, 4096, true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.mustEqualFile(out, data)
}

// TestTimeoutKeepsPart: a transfer missing a segment times out with a clear
// error; .part and state stay; a later run with the missing segment
// resumes and completes.
func TestTimeoutKeepsPart(t *testing.T) {
	e := newEnv(t)
	const mss = 300
	data := randData(40, 20*mss)
	msgs := segmqBodies(t, "gap", data, mss)
	missing := msgs[7]
	e.publish(append(append([]msg(nil), msgs[:7]...), msgs[8:]...))
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 700 * time.Millisecond
	_, err := Receive(context.Background(), cfg)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "19 of 20") || !strings.Contains(err.Error(), "[7]") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("--out written by an incomplete transfer")
	}
	for _, p := range []string{out + ".part", out + ".part.state"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s not kept: %v", p, err)
		}
	}
	if n := e.queueDepth(e.topo.Name()); n != 0 {
		t.Fatalf("%d messages not acked although on disk", n)
	}
	e.publish([]msg{msgs[3], missing}) // a duplicate of an acked segment, then the gap
	res := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if res.Resumed != 19 || res.Duplicates != 1 {
		t.Fatalf("resumed %d duplicates %d, want 19 and 1", res.Resumed, res.Duplicates)
	}
}

// TestResumeOtherTransferRefused: a .part of one transfer is never mixed
// with another; --restart discards it.
func TestResumeOtherTransferRefused(t *testing.T) {
	e := newEnv(t)
	data := randData(50, 3000)
	msgs := segmqBodies(t, "first", data, 1000)
	e.publish(msgs[:2])
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Timeout = 500 * time.Millisecond
	if _, err := Receive(context.Background(), cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	cfg.Transfer = "second"
	_, err := Receive(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), `transfer "first"`) || !strings.Contains(err.Error(), "--restart") {
		t.Fatalf("err = %v", err)
	}
	other := randData(51, 1500)
	e.publish(segmqBodies(t, "second", other, 1000))
	cfg.Restart, cfg.Timeout = true, 20*time.Second
	e.receive(cfg)
	e.mustEqualFile(out, other)
}

func TestQueueTypeConflict(t *testing.T) {
	e := newEnv(t)
	data := randData(60, 100)
	in := e.file("in.bin", data)
	e.send(in, 50, true) // creates a classic queue
	topo := e.topo
	topo.Type = rabbit.Quorum
	_, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: topo, Raw: true})
	if err == nil || !strings.Contains(err.Error(), "x-queue-type") || !strings.Contains(err.Error(), "--queue-type classic") {
		t.Fatalf("err = %v", err)
	}
}

func TestQuorumRoundTrip(t *testing.T) {
	e := newEnv(t)
	e.topo.Type = rabbit.Quorum
	data := randData(61, 200_000)
	in := e.file("in.bin", data)
	e.send(in, 8192, true)
	out := filepath.Join(e.dir, "out.bin")
	e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
}

func TestBadPasswordRedacted(t *testing.T) {
	e := newEnv(t)
	_, err := Receive(context.Background(), ReceiveConfig{Dial: rabbit.DialConfig{URL: withPassword(e.url, "s3cr3t-pw")}, Topology: e.topo, Out: filepath.Join(e.dir, "o")})
	if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") || !strings.Contains(err.Error(), "xxxxx") {
		t.Fatalf("err = %v", err)
	}
}

func withPassword(u, pw string) string {
	at := strings.Index(u, "@")
	colon := strings.Index(u[len("amqp://"):], ":") + len("amqp://")
	return u[:colon+1] + pw + u[at:]
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestMillionRecordsShuffled: a 1M-record snapshot, its segments published
// in a random order, comes out byte-identical and verifies.
func TestMillionRecordsShuffled(t *testing.T) {
	e := newEnv(t)
	var buf bytes.Buffer
	if _, err := snapfile.Gen(context.Background(), &buf, snapfile.GenOptions{Rows: 1_000_000, Workers: 2, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	msgs := segmqBodies(t, "million", data, DefaultMSS)
	r := rand.New(rand.NewPCG(1, 1))
	r.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	e.publish(msgs)
	out := filepath.Join(e.dir, "db.bin")
	res := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if !res.Verified {
		t.Fatal("sha256 not verified")
	}
	f, _ := os.Open(out)
	defer f.Close()
	sum, err := snapfile.Verify(context.Background(), f, nil)
	if err != nil || sum.Rows != 1_000_000 {
		t.Fatalf("verify: %+v, %v", sum, err)
	}
}

// TestCompressRoundTrip: every --compress mode on a low-entropy
// snapshot, on a generated one and on random bytes. The file arrives
// exact every time; the wire carries fewer bytes where there is something
// to squeeze, and never more than the file (incompressible payloads
// travel as they are; auto stops trying on them).
func TestCompressRoundTrip(t *testing.T) {
	gen := func(low bool) []byte {
		var buf bytes.Buffer
		if _, err := snapfile.Gen(context.Background(), &buf, snapfile.GenOptions{Rows: 60_000, Workers: 2, Seed: 3, LowEntropy: low}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	low, generated, random := gen(true), gen(false), randData(4, 3<<20+5)
	for _, tc := range []struct {
		name     string
		data     []byte
		raw      bool
		compress string
		maxRatio float64 // wire bytes / file bytes
	}{
		{"low-entropy/zstd", low, false, EncodingZstd, 0.2},
		{"generated/zstd", generated, false, EncodingZstd, 0.9},
		{"random/zstd", random, true, EncodingZstd, 1.0},
		{"low-entropy/s2", low, false, EncodingS2, 0.3},
		{"generated/s2", generated, false, EncodingS2, 0.9},
		{"random/s2", random, true, EncodingS2, 1.0},
		{"low-entropy/auto", low, false, CompressAuto, 0.3},
		{"generated/auto", generated, false, CompressAuto, 0.9},
		{"random/auto", random, true, CompressAuto, 1.0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			in := e.file("in.bin", tc.data)
			sent, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 16 << 10, Raw: tc.raw, Compress: tc.compress, Log: e.log})
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(e.dir, "out.bin")
			res := e.receive(e.receiveCfg(out))
			e.mustEqualFile(out, tc.data)
			if !res.Verified || res.DeadLettered != 0 {
				t.Fatalf("received %+v", res)
			}
			ratio := float64(sent.WireBytes) / float64(len(tc.data))
			t.Logf("%s: %d bytes, %d on the wire (%.3f)", tc.name, len(tc.data), sent.WireBytes, ratio)
			if ratio > tc.maxRatio {
				t.Fatalf("wire/file = %.3f, want <= %.2f", ratio, tc.maxRatio)
			}
		})
	}
}
