package transfer

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/segmq/segmq/segment"
)

// Values of SendConfig.Compress besides the encodings themselves.
const (
	CompressNone = "none"
	// CompressAuto packs payloads with S2 only while it pays: a segment
	// is sent packed when packing saved at least an eighth of it and,
	// once the publisher's rate is known, when the time the saved bytes
	// would have taken to publish exceeds the time spent packing them.
	// After a segment that did not pay, the next 1, 3, 7 ... up to 255
	// are sent as they are without trying, so an incompressible file
	// costs almost nothing; one that pays resets the pause.
	CompressAuto = "auto"
)

// CompressModes lists the values --compress takes.
var CompressModes = []string{CompressNone, EncodingS2, EncodingZstd, CompressAuto}

// checkCompress says what is wrong with a --compress value.
func checkCompress(mode string) error {
	switch mode {
	case "", CompressNone, EncodingS2, EncodingZstd, CompressAuto:
		return nil
	}
	return fmt.Errorf("--compress must be none, s2, zstd or auto, got %q", mode)
}

// packer packs payloads for the read-ahead stage. Its methods run on the
// read-ahead goroutine, except published, which the publisher calls.
type packer struct {
	mode string // EncodingZstd, EncodingS2 or CompressAuto
	zstd *zstd.Encoder

	// auto
	skip, misses int

	// The publisher's rate: payload bytes published since the first one.
	firstPub  atomic.Int64 // UnixNano of the first publish, 0 before it
	pubBytes  atomic.Int64
	lastPubNs atomic.Int64
}

// minRateSample is how many published bytes make the publisher's rate
// worth believing.
const minRateSample = 4 << 20

func newPacker(mode string, mss int) (*packer, error) {
	if err := checkCompress(mode); err != nil {
		return nil, err
	}
	switch mode {
	case "", CompressNone:
		return nil, nil
	case EncodingZstd:
		// The fastest level: the link, not the ratio, is what is short.
		// No zstd checksum: the CRC-32C and the SHA-256 cover the bytes.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false), zstd.WithWindowSize(zstdWindow(mss)))
		if err != nil {
			return nil, err
		}
		return &packer{mode: mode, zstd: enc}, nil
	}
	return &packer{mode: mode}, nil
}

// zstdWindow is the smallest window zstd allows that covers one payload.
func zstdWindow(mss int) int {
	w := zstd.MinWindowSize
	for w < mss && w < zstd.MaxWindowSize {
		w *= 2
	}
	return w
}

// bound is the most a packed payload of n bytes may take.
func (pk *packer) bound(n int) int {
	if pk.mode == EncodingZstd {
		return n // EncodeAll grows the buffer if it must
	}
	return s2.MaxEncodedLen(n)
}

// pack packs the payload of body (header and payload) into dst, header
// first. It returns the packed body and its encoding, or "" when the
// payload is better sent as it is.
func (pk *packer) pack(dst, body []byte) ([]byte, string) {
	payload := body[segment.HeaderSize:]
	dst = append(dst[:0], body[:segment.HeaderSize]...)
	switch pk.mode {
	case EncodingZstd:
		packed := pk.zstd.EncodeAll(payload, dst)
		if len(packed) >= len(body) {
			return nil, ""
		}
		return packed, EncodingZstd
	case EncodingS2:
		packed := s2Encode(dst, payload)
		if len(packed) >= len(body) {
			return nil, ""
		}
		return packed, EncodingS2
	}
	// auto
	if pk.skip > 0 {
		pk.skip--
		return nil, ""
	}
	start := time.Now()
	packed := s2Encode(dst, payload)
	if pk.pays(len(payload), len(packed)-segment.HeaderSize, time.Since(start)) {
		pk.misses = 0
		return packed, EncodingS2
	}
	pk.misses = min(pk.misses+1, 8)
	pk.skip = 1<<pk.misses - 1
	return nil, ""
}

// pays says whether sending n bytes as packed bytes, which took cost to
// pack, is worth it: at least an eighth saved, and the saved bytes would
// have taken the publisher longer than the packing did.
func (pk *packer) pays(n, packed int, cost time.Duration) bool {
	saved := n - packed
	if saved < n/8 {
		return false
	}
	first, bytes := pk.firstPub.Load(), pk.pubBytes.Load()
	if first == 0 || bytes < minRateSample {
		return true // the rate is not known yet: the ratio decides
	}
	nsPerByte := float64(pk.lastPubNs.Load()-first) / float64(bytes)
	return float64(saved)*nsPerByte > float64(cost.Nanoseconds())
}

// published records n payload bytes published (as sent).
func (pk *packer) published(n int) {
	now := time.Now().UnixNano()
	pk.firstPub.CompareAndSwap(0, now)
	pk.pubBytes.Add(int64(n))
	pk.lastPubNs.Store(now)
}

// s2Encode appends one S2 block of src to dst, using dst's spare room.
func s2Encode(dst, src []byte) []byte {
	n := len(dst)
	need := n + s2.MaxEncodedLen(len(src))
	if cap(dst) < need {
		dst = append(make([]byte, 0, need), dst...)
	}
	enc := s2.Encode(dst[n:need], src)
	return dst[:n+len(enc)]
}
