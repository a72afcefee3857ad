package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/segment"
)

// TestClassify: the classifier's answer for each kind of delivery, with
// and without a binding. No broker: it is a pure function.
func TestClassify(t *testing.T) {
	const mss = 100
	data := randData(1, 3*mss+10) // 4 segments
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	good := segmqBodies(t, "real", data, mss)
	bogus := segmqBodies(t, "BOGUS", data, mss)
	other := segmqBodies(t, "other", randData(2, 3*mss+10), mss)
	seed := seedBodies(data, mss)
	with := func(m msg, k string, v any) msg {
		h := amqp.Table{}
		for k, v := range m.headers {
			h[k] = v
		}
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
		return msg{m.body, h}
	}
	absurd := segment.Header{Seq: 0, Total: segment.MaxTotal + 1}.Bytes()
	bound := &binding{Transfer: "real", MSS: mss, Size: int64(len(data)), Total: 4}
	// The registry (QUEUE.done) and runs.
	const runA, runB = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	goodA := segmqBodiesRun(t, "real", runA, data, mss)
	goodB := segmqBodiesRun(t, "real", runB, data, mss)
	size := int64(len(data))
	doneA := map[doneKey]doneInfo{{"real", runA}: {Size: size, HasSize: true, SHA256: sha}}
	doneLegacy := map[doneKey]doneInfo{{"real", ""}: {Size: size, HasSize: true, SHA256: sha}}
	boundA := &binding{Transfer: "real", Run: runA, MSS: mss, Size: size, Total: 4}
	boundOther := &binding{Transfer: "other", Run: runB, MSS: mss, Size: size, Total: 4}
	cases := []struct {
		name   string
		cls    classifier
		b      *binding
		m      msg
		act    action
		reason string
	}{
		{"first good segment binds", classifier{maxMSS: MaxMSS}, nil, good[1], actPlace, ""},
		{"bad CRC is dead even unbound", classifier{maxMSS: MaxMSS}, nil, with(bogus[0], HdrCRC, int64(1)), actDead, "CRC-32C"},
		{"another transfer once bound", classifier{maxMSS: MaxMSS}, bound, other[0], actAside, ""},
		{"not the wanted transfer, unbound", classifier{want: "real", maxMSS: MaxMSS}, nil, other[2], actAside, ""},
		{"seed-format when a transfer is wanted", classifier{want: "real", maxMSS: MaxMSS}, nil, seed[0], actAside, ""},
		{"seed-format while bound to segmq", classifier{maxMSS: MaxMSS}, bound, seed[0], actAside, ""},
		{"mss over --max-mss", classifier{maxMSS: 50}, nil, good[0], actDead, "--max-mss"},
		{"seed payload over --max-mss", classifier{maxMSS: 50, seed: true}, nil, seed[0], actDead, "--max-mss"},
		{"seed-format not asked for", classifier{maxMSS: MaxMSS}, nil, seed[0], actAside, "--seed-format"},
		{"seed-format asked for", classifier{maxMSS: MaxMSS, seed: true}, nil, seed[0], actPlace, ""},
		{"same id, another size: another run", classifier{maxMSS: MaxMSS}, &binding{Transfer: "real", MSS: mss, Size: 7, Total: 1}, good[0], actAside, "another size"},
		{"last segment without sha", classifier{maxMSS: MaxMSS}, nil, with(good[3], HdrSHA256, nil), actDead, "carries no segmq-sha256"},
		{"no size header", classifier{maxMSS: MaxMSS}, nil, with(good[0], HdrSize, nil), actDead, "segmq-size missing"},
		{"no crc header", classifier{maxMSS: MaxMSS}, nil, with(good[0], HdrCRC, nil), actDead, "segmq-crc32c missing"},
		{"size disagrees with binding", classifier{maxMSS: MaxMSS}, &binding{Transfer: "real", MSS: mss, Size: int64(len(data)) + 1, Total: 4}, good[0], actAside, "another size or MSS"},
		{"other digest than the transfer's", classifier{maxMSS: MaxMSS, digest: strings.Repeat("ab", 32)}, bound, good[3], actDead, "different file SHA-256"},
		{"same digest", classifier{maxMSS: MaxMSS, digest: sha}, bound, good[3], actPlace, ""},
		{"absurd total", classifier{maxMSS: MaxMSS}, nil, msg{append(absurd[:], data[:mss]...), good[0].headers}, actDead, "exceeds the configured limit"},
		{"short body", classifier{maxMSS: MaxMSS}, nil, msg{[]byte{1}, good[0].headers}, actDead, "shorter than the 8-byte header"},
		// Runs (segmq-run) and the registry of restored transfers.
		{"restored run, unbound: leftover", classifier{maxMSS: MaxMSS, done: doneA}, nil, goodA[0], actStale, ""},
		{"restored run, last segment: leftover", classifier{maxMSS: MaxMSS, done: doneA}, nil, goodA[3], actStale, ""},
		{"restored run named by --transfer: leftover", classifier{want: "real", maxMSS: MaxMSS, done: doneA}, nil, goodA[1], actStale, ""},
		{"restored run while another --transfer is wanted: leftover", classifier{want: "other", maxMSS: MaxMSS, done: doneA}, nil, goodA[1], actStale, ""},
		{"restored run while bound to another transfer: leftover", classifier{maxMSS: MaxMSS, done: doneA}, boundOther, goodA[2], actStale, ""},
		{"restored run that is the bound one: placed", classifier{maxMSS: MaxMSS, done: doneA}, boundA, goodA[2], actPlace, ""},
		{"another run of a restored id: placed", classifier{maxMSS: MaxMSS, done: doneA}, nil, goodB[0], actPlace, ""},
		{"another run of a restored id, --transfer names it: placed", classifier{want: "real", maxMSS: MaxMSS, done: doneA}, nil, goodB[3], actPlace, ""},
		{"no run, registry has the run: placed", classifier{maxMSS: MaxMSS, done: doneA}, nil, good[0], actPlace, ""},
		{"another run than the bound one: set aside, never dead", classifier{maxMSS: MaxMSS, digest: sha}, boundA, with(goodB[3], HdrSHA256, strings.Repeat("cd", 32)), actAside, "another run"},
		{"no run while bound to a run: set aside", classifier{maxMSS: MaxMSS}, boundA, good[0], actAside, "another run"},
		{"a run while bound to none: set aside", classifier{maxMSS: MaxMSS}, bound, goodA[0], actAside, "another run"},
		{"no run, restored with no run and this size: leftover", classifier{maxMSS: MaxMSS, done: doneLegacy}, nil, good[0], actStale, ""},
		{"no run, restored with no run at another size: placed", classifier{maxMSS: MaxMSS, done: map[doneKey]doneInfo{{"real", ""}: {Size: size + 1, HasSize: true}}}, nil, good[0], actPlace, ""},
		{"restored run, but the segment's digest is another: placed", classifier{maxMSS: MaxMSS, done: map[doneKey]doneInfo{{"real", runA}: {Size: size, HasSize: true, SHA256: strings.Repeat("ab", 32)}}}, nil, goodA[3], actPlace, ""},
		{"restored run, malformed: dead", classifier{maxMSS: MaxMSS, done: doneA}, nil, with(goodA[0], HdrCRC, int64(1)), actDead, "CRC-32C"},
		{"seed-format is never a leftover", classifier{maxMSS: MaxMSS, seed: true, done: map[doneKey]doneInfo{{"", ""}: {}}}, nil, seed[0], actPlace, ""},
		{"run not hex: dead", classifier{maxMSS: MaxMSS}, nil, with(good[0], HdrRun, "zz"), actDead, "segmq-run"},
		{"run empty: dead", classifier{maxMSS: MaxMSS}, nil, with(good[0], HdrRun, ""), actDead, "segmq-run"},
		{"run not a string: dead", classifier{maxMSS: MaxMSS}, nil, with(good[0], HdrRun, int64(7)), actDead, "segmq-run"},
		{"run without a transfer: dead", classifier{maxMSS: MaxMSS, seed: true}, nil, with(seed[0], HdrRun, runA), actDead, "segmq-run without"},
	}
	for _, c := range cases {
		v := c.cls.classify(c.b, c.m.headers, c.m.body)
		if v.act != c.act || !strings.Contains(v.reason, c.reason) {
			t.Errorf("%s: action %d reason %q, want %d with %q", c.name, v.act, v.reason, c.act, c.reason)
		}
		if v.act == actPlace && c.m.headers != nil && !bytes.Equal(v.payload, c.m.body[8:]) {
			t.Errorf("%s: payload not the body's", c.name)
		}
	}
}
