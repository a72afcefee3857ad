package transfer

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Header names.
const (
	HdrTransfer = "segmq-transfer"
	HdrMSS      = "segmq-mss"
	HdrSize     = "segmq-size"
	HdrCRC      = "segmq-crc32c"
	HdrSHA256   = "segmq-sha256"
	// HdrEncoding names how this message's payload is encoded; absent
	// means as-is. "zstd" is one zstd frame holding the payload; "s2" is
	// one S2 block (klauspost/compress/s2, block format, no stream
	// framing). Offsets, MSS, size and the SHA-256 always refer to the
	// decoded bytes; the CRC-32C covers the payload as sent. A consumer
	// dead-letters an encoding it does not know, naming it.
	HdrEncoding = "segmq-encoding"
	// HdrRun is a nonce the producer draws for each transfer and keeps
	// across --resume. A transfer is its id and its run: the same id sent
	// again (producer --transfer nightly, every night) is another run.
	// Absent (a producer older than the header): run "".
	HdrRun = "segmq-run"
)

// MaxRun bounds a run nonce; the producer sends 16 hex digits.
const MaxRun = 64

// Values of HdrEncoding.
const (
	EncodingZstd = "zstd" // one zstd frame
	EncodingS2   = "s2"   // one S2 block
)

// meta is what a message's headers say about its transfer.
type meta struct {
	Transfer string // "" for a seed-format message with no headers
	MSS      int
	Size     int64
	HasSize  bool
	CRC      uint32
	HasCRC   bool
	SHA256   string
	Encoding string // "", EncodingZstd or EncodingS2
	Run      string // "" when the producer sent no segmq-run
}

func (m meta) raw() bool { return m.Transfer == "" }

// MaxTransferID bounds a transfer id; both ends check it.
const MaxTransferID = 128

// CheckTransferID says what is wrong with a transfer id: 1 to
// MaxTransferID printable ASCII characters.
func CheckTransferID(id string) error {
	if id == "" || len(id) > MaxTransferID {
		return fmt.Errorf("transfer id must be 1 to %d characters, got %d", MaxTransferID, len(id))
	}
	for _, c := range []byte(id) {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("transfer id %.40q: only printable ASCII without spaces", id)
		}
	}
	return nil
}

// CheckRun says what is wrong with a run nonce: 1 to MaxRun hex digits.
func CheckRun(run string) error {
	if run == "" || len(run) > MaxRun {
		return fmt.Errorf("run must be 1 to %d hex digits, got %d characters", MaxRun, len(run))
	}
	for _, c := range []byte(run) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return fmt.Errorf("run %.40q: only hex digits", run)
		}
	}
	return nil
}

// NewRun returns a new run nonce: 64 random bits in hex.
func NewRun() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case int:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	}
	return 0, false
}

// parseMeta reads segmq's headers. A message with none of them is a
// seed-format segment. Present but malformed headers are an error: such
// a message is dead-lettered, never guessed at.
func parseMeta(h amqp.Table) (meta, error) {
	var m meta
	tv, ok := h[HdrTransfer]
	if !ok {
		for _, k := range []string{HdrMSS, HdrSize, HdrCRC, HdrSHA256, HdrEncoding, HdrRun} {
			if _, ok := h[k]; ok {
				return m, fmt.Errorf("header %s without %s", k, HdrTransfer)
			}
		}
		return m, nil
	}
	s, ok := tv.(string)
	if !ok || CheckTransferID(s) != nil {
		return m, fmt.Errorf("header %s: want 1 to %d printable ASCII characters, got %T %.40q", HdrTransfer, MaxTransferID, tv, tv)
	}
	m.Transfer = s
	mss, ok := asInt(h[HdrMSS])
	if !ok || mss < 1 || mss > math.MaxInt32 {
		return m, fmt.Errorf("header %s: want an integer >= 1, got %v", HdrMSS, h[HdrMSS])
	}
	m.MSS = int(mss)
	if v, present := h[HdrSize]; present {
		size, ok := asInt(v)
		if !ok || size < 0 {
			return m, fmt.Errorf("header %s: want an integer >= 0, got %v", HdrSize, v)
		}
		m.Size, m.HasSize = size, true
	}
	if v, present := h[HdrCRC]; present {
		crc, ok := asInt(v)
		if !ok || crc < 0 || crc > math.MaxUint32 {
			return m, fmt.Errorf("header %s: want a uint32, got %v", HdrCRC, v)
		}
		m.CRC, m.HasCRC = uint32(crc), true
	}
	if v, present := h[HdrSHA256]; present {
		sha, ok := v.(string)
		if b, err := hex.DecodeString(sha); !ok || err != nil || len(b) != 32 {
			return m, fmt.Errorf("header %s: want 64 hex digits, got %v", HdrSHA256, v)
		}
		m.SHA256 = sha
	}
	if v, present := h[HdrEncoding]; present {
		enc, ok := v.(string)
		if !ok || enc != EncodingZstd && enc != EncodingS2 {
			return m, fmt.Errorf("header %s: unknown encoding %.40q (this consumer decodes %q and %q; upgrade it, or send with producer --compress none)", HdrEncoding, fmt.Sprint(v), EncodingZstd, EncodingS2)
		}
		m.Encoding = enc
	}
	if v, present := h[HdrRun]; present {
		run, ok := v.(string)
		if !ok || CheckRun(run) != nil {
			return m, fmt.Errorf("header %s: want 1 to %d hex digits, got %T %.40q", HdrRun, MaxRun, v, v)
		}
		m.Run = run
	}
	return m, nil
}
