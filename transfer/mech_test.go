package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/internal/journal"
	"github.com/segmq/segmq/internal/tcpproxy"
	"github.com/segmq/segmq/internal/vfs"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
)

// Tests of the mechanism, not only the outcome (issue 14): each pins down
// how a command gets its result, so that a deliberate bug that still
// produces the right file fails here (scripts/mutants).

// sendStateIn reads the producer's state journal from fsys: its
// transfer, and its last watermark (-1: none recorded).
func sendStateIn(t *testing.T, fsys vfs.FS, path string) (sendState, int64, error) {
	t.Helper()
	recs, err := journal.ReadFS(fsys, path, 'P')
	if err != nil {
		return sendState{}, -1, err
	}
	var st sendState
	if len(recs) == 0 || recs[0].Type != recSendHeader || json.Unmarshal(recs[0].Data, &st) != nil {
		t.Fatalf("state journal without a transfer record: %v", recs)
	}
	w := int64(-1)
	for _, r := range recs[1:] {
		if r.Type == recWatermark || r.Type == recWatermarkCRC {
			w = int64(binary.LittleEndian.Uint32(r.Data))
		}
	}
	return st, w, nil
}

// TestMechProducerStateBeforeFirstPublish: the broker refuses every
// publish (max-length 0, reject-publish), so the producer publishes and
// never gets a confirm. Pulling the plug in that window must leave a
// durable state journal naming the transfer: segments of it may already
// be in a queue, and without the journal a rerun would start another
// transfer beside them. The rerun --resume, from exactly that crashed
// state, completes the same transfer.
func TestMechProducerStateBeforeFirstPublish(t *testing.T) {
	b := brokertest.Local(t)
	e := newEnv(t)
	ctx := context.Background()
	policy := "mech-refuse-" + e.topo.Name()
	if _, err := b.Ctl(ctx, "set_policy", policy, "^"+e.topo.Name()+"$", `{"max-length":0,"overflow":"reject-publish"}`, "--apply-to", "queues"); err != nil {
		t.Fatalf("set_policy: %v", err)
	}
	cleared := false
	defer func() {
		if !cleared {
			b.Ctl(ctx, "clear_policy", policy)
		}
	}()
	const mss = 1000
	data := randData(140, 20*mss-3)
	in := e.file("in.bin", data)
	fs := vfs.NewStrictMem()
	const state = "/state/in.segmq-send"
	cfg := SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Raw: true, State: state, Timeout: time.Second, Log: e.log, stateFS: fs}
	sent := make(chan error, 1)
	go func() { _, err := Send(ctx, in, cfg); sent <- err }()
	// Wait for the proof that a segment was published and refused.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(e.logs.String(), "broker nacked a segment") {
		if time.Now().After(deadline) {
			t.Fatal("the broker never nacked a publish")
		}
		time.Sleep(5 * time.Millisecond)
	}
	crashed := fs.CrashClone() // the plug, pulled after a publish and before any confirm
	if err := <-sent; err == nil || !strings.Contains(err.Error(), "without a confirm") {
		t.Fatalf("Send with every publish refused: %v, want a timeout without a confirm", err)
	}
	st, w, err := sendStateIn(t, crashed, state)
	if err != nil {
		t.Fatalf("a crash after the first publish leaves no state journal: %v", err)
	}
	if w > 0 {
		t.Fatalf("watermark %d recorded with no confirm", w)
	}
	if _, err := b.Ctl(ctx, "clear_policy", policy); err != nil {
		t.Fatal(err)
	}
	cleared = true
	cfg.stateFS, cfg.Resume, cfg.Timeout = crashed, true, 0
	res, err := Send(ctx, in, cfg)
	if err != nil {
		t.Fatalf("resume from the crashed state: %v", err)
	}
	if res.Transfer != st.Transfer || res.Resumed != 0 {
		t.Fatalf("resumed transfer %q (%d confirmed), want %q (0)", res.Transfer, res.Resumed, st.Transfer)
	}
	out := filepath.Join(e.dir, "out.bin")
	r := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if r.Transfer != st.Transfer {
		t.Fatalf("consumer got transfer %q", r.Transfer)
	}
}

