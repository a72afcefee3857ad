package transfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/internal/journal"
	"github.com/segmq/segmq/rabbit"
	"github.com/segmq/segmq/segment"
)

// TestSendRefusesOverLimit: a file the consumer could not take (more
// segments than segment.MaxTotal) is refused before anything is
// published; the broker URL is never even dialled.
func TestSendRefusesOverLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const size = 600 << 30 // sparse: 600 GiB at MSS 4096 is 157M segments
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Send(context.Background(), p, SendConfig{Dial: rabbit.DialConfig{URL: "amqp://guest:guest@127.0.0.1:1/"}, MSS: 4096, Raw: true})
	if !errors.Is(err, segment.ErrTotalTooLarge) || !strings.Contains(err.Error(), "use an MSS of at least 4800") {
		t.Fatalf("err = %v", err)
	}
}

// TestResumeRefusesChangedContent: a state file records the fold of the
// input's segment CRCs; a resume of a file whose bytes changed since (same
// size) is refused, with what to do.
func TestResumeRefusesChangedContent(t *testing.T) {
	e := newEnv(t)
	data := randData(60, 10_000)
	in := e.file("in.bin", data)
	st := sendState{Transfer: "t1", MSS: 1000, Size: int64(len(data)), Fold: strings.Repeat("0", 64)}
	writeSendState(t, in+".segmq-send", st, 4)
	_, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 1000, Raw: true, Resume: true})
	if err == nil || !strings.Contains(err.Error(), "content changed") || !strings.Contains(err.Error(), "delete") {
		t.Fatalf("err = %v", err)
	}
	// Without --resume the interrupted transfer is reported, not overwritten.
	_, err = Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: 1000, Raw: true})
	if !errors.Is(err, ErrUnfinished) || !strings.Contains(err.Error(), "4 segments confirmed") {
		t.Fatalf("err = %v", err)
	}
}

// TestResumeSendsOnlyUnconfirmed: with a recorded watermark of 6 of 10,
// the resumed producer publishes exactly the last 4 segments, and the
// consumer, given the first 6 from elsewhere, restores the file.
func TestResumeSendsOnlyUnconfirmed(t *testing.T) {
	e := newEnv(t)
	const mss = 1000
	data := randData(61, 10*mss-1)
	in := e.file("in.bin", data)
	fold, err := scanInput(in, mustOpen(t, in), int64(len(data)), mss, true)
	if err != nil {
		t.Fatal(err)
	}
	st := sendState{Transfer: "resumed", MSS: mss, Size: int64(len(data)), Fold: fold.sum()}
	writeSendState(t, in+".segmq-send", st, 6)
	res, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Raw: true, Resume: true, Log: e.log})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 6 || res.Transfer != "resumed" {
		t.Fatalf("resumed %d transfer %q", res.Resumed, res.Transfer)
	}
	if n := e.queueDepth(e.topo.Name()); n != 4 {
		t.Fatalf("the resumed producer published %d segments, want 4", n)
	}
	if _, err := os.Stat(in + ".segmq-send"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("state file left after a complete send")
	}
	e.publish(segmqBodies(t, "resumed", data, mss)[:6])
	out := filepath.Join(e.dir, "out.bin")
	r := e.receive(e.receiveCfg(out))
	e.mustEqualFile(out, data)
	if !r.Verified || r.SHA256 != res.SHA256 {
		t.Fatalf("verified %v, sha %s vs producer %s", r.Verified, r.SHA256, res.SHA256)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestSeedFormatSurvivesAMove: a consumer waiting for another transfer
// moves seed-format segments to the tail; the copies carry only
// segmq-moved, so they are still seed-format, and a later consumer
// restores them exactly.
func TestSeedFormatSurvivesAMove(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(62, 7*mss+3)
	e.publish(seedBodies(data, mss))
	cfg := e.receiveCfg(filepath.Join(e.dir, "other.bin"))
	cfg.Transfer, cfg.Timeout, cfg.SeedFormat = "someone-else", 700*time.Millisecond, true
	res, err := Receive(context.Background(), cfg)
	if !errors.Is(err, ErrIncomplete) || res.SetAside < 8 || !strings.Contains(err.Error(), "moved to the queue's tail") {
		t.Fatalf("set aside %d, err %v", res.SetAside, err)
	}
	if n := e.queueDepth(e.topo.Name()); n != 8 {
		t.Fatalf("queue holds %d, want the 8 seed segments", n)
	}
	// Without --seed-format they are set aside too, never taken.
	cfg = e.receiveCfg(filepath.Join(e.dir, "default.bin"))
	cfg.Timeout = 700 * time.Millisecond
	if res, err := Receive(context.Background(), cfg); !errors.Is(err, ErrIncomplete) || res.SetAside < 8 {
		t.Fatalf("without SeedFormat: set aside %d, err %v", res.SetAside, err)
	}
	out := filepath.Join(e.dir, "out.bin")
	cfg = e.receiveCfg(out)
	cfg.SeedFormat = true
	r := e.receive(cfg)
	e.mustEqualFile(out, data)
	if r.Verified || r.Transfer != "" || r.DeadLettered != 0 {
		t.Fatalf("verified %v transfer %q dead %d: want an unverified seed-format transfer", r.Verified, r.Transfer, r.DeadLettered)
	}
}

// TestTransferIDLimits: both ends refuse an id the other could not take,
// before touching the broker.
func TestTransferIDLimits(t *testing.T) {
	long := strings.Repeat("x", MaxTransferID+1)
	in := filepath.Join(t.TempDir(), "in.bin")
	os.WriteFile(in, []byte("data"), 0o644)
	dial := rabbit.DialConfig{URL: "amqp://guest:guest@127.0.0.1:1/"}
	for _, id := range []string{long, "has space", "tab\t"} {
		if _, err := Send(context.Background(), in, SendConfig{Dial: dial, Raw: true, Transfer: id}); err == nil || !strings.Contains(err.Error(), "--transfer: transfer id") {
			t.Errorf("Send with id %q: %v", id, err)
		}
		if _, err := Receive(context.Background(), ReceiveConfig{Dial: dial, Out: in + ".out", Transfer: id}); err == nil || !strings.Contains(err.Error(), "--transfer: transfer id") {
			t.Errorf("Receive with id %q: %v", id, err)
		}
	}
	if err := CheckTransferID(strings.Repeat("y", MaxTransferID)); err != nil {
		t.Errorf("an id of %d characters: %v", MaxTransferID, err)
	}
}

// TestIncompleteNamesDeadLetters: a transfer that ends incomplete says
// how many messages wait in the dead-letter queue, where a segment the
// broker dead-lettered (e.g. at a quorum queue's delivery limit) would be.
func TestIncompleteNamesDeadLetters(t *testing.T) {
	e := newEnv(t)
	const mss = 100
	data := randData(63, 5*mss)
	m := segmqBodies(t, "with-dead", data, mss)
	bad := msg{body: m[2].body, headers: amqp.Table{}}
	for k, v := range m[2].headers {
		bad.headers[k] = v
	}
	bad.headers[HdrCRC] = int64(1) // dead-lettered by the consumer
	e.publish([]msg{m[0], m[1], bad, m[3], m[4]})
	cfg := e.receiveCfg(filepath.Join(e.dir, "out.bin"))
	cfg.Timeout = 700 * time.Millisecond
	_, err := Receive(context.Background(), cfg)
	want := e.topo.DeadQueue() + " holds 1 messages"
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "first missing [2]") || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to name the missing segment and %q", err, want)
	}
}

