package transfer

import (
	"fmt"
	"hash"
	"hash/crc32"

	"github.com/segmq/segmq/segment"
)

// The producer is a two-stage pipeline. The read-ahead stage (this file)
// reads segments in order into a small ring of reused buffers and computes
// each payload's CRC-32C and the file's running SHA-256 as it goes, once
// per byte; the publisher takes finished blocks, publishes them and hands
// the buffers back. The hashing overlaps the publisher's wait for
// confirms instead of adding to it.
//
// With compression, the stage also packs each payload (packer.go) and
// keeps whichever of the two is smaller, so incompressible segments cost
// nothing on the wire. The CRC-32C is of the payload as sent.
//
// Memory is the ring: readAheadBytes, at least two segments (twice that
// with compression).

// readAheadBytes is how far the read-ahead stage may run ahead.
const readAheadBytes = 2 << 20

// block is one segment ready to publish.
type block struct {
	seq    uint32
	body   []byte // header and payload as sent, in slot
	slot   *slot  // the ring buffers body lives in; give them back with release
	enc    string // the payload's encoding (HdrEncoding), "" as read
	plain  int    // payload bytes before packing
	crc    uint32 // CRC-32C of the payload as sent
	rawCRC uint32 // CRC-32C of the payload as read
	whole  uint32 // CRC-32C of the payloads of segments [0, seq] as read
	sum    string // the file's SHA-256, on the last segment only
	err    error
}

type slot struct{ raw, packed []byte }

type readAhead struct {
	blocks chan block
	free   chan *slot
	stop   chan struct{}
	done   chan struct{}
	pack   *packer // nil: no compression
}

// startReadAhead reads segments [from, total) of split. sha and fold hold
// the SHA-256 and CRC fold of the payloads before from; the stage owns
// them from now on. The last segment carries the SHA-256 only if the fold
// of every payload read equals wantFold (the input's fold when it was
// checked); otherwise it is an ErrInputChanged error. compress is a
// --compress mode ("", none, zstd, s2, auto).
func startReadAhead(split *segment.Splitter, from uint32, sha hash.Hash, fold *crcFold, wantFold string, compress string) (*readAhead, error) {
	depth := min(max(readAheadBytes/(segment.HeaderSize+split.MSS()), 2), 64)
	ra := &readAhead{blocks: make(chan block, depth), free: make(chan *slot, depth),
		stop: make(chan struct{}), done: make(chan struct{})}
	var err error
	if ra.pack, err = newPacker(compress, split.MSS()); err != nil {
		return nil, err
	}
	for range depth {
		sl := &slot{raw: make([]byte, segment.HeaderSize+split.MSS())}
		if ra.pack != nil {
			sl.packed = make([]byte, 0, segment.HeaderSize+ra.pack.bound(split.MSS()))
		}
		ra.free <- sl
	}
	go ra.run(split, from, sha, fold, wantFold)
	return ra, nil
}

func (ra *readAhead) run(split *segment.Splitter, from uint32, sha hash.Hash, fold *crcFold, wantFold string) {
	defer close(ra.done)
	defer close(ra.blocks)
	total := split.Total()
	for seq := from; seq < total; seq++ {
		var sl *slot
		select {
		case sl = <-ra.free:
		case <-ra.stop:
			return
		}
		b := block{seq: seq, slot: sl}
		b.body, b.err = split.Segment(seq, sl.raw)
		if b.err == nil {
			payload := b.body[segment.HeaderSize:]
			b.plain = len(payload)
			sha.Write(payload)
			b.rawCRC = crc32.Checksum(payload, castagnoli)
			b.crc = b.rawCRC
			fold.add(b.rawCRC, len(payload))
			b.whole = fold.whole
			if seq == total-1 {
				if fold.sum() != wantFold {
					b.err = fmt.Errorf("%w: its segments' CRC-32Cs no longer match those of the bytes checked before the send; the last segment, which carries the SHA-256, was not published", ErrInputChanged)
				} else {
					b.sum = hashHex(sha)
				}
			}
			if ra.pack != nil && len(payload) > 0 {
				if packed, enc := ra.pack.pack(sl.packed[:0], b.body); enc != "" {
					b.body, b.enc = packed, enc
					b.crc = crc32.Checksum(packed[segment.HeaderSize:], castagnoli)
					sl.packed = packed[:0] // keep a grown buffer
				}
			}
		}
		select {
		case ra.blocks <- b:
		case <-ra.stop:
			return
		}
		if b.err != nil {
			return
		}
	}
}

// release gives a block's buffer back to the ring once it is published;
// the packer learns the publisher's rate from it.
func (ra *readAhead) release(b block) {
	if ra.pack != nil {
		ra.pack.published(len(b.body) - segment.HeaderSize)
	}
	ra.free <- b.slot
}

// close stops the stage and waits for it.
func (ra *readAhead) close() {
	close(ra.stop)
	<-ra.done
}
