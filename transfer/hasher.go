package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
)

// hasher computes the SHA-256 of the file being assembled while it is
// assembled, in its own goroutine, so that the consumer never reads the
// whole file back at the end and the hash overlaps the network.
//
// The receiver hands it the file's contiguous prefix as the prefix grows
// (see receiver.advanceHash): a payload placed in order is hashed from
// memory; segments that were placed ahead of a gap, or before a restart,
// are read back from the .part once the gap closes, as one range.
type hasher struct {
	next uint32 // owned by the receiver: the first seq not yet handed over

	jobs   chan hashJob // owned by the receiver
	closed bool
	done   chan struct{}
	// Set by the hasher goroutine before done is closed.
	sha hash.Hash
	off int64 // bytes hashed
	err error
}

// hashJob is the next piece of the file: payload, or n bytes read at off.
type hashJob struct {
	off     int64
	n       int64
	payload []byte
	buf     *[]byte // payload's pooled buffer, returned to unpackBufs once hashed
}

// hashQueue bounds the payloads held for hashing (each is a delivery
// body the receiver is done with).
const hashQueue = 32

func newHasher(f io.ReaderAt) *hasher {
	h := &hasher{jobs: make(chan hashJob, hashQueue), done: make(chan struct{}), sha: sha256.New()}
	go h.run(f, h.jobs)
	return h
}

func (h *hasher) run(f io.ReaderAt, jobs <-chan hashJob) {
	defer close(h.done)
	var buf []byte
	for j := range jobs {
		if h.err != nil {
			continue // drain
		}
		if j.off != h.off {
			h.err = fmt.Errorf("internal error: hashing at offset %d, next piece starts at %d", h.off, j.off)
			continue
		}
		if j.payload != nil {
			h.sha.Write(j.payload)
			h.off += int64(len(j.payload))
			if j.buf != nil {
				unpackBufs.Put(j.buf)
			}
			continue
		}
		if buf == nil {
			buf = make([]byte, 1<<20)
		}
		n, err := io.CopyBuffer(h.sha, io.NewSectionReader(f, j.off, j.n), buf)
		h.off += n
		if err == nil && n != j.n {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			h.err = fmt.Errorf("read back for SHA-256 at offset %d: %w", j.off, err)
		}
	}
}

func (h *hasher) add(j hashJob) { h.jobs <- j }

// sum waits for everything handed over and returns the digest and the
// number of bytes hashed. The hasher is finished afterwards.
func (h *hasher) sum() (string, int64, error) {
	h.stop()
	if h.err != nil {
		return "", h.off, h.err
	}
	return hex.EncodeToString(h.sha.Sum(nil)), h.off, nil
}

// stop ends the goroutine; it may be called more than once.
func (h *hasher) stop() {
	if !h.closed {
		close(h.jobs)
		h.closed = true
	}
	<-h.done
}
