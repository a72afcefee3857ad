package snapfile

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
)

// verifier runs Verify as three stages:
//
//	frame (1 goroutine)    reads, hashes and frames the file; copies
//	                       records into batches of about batchBytes
//	decode (workers)       decodes each batch: scanRow for a canonical
//	                       Row, proto.Unmarshal for anything else
//	check (the caller)     takes batches in file order and applies the
//	                       same checks, in the same order, as one pass
//
// A framing error (or io.EOF) ends the last batch, after its records, so
// a record's problem is reported before a framing problem further on,
// exactly as a single pass would. At most maxBatches batches exist; they
// go back to the framer through free once checked. A batch holds about
// batchBytes, or one record when a record is larger (up to recordio's
// 64 MiB limit); such a batch's buffer is dropped once checked, so a few
// huge records do not keep their memory for the rest of the file.
type verifier struct {
	hash    *countingHash
	rr      *recordio.Reader
	workers int
	per     int // records per batch, at most

	work  chan *batch // owned by the framer: closed when it returns
	order chan *batch // the same batches, in file order; owned by the framer
	free  chan *batch // checked batches, back to the framer; never closed
	made  int         // batches allocated (framer only)
	wg    sync.WaitGroup
}

const (
	batchBytes   = 1 << 20
	batchRecords = 16 << 10
)

type batch struct {
	buf  []byte // the records, back to back
	recs []span
	end  int64 // file offset after the last record
	last error // nil, or what ended the stream after these records: io.EOF or a framing error

	res   []decoded
	kinds []uint8       // value kinds of the rows read by scanRow
	done  chan struct{} // closed by the worker that decoded the batch
}

type span struct {
	off        int64 // file offset of the record's length prefix
	start, end int   // the record in buf
}

type decoded struct {
	rec    *pb.Record // nil when scanRow read a row
	err    error      // proto.Unmarshal's error
	table  uint32     // the row's table id (scanRow)
	k0, k1 int        // the row's value kinds: kinds[k0:k1] (scanRow)
}

func newVerifier(r io.Reader, workers, perBatch int) *verifier {
	workers = max(workers, 1)
	h := &countingHash{r: r, h: sha256.New()}
	n := 2*workers + 2
	return &verifier{
		hash: h, rr: recordio.NewReader(h), workers: workers, per: max(perBatch, 1),
		work: make(chan *batch, n), order: make(chan *batch, n), free: make(chan *batch, n),
	}
}

func (v *verifier) maxBatches() int { return cap(v.free) }

// start runs the framer and the workers until the stream ends or ctx is
// done.
func (v *verifier) start(ctx context.Context) {
	v.wg.Add(1 + v.workers)
	go func() {
		defer v.wg.Done()
		v.frame(ctx)
	}()
	for range v.workers {
		go func() {
			defer v.wg.Done()
			for b := range v.work {
				b.decode()
				close(b.done)
			}
		}()
	}
}

func (v *verifier) frame(ctx context.Context) {
	defer close(v.work)
	defer close(v.order)
	for {
		var b *batch
		select {
		case b = <-v.free:
		default:
			if v.made < v.maxBatches() {
				v.made++
				b = &batch{}
			} else {
				select {
				case b = <-v.free:
				case <-ctx.Done():
					return
				}
			}
		}
		b.fill(v.rr, v.per)
		b.done = make(chan struct{})
		// order has room for every batch there is, so this send never waits.
		v.order <- b
		select {
		case v.work <- b:
		case <-ctx.Done():
			return
		}
		if b.last != nil {
			return
		}
	}
}

// fill frames records into b until it is full or the stream ends.
func (b *batch) fill(rr *recordio.Reader, per int) {
	b.buf, b.recs, b.last = b.buf[:0], b.recs[:0], nil
	for len(b.buf) < batchBytes && len(b.recs) < per {
		off := rr.Offset()
		rec, err := rr.Next()
		if err != nil {
			b.last = err
			break
		}
		start := len(b.buf)
		b.buf = append(b.buf, rec...)
		b.recs = append(b.recs, span{off: off, start: start, end: len(b.buf)})
	}
	b.end = rr.Offset()
}

