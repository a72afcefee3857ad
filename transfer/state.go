package transfer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/segmq/segmq/internal/fsutil"
)

// The consumer's state file, <out>.part.state, written atomically before
// every ack so that everything acked is on disk and recorded:
//
//	"SGMQSTATE1\n" <json partState> "\n" <segment.Assembler binary>
const stateMagic = "SGMQSTATE1\n"

type partState struct {
	Transfer string `json:"transfer"` // "" for a seed-format transfer
	MSS      int    `json:"mss"`
	Size     int64  `json:"size"`
	HasSize  bool   `json:"has_size"`
	SHA256   string `json:"sha256,omitempty"`
}

func saveState(path string, st partState, asm []byte) error {
	js, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(path, func(f *os.File) error {
		var b bytes.Buffer
		b.WriteString(stateMagic)
		b.Write(js)
		b.WriteByte('\n')
		b.Write(asm)
		_, err := f.Write(b.Bytes())
		return err
	})
}

var errNoState = errors.New("no state")

func loadState(path string) (partState, []byte, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return partState{}, nil, errNoState
	}
	if err != nil {
		return partState{}, nil, err
	}
	rest, ok := bytes.CutPrefix(raw, []byte(stateMagic))
	js, asm, ok2 := bytes.Cut(rest, []byte("\n"))
	var st partState
	if !ok || !ok2 || json.Unmarshal(js, &st) != nil {
		return partState{}, nil, fmt.Errorf("state file %s is corrupt; remove it with --restart", path)
	}
	return st, asm, nil
}
