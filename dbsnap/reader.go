package dbsnap

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
	"github.com/segmq/segmq/snapfile"
)

// Reader walks a snapshot for a restore or a verify: NewReader reads the
// Header and the Table records, Next the rows one by one, and the stream
// must end with a Trailer whose counts match, or Next fails. Errors are
// *snapfile.Error (with the byte offset) wrapping snapfile's sentinels.
type Reader struct {
	Header *pb.Header
	Tables []*pb.Table // in declaration order

	rr      *recordio.Reader
	byID    map[uint32]*pb.Table
	counts  map[uint32]uint64
	total   uint64
	idx     int64 // records read
	pending []byte
	pendOff int64
	cur     Row
	unread  bool
	done    bool
	err     error
	rec     pb.Record
}

// Row is one row of a snapshot; Values point into the reader's buffer and
// are valid until the next call to Next.
type Row struct {
	Table  *pb.Table
	N      uint64 // 1-based row number within its table
	Values []Value
	Offset int64 // byte offset of the record
}

// NewReader reads the Header and the Tables of a snapshot.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{rr: recordio.NewReader(r), byID: map[uint32]*pb.Table{}, counts: map[uint32]uint64{}}
	b, off, err := sr.next()
	if err == io.EOF {
		return nil, &snapfile.Error{Err: snapfile.ErrNoHeader, Detail: "the file is empty"}
	}
	if err != nil {
		return nil, err
	}
	if IsRowRecord(b) || proto.Unmarshal(b, &sr.rec) != nil || sr.rec.GetHeader() == nil {
		return nil, sr.fail(off, snapfile.ErrNoHeader, "")
	}
	sr.Header = sr.rec.GetHeader()
	for {
		b, off, err := sr.next()
		if err == io.EOF {
			return sr, nil // Next reports the missing trailer
		}
		if err != nil {
			return nil, err
		}
		var rec pb.Record
		if IsRowRecord(b) || proto.Unmarshal(b, &rec) != nil || rec.GetTable() == nil {
			sr.pending, sr.pendOff = append([]byte(nil), b...), off
			return sr, nil
		}
		t := rec.GetTable()
		if _, dup := sr.byID[t.GetId()]; dup {
			return nil, sr.fail(off, snapfile.ErrDuplicateTbl, "table id %d (%s)", t.GetId(), t.GetName())
		}
		sr.byID[t.GetId()] = t
		sr.Tables = append(sr.Tables, t)
	}
}

func (sr *Reader) fail(off int64, err error, format string, args ...any) error {
	return &snapfile.Error{Offset: off, Record: sr.idx - 1, Err: err, Detail: fmt.Sprintf(format, args...)}
}

func (sr *Reader) next() ([]byte, int64, error) {
	off := sr.rr.Offset()
	b, err := sr.rr.Next()
	if err == io.EOF {
		return nil, off, err
	}
	if err != nil {
		var ce *recordio.CorruptError
		if errors.As(err, &ce) {
			return nil, off, &snapfile.Error{Offset: ce.Offset, Record: sr.idx, Err: ce.Err, Detail: ce.Detail}
		}
		return nil, off, err
	}
	sr.idx++
	return b, off, nil
}

// Unread makes the next call to Next return the row it returned last.
func (sr *Reader) Unread() { sr.unread = true }

// Next returns the next row, or io.EOF after a Trailer whose counts match
// the rows read. A missing trailer, a record that does not decode, a row
// of an unknown table or with the wrong number of values is an error.
func (sr *Reader) Next() (*Row, error) {
	if sr.unread {
		sr.unread = false
		return &sr.cur, nil
	}
	if sr.err != nil {
		return nil, sr.err
	}
	row, err := sr.read()
	if err != nil {
		sr.err = err
		return nil, err
	}
	return row, nil
}

func (sr *Reader) read() (*Row, error) {
	var (
		b   []byte
		off int64
		err error
	)
	if sr.pending != nil {
		b, off, sr.pending = sr.pending, sr.pendOff, nil
	} else {
		b, off, err = sr.next()
	}
	if err == io.EOF {
		if sr.done {
			return nil, io.EOF
		}
		return nil, &snapfile.Error{Offset: off, Record: sr.idx, Err: snapfile.ErrNoTrailer,
			Detail: fmt.Sprintf("%d rows read", sr.total)}
	}
	if err != nil {
		return nil, err
	}
	if sr.done {
		return nil, sr.fail(off, snapfile.ErrAfterTrailer, "")
	}
	if IsRowRecord(b) {
		id, vals, err := DecodeRowRecord(b, sr.cur.Values)
		sr.cur.Values = vals
		if err != nil {
			return nil, sr.fail(off, snapfile.ErrDecode, "%v", err)
		}
		t := sr.byID[id]
		if t == nil {
			return nil, sr.fail(off, snapfile.ErrUnknownTable, "table id %d", id)
		}
		if len(vals) != len(t.Columns) {
			return nil, sr.fail(off, snapfile.ErrColumnCount, "%s has %d columns, row has %d values", t.GetName(), len(t.Columns), len(vals))
		}
		for i, v := range vals {
			if v.Kind == KindUnset {
				return nil, sr.fail(off, snapfile.ErrDecode, "%s: column %s: value has no kind", t.GetName(), t.Columns[i].GetName())
			}
		}
		sr.counts[id]++
		sr.total++
		sr.cur.Table, sr.cur.N, sr.cur.Offset = t, sr.counts[id], off
		return &sr.cur, nil
	}
	if err := proto.Unmarshal(b, &sr.rec); err != nil {
		return nil, sr.fail(off, snapfile.ErrDecode, "%v", err)
	}
	switch k := sr.rec.Kind.(type) {
	case *pb.Record_Trailer:
		if err := sr.checkTrailer(k.Trailer); err != nil {
			return nil, sr.fail(off, snapfile.ErrCountMismatch, "%v", err)
		}
		sr.done = true
		// Anything after the trailer is an error; the end is io.EOF.
		return sr.read()
	case *pb.Record_Table:
		return nil, sr.fail(off, snapfile.ErrOrder, "table %s declared after rows (not supported)", k.Table.GetName())
	case *pb.Record_Header:
		return nil, sr.fail(off, snapfile.ErrOrder, "a second header")
	}
	return nil, sr.fail(off, snapfile.ErrDecode, "record has no kind")
}

func (sr *Reader) checkTrailer(tr *pb.Trailer) error {
	if tr.GetTotalRows() != sr.total {
		return fmt.Errorf("trailer says %d rows in all, file has %d", tr.GetTotalRows(), sr.total)
	}
	seen := map[uint32]bool{}
	for _, tc := range tr.Tables {
		if got := sr.counts[tc.GetTableId()]; got != tc.GetRows() {
			return fmt.Errorf("table id %d: trailer says %d rows, file has %d", tc.GetTableId(), tc.GetRows(), got)
		}
		seen[tc.GetTableId()] = true
	}
	for id, n := range sr.counts {
		if !seen[id] && n != 0 {
			return fmt.Errorf("table id %d has %d rows but no trailer count", id, n)
		}
	}
	return nil
}

// Count is the number of rows read so far for table id.
func (sr *Reader) Count(id uint32) uint64 { return sr.counts[id] }