// TestMechProducerResumeSendsOnlyUnconfirmed: a real producer run,
// slowed by a proxy, loses power once its journal records a third of the
// segments as confirmed. The rerun --resume from that crashed state
// publishes exactly the segments at and above the watermark (counted on
// the broker), and the consumer sees every segment published twice as a
// duplicate and nothing else.
func TestMechProducerResumeSendsOnlyUnconfirmed(t *testing.T) {
	e := newEnv(t)
	url := brokertest.URL(t)
	up := strings.TrimSuffix(strings.SplitN(url, "@", 2)[1], "/")
	px, err := tcpproxy.New(up)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	px.SetRate(96 << 10) // 96 KiB/s: the send takes about 3 s
	const mss, n = 4096, 72
	data := randData(141, n*mss-100)
	in := e.file("in.bin", data)
	fs := vfs.NewStrictMem()
	const state = "/state/in.segmq-send"
	cfg := SendConfig{Dial: rabbit.DialConfig{URL: strings.Replace(url, up, px.Addr, 1)}, Topology: e.topo, MSS: mss, Raw: true,
		State: state, ConfirmWindow: 8, Log: e.log, stateFS: fs}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan error, 1)
	go func() { _, err := Send(ctx, in, cfg); sent <- err }()
	var crashed *vfs.MemFS
	var w int64
	deadline := time.Now().Add(60 * time.Second)
	for w < n/3 {
		if time.Now().After(deadline) {
			t.Fatalf("the journal never recorded a third of the segments (watermark %d)", w)
		}
		time.Sleep(10 * time.Millisecond)
		crashed = fs.CrashClone()
		_, w, _ = sendStateIn(t, crashed, state)
	}
	cancel() // the process is gone: it publishes nothing more
	if err := <-sent; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Send: %v", err)
	}
	if w >= n {
		t.Fatalf("watermark %d: the send ended before the crash; slow the proxy", w)
	}
	before := e.queueDepth(e.topo.Name())
	cfg.Dial, cfg.stateFS, cfg.Resume = e.dial(), crashed, true
	res, err := Send(context.Background(), in, cfg)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if int64(res.Resumed) != w {
		t.Fatalf("resumed %d, the crashed journal recorded %d", res.Resumed, w)
	}
	after := e.queueDepth(e.topo.Name())
	if got, want := after-before, n-int(w); got != want {
		t.Fatalf("the resumed producer published %d segments, want exactly the %d never confirmed (watermark %d of %d)", got, want, w, n)
	}
	out := filepath.Join(e.dir, "out.bin")
	r := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if r.Duplicates != after-n {
		t.Fatalf("consumer counted %d duplicates, the queue held %d copies beyond the %d segments", r.Duplicates, after-n, n)
	}
	t.Logf("crash at watermark %d of %d; %d in the queue before the resume; duplicates %d", w, n, before, r.Duplicates)
}

// deadLetters takes every message from QUEUE.dead, acked.
func (e *env) deadLetters() []amqp.Delivery {
	e.t.Helper()
	conn := connectTB(e.t, e.url)
	defer conn.Close()
	ch := openChannel(e.t, conn)
	defer ch.Close()
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(e.topo.DeadQueue(), true)
		if err != nil {
			e.t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// waitDead waits until QUEUE.dead holds want messages, and returns them.
func (e *env) waitDead(want int) []amqp.Delivery {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.queueDepth(e.topo.DeadQueue()) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return e.deadLetters()
}

// deadLogLine returns the consumer's dead-letter log line for message id.
func (e *env) deadLogLine(id string) string {
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, "segment dead-lettered") && strings.Contains(l, "message_id="+id+" ") {
			return l
		}
	}
	return ""
}

// TestMechConflictingDigestDeadLettered: a copy of segment 1 whose
// segmq-sha256 is another well-formed digest arrives after segment 0 set
// the transfer's. It is dead-lettered with that reason, is what
// QUEUE.dead holds, and the file comes out exact and verified against
// the first digest: the second never replaces it.
func TestMechConflictingDigestDeadLettered(t *testing.T) {
	e := newEnv(t)
	const mss = 500
	data := randData(142, 6*mss+1)
	good := segmqBodies(t, "digest", data, mss)
	other := sha256.Sum256([]byte("another file"))
	forged := msg{body: good[1].body, headers: amqp.Table{}}
	for k, v := range good[1].headers {
		forged.headers[k] = v
	}
	forged.headers[HdrSHA256] = hex.EncodeToString(other[:])
	e.publishIDs(append([]msg{good[0], forged}, good[1:]...), 1, "forged")
	out := filepath.Join(e.dir, "out.bin")
	res := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if !res.Verified || res.SHA256 != hexSHA(data) || res.DeadLettered != 1 {
		t.Fatalf("verified %v sha %s dead-lettered %d; want verified against %s, one dead letter", res.Verified, res.SHA256, res.DeadLettered, hexSHA(data))
	}
	dead := e.waitDead(1)
	if len(dead) != 1 || dead[0].MessageId != "forged" || dead[0].Headers[HdrSHA256] != hex.EncodeToString(other[:]) {
		t.Fatalf("QUEUE.dead holds %d messages (%v), want the forged copy", len(dead), ids(dead))
	}
	want := "segment 1 carries a different file SHA-256 (" + hex.EncodeToString(other[:]) + ") than the transfer's (" + hexSHA(data) + ")"
	if l := e.deadLogLine("forged"); !strings.Contains(l, want) {
		t.Fatalf("dead-letter log line %q, want the reason %q", l, want)
	}
}

