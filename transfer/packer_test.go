package transfer

import (
	"bytes"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/segmq/segmq/segment"
)

func packBody(payload []byte) []byte {
	h := segment.Header{Seq: 3, Total: 9}.Bytes()
	return append(h[:], payload...)
}

// TestPackerAutoRandom: on incompressible payloads auto sends everything
// as it is and, after each miss, stops trying for longer: 1000 segments
// cost only a handful of attempts.
func TestPackerAutoRandom(t *testing.T) {
	pk, err := newPacker(CompressAuto, 4096)
	if err != nil {
		t.Fatal(err)
	}
	body := packBody(randData(1, 4096))
	attempts := 0
	for range 1000 {
		skipping := pk.skip > 0
		if out, enc := pk.pack(nil, body); enc != "" || out != nil {
			t.Fatalf("random payload sent packed (%s, %d bytes)", enc, len(out))
		}
		if !skipping {
			attempts++
		}
	}
	if attempts > 12 {
		t.Fatalf("%d packing attempts on 1000 random segments, want a handful", attempts)
	}
}

// TestPackerAutoPays: compressible payloads are packed as S2 blocks that
// decode to the payload, header first; after a miss, a paying segment
// resets the pause.
func TestPackerAutoPays(t *testing.T) {
	pk, _ := newPacker(CompressAuto, 4096)
	payload := bytes.Repeat([]byte("segmq row 12345 "), 256)
	body := packBody(payload)
	out, enc := pk.pack(nil, body)
	if enc != EncodingS2 || !bytes.Equal(out[:segment.HeaderSize], body[:segment.HeaderSize]) {
		t.Fatalf("enc %q, header %x", enc, out[:min(len(out), segment.HeaderSize)])
	}
	got, err := s2.Decode(nil, out[segment.HeaderSize:])
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("decode: %v, equal %v", err, bytes.Equal(got, payload))
	}
	pk.pack(nil, packBody(randData(2, 4096))) // a miss: the next one is skipped
	if _, enc := pk.pack(nil, body); enc != "" {
		t.Fatalf("the segment after a miss was packed (%s), want it skipped", enc)
	}
	if _, enc := pk.pack(nil, body); enc != EncodingS2 {
		t.Fatal("packing did not resume after the pause")
	}
	if pk.misses != 0 {
		t.Fatalf("misses %d after a paying segment, want 0", pk.misses)
	}
}

// TestPackerAutoRate: once the publisher's rate is known, packing that
// costs more time than the saved bytes would take to publish is refused.
func TestPackerAutoRate(t *testing.T) {
	pk, _ := newPacker(CompressAuto, 4096)
	now := time.Now().UnixNano()
	pk.firstPub.Store(now - int64(time.Millisecond))
	pk.lastPubNs.Store(now)
	pk.pubBytes.Store(1 << 30) // 1 GiB in 1 ms: each byte costs ~0 to publish
	if pk.pays(4096, 1024, time.Microsecond) {
		t.Fatal("packing paid against a publisher that sends a GiB per millisecond")
	}
	pk.pubBytes.Store(minRateSample) // 4 MiB in 1 ms: 0.24 ns per byte
	if !pk.pays(4096, 1024, 100*time.Nanosecond) {
		t.Fatal("saving 3072 bytes (~730 ns of publishing) for 100 ns of packing did not pay")
	}
	if pk.pays(4096, 4000, 0) {
		t.Fatal("a 2% saving paid; want at least an eighth")
	}
}

// TestPackerModes: s2 and zstd keep a packed payload only when smaller.
func TestPackerModes(t *testing.T) {
	for _, mode := range []string{EncodingS2, EncodingZstd} {
		pk, err := newPacker(mode, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if _, enc := pk.pack(nil, packBody(bytes.Repeat([]byte{7}, 4096))); enc != mode {
			t.Errorf("%s: a run of one byte was not packed (%q)", mode, enc)
		}
		if _, enc := pk.pack(nil, packBody(randData(3, 4096))); enc != "" {
			t.Errorf("%s: random bytes were sent packed", mode)
		}
	}
	if _, err := newPacker("lz4", 4096); err == nil {
		t.Error("newPacker accepted lz4")
	}
}

// BenchmarkPack: packing 64 KiB payloads of a generated snapshot, per
// mode; wire/file is reported as a metric.
func BenchmarkPack(b *testing.B) {
	data := genSnapshot(b, 100_000)
	for _, mode := range []string{EncodingS2, EncodingZstd, "s2-snappy"} {
		b.Run(mode, func(b *testing.B) {
			var pk *packer
			if mode != "s2-snappy" {
				pk, _ = newPacker(mode, DefaultMSS)
			}
			dst := make([]byte, 0, 2*DefaultMSS)
			var in, out int64
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				for off := 0; off+DefaultMSS <= len(data); off += DefaultMSS {
					body := packBody(data[off : off+DefaultMSS])
					var packed []byte
					if pk == nil {
						packed = s2.EncodeSnappy(dst[:cap(dst)], body[segment.HeaderSize:])
					} else if packed, _ = pk.pack(dst, body); packed == nil {
						packed = body
					}
					in, out = in+int64(DefaultMSS), out+int64(len(packed))
				}
			}
			b.ReportMetric(float64(out)/float64(in), "wire/file")
		})
	}
}
