package transfer

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/segmq/segmq/internal/fsutil"
)

// sendState is the producer's progress, kept in IN.segmq-send while a
// transfer runs and removed when it completes. Confirmed is a watermark:
// every seq below it was confirmed by the broker.
type sendState struct {
	Transfer  string `json:"transfer"`
	MSS       int    `json:"mss"`
	Size      int64  `json:"size"`
	ModTime   int64  `json:"mtime_ns"`
	Confirmed uint32 `json:"confirmed"`
}

// loadResume reads the state file: with Resume it continues that
// transfer; without, an existing state is an error that says what to do.
func (p *publisher) loadResume() error {
	if p.cfg.State == "-" {
		if p.cfg.Resume {
			return errors.New("--resume needs a state file")
		}
		return nil
	}
	raw, err := os.ReadFile(p.cfg.State)
	if errors.Is(err, os.ErrNotExist) {
		if p.cfg.Resume {
			return fmt.Errorf("--resume: no interrupted transfer recorded in %s", p.cfg.State)
		}
		return nil
	}
	if err != nil {
		return err
	}
	var st sendState
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("state file %s is corrupt (%v); delete it to start a new transfer", p.cfg.State, err)
	}
	if !p.cfg.Resume {
		return fmt.Errorf("%w: transfer %s, %d segments confirmed, recorded in %s; pass --resume to continue it, or delete that file to start a new transfer",
			ErrUnfinished, st.Transfer, st.Confirmed, p.cfg.State)
	}
	switch {
	case st.Size != p.sendState.Size || st.ModTime != p.sendState.ModTime:
		return fmt.Errorf("cannot resume transfer %s: the input changed since (size %d→%d); delete %s to start a new transfer", st.Transfer, st.Size, p.sendState.Size, p.cfg.State)
	case st.MSS != p.cfg.MSS:
		return fmt.Errorf("cannot resume transfer %s: it used --mss %d, not %d", st.Transfer, st.MSS, p.cfg.MSS)
	case p.cfg.Transfer != "" && p.cfg.Transfer != st.Transfer:
		return fmt.Errorf("cannot resume: %s records transfer %s, not %s", p.cfg.State, st.Transfer, p.cfg.Transfer)
	}
	p.sendState = st
	p.next = st.Confirmed
	p.res.Resumed = st.Confirmed
	p.log.Info("resuming transfer", "transfer", st.Transfer, "confirmed", st.Confirmed)
	return nil
}

// hashPrefix brings the SHA-256 up to the resume point by reading the
// already-confirmed prefix of the file once.
func (p *publisher) hashPrefix() error {
	if p.next == 0 {
		return nil
	}
	n := min(int64(p.next)*int64(p.cfg.MSS), p.sendState.Size)
	if _, err := io.Copy(p.sha, io.NewSectionReader(p.file, 0, n)); err != nil {
		return err
	}
	if p.next == p.split.Total() {
		p.sum = hashHex(p.sha)
	}
	return nil
}

// confirmed advances the watermark after the head of the window was
// confirmed, and saves it now and then.
func (p *publisher) confirmed() {
	low := p.next
	for _, pd := range p.inflight {
		low = min(low, pd.seq)
	}
	for _, seq := range p.retry {
		low = min(low, seq)
	}
	if low <= p.sendState.Confirmed {
		return
	}
	p.sendState.Confirmed = low
	if p.cfg.State == "-" || p.stateBroken || (p.lastConfirm.Sub(p.lastSave) < saveEvery && low < p.split.Total()) {
		return
	}
	p.lastSave = p.lastConfirm
	if err := p.saveState(); err != nil {
		p.stateBroken = true
		p.log.Warn("cannot record progress; this transfer will not be resumable", "state", p.cfg.State, "err", err)
	}
}

const saveEvery = 250e6 // ns: 250ms

func (p *publisher) saveState() error {
	js, err := json.Marshal(p.sendState)
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(p.cfg.State, func(f *os.File) error {
		_, err := f.Write(js)
		return err
	})
}

func (p *publisher) removeState() {
	if p.cfg.State == "-" {
		return
	}
	if err := os.Remove(p.cfg.State); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.log.Warn("remove state", "err", err)
	}
}

func hashHex(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