// writeSendState writes a producer state journal as an interrupted Send
// would have left it: the transfer record, then a confirmed watermark.
func writeSendState(t *testing.T, path string, st sendState, watermark uint32) {
	t.Helper()
	writeSendStateRecord(t, path, st, journal.Record{Type: recWatermark, Data: binary.LittleEndian.AppendUint32(nil, watermark)})
}

// writeSendStateRecord writes a state file of st and one watermark record.
func writeSendStateRecord(t *testing.T, path string, st sendState, w journal.Record) {
	t.Helper()
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Create(path, 'P', journal.Record{Type: recSendHeader, Data: js}, w)
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
}

// TestResumeNamesTheRecordedMSS: a state file from a producer whose
// default MSS was 65536 refuses a resume at today's default, and says
// which --mss continues it; with that MSS the resume goes ahead.
func TestResumeNamesTheRecordedMSS(t *testing.T) {
	e := newEnv(t)
	data := randData(62, 200_000)
	in := e.file("in.bin", data)
	fold, err := scanInput(in, mustOpen(t, in), int64(len(data)), 65536, true)
	if err != nil {
		t.Fatal(err)
	}
	writeSendState(t, in+".segmq-send", sendState{Transfer: "old", MSS: 65536, Size: int64(len(data)), Fold: fold.sum()}, 1)
	_, err = Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, Raw: true, Resume: true})
	if err == nil || !strings.Contains(err.Error(), "it used --mss 65536, not 65528; run again with --resume --mss 65536") {
		t.Fatalf("err = %v", err)
	}
	res, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, Raw: true, Resume: true, MSS: 65536})
	if err != nil || res.Resumed != 1 || res.Transfer != "old" {
		t.Fatalf("resume with --mss 65536: %+v, %v", res, err)
	}
}

// TestResumeRefusesOtherPublishedBytes: the producer's watermark records
// carry the CRC-32C of every payload below the watermark as published. A
// resume of a file whose first bytes no longer have it (the file changed
// in place before the interrupted run was killed, and was rewritten since,
// same size) is refused: it would add segments of other bytes to those
// already published. With the published bytes' CRC it resumes and sends
// only the rest.
func TestResumeRefusesOtherPublishedBytes(t *testing.T) {
	e := newEnv(t)
	const mss, w = 1000, 6
	data := randData(77, 20*mss+3)
	in := e.file("in.bin", data)
	changed := bytes.Clone(data)
	copy(changed[2*mss:], "changed")
	st := sendState{Transfer: "resumed", MSS: mss, Size: int64(len(data)), Fold: wholeFold(crc32.Checksum(data, castagnoli))}
	for _, c := range []struct {
		name      string
		published []byte // what the interrupted run published below w
		refused   bool
	}{{"other bytes published", changed, true}, {"the same bytes", data, false}} {
		t.Run(c.name, func(t *testing.T) {
			rec := watermarkRecord(w, crc32.Checksum(c.published[:w*mss], castagnoli))
			writeSendStateRecord(t, in+".segmq-send", st, rec)
			res, err := Send(context.Background(), in, SendConfig{Dial: e.dial(), Topology: e.topo, MSS: mss, Raw: true, Resume: true, Log: e.log})
			if c.refused {
				if err == nil || !strings.Contains(err.Error(), "are not the file's first bytes now") {
					t.Fatalf("Send = %+v, %v; want the resume refused", res, err)
				}
				return
			}
			if err != nil || res.Resumed != w {
				t.Fatalf("Send = %+v, %v; want a resume from segment %d", res, err, w)
			}
		})
	}
}