// TestMechCorruptDecodableZstdDeadLettered: a zstd-packed segment whose
// frame was damaged in its literal bytes still decodes, to the wrong
// bytes of the right length. Only the CRC-32C of the payload as sent
// catches it: it is dead-lettered with that reason, the good copy is
// placed, and the file comes out exact.
func TestMechCorruptDecodableZstdDeadLettered(t *testing.T) {
	e := newEnv(t)
	const mss = 1000
	data := randData(143, 5*mss) // random: zstd stores it as a raw block
	good := zstdBodies(t, segmqBodies(t, "zstd", data, mss))
	bad := append([]byte(nil), good[2].body...)
	bad[len(bad)/2] ^= 0x5a
	dec, err := zstdDecode(bad[segment.HeaderSize:])
	if err != nil || len(dec) != mss || string(dec) == string(data[2*mss:3*mss]) {
		t.Fatalf("the damaged frame should decode to other bytes of the same length: %d bytes, %v", len(dec), err)
	}
	e.publishIDs(append([]msg{good[0], good[1], {body: bad, headers: good[2].headers}}, good[2:]...), 2, "damaged")
	out := filepath.Join(e.dir, "out.bin")
	res := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if res.DeadLettered != 1 || res.Conflicts != 0 {
		t.Fatalf("dead-lettered %d conflicts %d, want 1 and 0", res.DeadLettered, res.Conflicts)
	}
	dead := e.waitDead(1)
	if len(dead) != 1 || dead[0].MessageId != "damaged" {
		t.Fatalf("QUEUE.dead holds %v, want the damaged copy", ids(dead))
	}
	want := "payload CRC-32C " + hex8(crc32.Checksum(bad[segment.HeaderSize:], castagnoli)) + ", header says " + hex8(uint32(good[2].headers[HdrCRC].(int64)))
	if l := e.deadLogLine("damaged"); !strings.Contains(l, want) {
		t.Fatalf("dead-letter log line %q, want the reason %q", l, want)
	}
}

func hex8(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return hex.EncodeToString(b[:])
}

func ids(ds []amqp.Delivery) []string {
	var s []string
	for _, d := range ds {
		s = append(s, d.MessageId)
	}
	return s
}

// publishIDs publishes msgs, confirmed, in order, with message ids:
// "seq-N" for segment N, and special for msgs[at].
func (e *env) publishIDs(msgs []msg, at int, special string) {
	e.t.Helper()
	e.publishWithIDs(msgs, func(i int, m msg) string {
		if i == at {
			return special
		}
		h, _, _ := segment.Decode(m.body)
		return "seq-" + itoa(int(h.Seq))
	})
}

func zstdDecode(frame []byte) ([]byte, error) {
	d, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DecodeAll(frame, nil)
}

// TestMechConsumerMemoryBounded: a transfer 64 times the prefetch
// window goes through one consumer while the live heap (after each GC)
// is sampled. A consumer that kept placed payloads (or anything per
// segment of that size) would hold the whole 32 MiB; the bound is 8 MiB
// over the heap before the run.
func TestMechConsumerMemoryBounded(t *testing.T) {
	e := newEnv(t)
	const mss, prefetch = 32 << 10, 16
	const size = 64 * prefetch * mss // 32 MiB
	data := randData(144, size)
	in := e.file("in.bin", data)
	data = nil
	e.send(in, mss, true)
	runtime.GC()
	base := liveHeap()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.GC()
			if h := liveHeap(); h > peak.Load() {
				peak.Store(h)
			}
		}
	}()
	cfg := e.receiveCfg(filepath.Join(e.dir, "out.bin"))
	cfg.Prefetch = prefetch
	res := e.receive(cfg)
	close(stop)
	<-sampled
	if res.Bytes != size || !res.Verified {
		t.Fatalf("received %d bytes, verified %v", res.Bytes, res.Verified)
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("live heap before %d KiB, peak during the transfer %d KiB (+%d KiB) for a %d MiB transfer at prefetch %d x %d KiB",
		base>>10, peak.Load()>>10, grew>>10, size>>20, prefetch, mss>>10)
	if grew > 8<<20 {
		t.Fatalf("the live heap grew by %d MiB during a %d MiB transfer with a %d KiB prefetch window: the consumer retains payloads",
			grew>>20, size>>20, prefetch*mss>>10)
	}
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
