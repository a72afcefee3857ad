package transfer

import (
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/segment"
)

// Broker-free tests for what the mutation run (make mutate) found
// unguarded in the classifier and the part file.

// TestClassifyBoundaries: limits are inclusive, and a packed payload's
// length is checked only once decoded while a plain one's is checked at
// once.
func TestClassifyBoundaries(t *testing.T) {
	const mss = 100
	data := randData(15, 3*mss+10) // 4 segments
	good := segmqBodies(t, "b", data, mss)
	cls := classifier{maxMSS: MaxMSS}
	hdr := func(m msg, k string, v any) amqp.Table {
		h := amqp.Table{}
		for k, v := range m.headers {
			h[k] = v
		}
		h[k] = v
		return h
	}

	// A total of exactly segment.MaxTotal (MSS 1) is placed.
	top := segment.Header{Seq: 0, Total: segment.MaxTotal}.Bytes()
	body := append(top[:], 'x')
	h := amqp.Table{HdrTransfer: "top", HdrMSS: int64(1), HdrSize: int64(segment.MaxTotal), HdrCRC: int64(crc32.Checksum([]byte{'x'}, castagnoli))}
	if v := cls.classify(nil, h, body); v.act != actPlace {
		t.Errorf("total == MaxTotal: %d %q", v.act, v.reason)
	}

	// A seed-format payload of exactly --max-mss is placed.
	seed := seedBodies(data, mss)
	if v := (&classifier{maxMSS: mss, seed: true}).classify(nil, nil, seed[0].body); v.act != actPlace {
		t.Errorf("seed payload == --max-mss: %d %q", v.act, v.reason)
	}

	// A plain payload longer than the MSS is dead at once.
	long := append(append([]byte(nil), good[1].body...), 1)
	if v := cls.classify(nil, hdr(good[1], HdrCRC, int64(crc32.Checksum(long[8:], castagnoli))), long); v.act != actDead || !strings.Contains(v.reason, "longer than MSS") {
		t.Errorf("plain payload > MSS: %d %q", v.act, v.reason)
	}
	// An empty non-final payload is dead at once.
	empty := append([]byte(nil), good[1].body[:8]...)
	if v := cls.classify(nil, hdr(good[1], HdrCRC, int64(0)), empty); v.act != actDead || !strings.Contains(v.reason, "shorter than MSS") {
		t.Errorf("empty non-final payload: %d %q", v.act, v.reason)
	}
	// A zstd frame longer than the MSS (incompressible bytes) is fine:
	// its length is checked once decoded.
	packed := zstdBodies(t, good)
	if len(packed[1].body)-8 <= mss {
		t.Fatalf("the frame is %d bytes: not longer than the MSS", len(packed[1].body)-8)
	}
	if v := cls.classify(nil, packed[1].headers, packed[1].body); v.act != actPlace {
		t.Errorf("zstd frame longer than the MSS: %d %q", v.act, v.reason)
	}
	// The short last segment, packed: its length is known only once
	// decoded, so the classifier expects the size's remainder, not the MSS.
	if v := cls.classify(nil, packed[3].headers, packed[3].body); v.act != actPlace {
		t.Errorf("packed short last segment: %d %q", v.act, v.reason)
	}
}

// TestPartFileChecksDigestAndTransfer: a segmq transfer whose bytes do
// not match the producer's SHA-256 is never committed; a resume is
// refused for another transfer id and taken for the same one.
func TestPartFileChecksDigestAndTransfer(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.bin")
	const mss = 10
	data := randData(16, 35)
	p, err := openPart(nil, out, false, "", 0, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.bind(binding{Transfer: "t", MSS: mss, Size: int64(len(data)), Total: 4}); err != nil {
		t.Fatal(err)
	}
	placeAll(t, p, data, mss, 0, 1)
	p.setDigest(strings.Repeat("ab", 32))
	if err := p.persist(); err != nil {
		t.Fatal(err)
	}
	p.close()

	if _, err := openPart(nil, out, false, "other", 0, discard()); err == nil || !strings.Contains(err.Error(), `holds part of transfer "t", not "other"`) {
		t.Fatalf("resume for another transfer: %v", err)
	}
	p, err = openPart(nil, out, false, "t", 0, discard())
	if err != nil {
		t.Fatalf("resume for the same transfer: %v", err)
	}
	defer p.close()
	placeAll(t, p, data, mss, 2, 3)
	if _, _, err := p.commit(); !errors.Is(err, ErrDigest) {
		t.Fatalf("commit with a wrong digest: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("--out written despite the digest mismatch")
	}
}