func (b *batch) decode() {
	b.res, b.kinds = b.res[:0], b.kinds[:0]
	for _, s := range b.recs {
		raw := b.buf[s.start:s.end]
		k0 := len(b.kinds)
		table, kinds, ok := scanRow(raw, b.kinds)
		if ok {
			b.kinds = kinds
			b.res = append(b.res, decoded{table: table, k0: k0, k1: len(kinds)})
			continue
		}
		b.kinds = kinds[:k0]
		rec := new(pb.Record)
		err := proto.Unmarshal(raw, rec)
		b.res = append(b.res, decoded{rec: rec, err: err})
	}
}

// check applies Verify's checks to the batches in file order.
func (v *verifier) check(ctx context.Context, progress func(int64)) (Summary, error) {
	var (
		sum     Summary
		tables  = map[uint32]*pb.Table{}
		order   []uint32
		rows    = map[uint32]uint64{}
		trailer *pb.Trailer
		idx     int64
		kinds   []uint8
		scratch []uint8 // the kinds of rows proto.Unmarshal decoded
	)
	fail := func(off int64, err error, format string, args ...any) error {
		return &Error{Offset: off, Record: idx, Err: err, Detail: fmt.Sprintf(format, args...)}
	}
	for b := range v.order {
		select {
		case <-b.done:
		case <-ctx.Done():
			return sum, ctx.Err()
		}
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		for i, d := range b.res {
			off := b.recs[i].off
			if d.err != nil {
				return sum, fail(off, ErrDecode, "%v", d.err)
			}
			if trailer != nil {
				return sum, fail(off, ErrAfterTrailer, "")
			}
			if d.rec == nil || d.rec.GetRow() != nil {
				var table uint32
				if d.rec == nil {
					table, kinds = d.table, b.kinds[d.k0:d.k1]
				} else {
					scratch = appendKinds(scratch[:0], d.rec.GetRow())
					table, kinds = d.rec.GetRow().GetTableId(), scratch
				}
				if idx == 0 {
					return sum, fail(off, ErrNoHeader, "found a row")
				}
				if err := checkRow(table, kinds, tables); err != nil {
					return sum, fail(off, err, "%s", rowDetail(table, len(kinds), tables, err))
				}
				rows[table]++
				sum.Rows++
				idx++
				continue
			}
			switch k := d.rec.Kind.(type) {
			case *pb.Record_Header:
				if idx != 0 {
					return sum, fail(off, ErrOrder, "a second header")
				}
				sum.Database = k.Header.GetDatabase()
			case *pb.Record_Table:
				if idx == 0 {
					return sum, fail(off, ErrNoHeader, "found a table")
				}
				t := k.Table
				if _, dup := tables[t.GetId()]; dup {
					return sum, fail(off, ErrDuplicateTbl, "table id %d (%s)", t.GetId(), t.GetName())
				}
				tables[t.GetId()] = t
				order = append(order, t.GetId())
			case *pb.Record_Trailer:
				if idx == 0 {
					return sum, fail(off, ErrNoHeader, "found a trailer")
				}
				trailer = k.Trailer
				if err := checkTrailer(trailer, order, rows, sum.Rows); err != nil {
					return sum, fail(off, ErrCountMismatch, "%v", err)
				}
			default:
				return sum, fail(off, ErrDecode, "record has no kind")
			}
			idx++
		}
		if progress != nil {
			progress(b.end)
		}
		last, end := b.last, b.end
		if cap(b.buf) > 4*batchBytes {
			b.buf = nil
		}
		v.free <- b
		switch {
		case last == io.EOF:
			sum.Records, sum.Bytes, sum.Tables = idx, end, len(tables)
			if idx == 0 {
				return sum, &Error{Offset: 0, Err: ErrNoHeader, Detail: "the file is empty"}
			}
			if trailer == nil {
				return sum, &Error{Offset: end, Record: idx, Err: ErrNoTrailer,
					Detail: fmt.Sprintf("%d records, %d rows read", idx, sum.Rows)}
			}
			return sum, nil
		case last != nil:
			return sum, framingError(last, idx)
		}
	}
	// The framer stopped without a last batch: ctx is done.
	return sum, ctx.Err()
}
