package snapfile

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
)

// Summary describes a verified snapshot.
type Summary struct {
	Records  int64
	Bytes    int64
	SHA256   string // hex
	Database string
	Tables   int
	Rows     int64
}

// countingHash feeds a hash and counts bytes as the reader reads.
type countingHash struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *countingHash) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// Verify walks every record of a snapshot, decodes it and checks the
// record order, every row against its table's columns, and the trailer's
// counts. It returns a Summary, or an *Error at the offset of the first
// problem (for a missing trailer, the end of the file). progress, if not
// nil, is called with the bytes checked so far, about every MiB.
//
// Records are decoded on GOMAXPROCS goroutines (see verifier) and
// checked in file order, so the verdict and its offset do not depend on
// the number of goroutines.
func Verify(ctx context.Context, r io.Reader, progress func(bytes int64)) (Summary, error) {
	return verify(ctx, r, progress, runtime.GOMAXPROCS(0), batchRecords)
}

// verify is Verify on workers goroutines with at most perBatch records in
// a batch (tests use small batches to cross batch boundaries often).
func verify(ctx context.Context, r io.Reader, progress func(bytes int64), workers, perBatch int) (Summary, error) {
	ctx, cancel := context.WithCancel(ctx)
	v := newVerifier(r, workers, perBatch)
	v.start(ctx)
	sum, err := v.check(ctx, progress)
	cancel()
	v.wg.Wait()
	if err != nil {
		return sum, err
	}
	sum.SHA256 = hex.EncodeToString(v.hash.h.Sum(nil))
	return sum, nil
}

// framingError turns a recordio error into an *Error for record idx.
func framingError(err error, idx int64) error {
	var ce *recordio.CorruptError
	if errors.As(err, &ce) {
		return &Error{Offset: ce.Offset, Record: idx, Err: ce.Err, Detail: ce.Detail}
	}
	return err
}

var errNullNotAllowed = errors.New("NULL in a NOT NULL column")

// checkRow checks a row's values, given by kind (the Value oneof's field
// numbers, 0 for a value with none), against its table's columns.
func checkRow(tableID uint32, kinds []uint8, tables map[uint32]*pb.Table) error {
	t, ok := tables[tableID]
	if !ok {
		return ErrUnknownTable
	}
	if len(kinds) != len(t.Columns) {
		return ErrColumnCount
	}
	for i, k := range kinds {
		c := t.Columns[i]
		var ok bool
		switch k {
		case kindNull:
			if !c.Nullable {
				return fmt.Errorf("%w: column %s: %w", ErrTypeMismatch, c.Name, errNullNotAllowed)
			}
			ok = true
		case kindInt64:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_INT64
		case kindFloat64:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_FLOAT64
		case kindText:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_TEXT
		case kindBytes:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_BYTES
		case kindBool:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_BOOL
		case kindTimestamp:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_TIMESTAMP
		case kindPg:
			ok = c.PgEncoding != pb.PgEncoding_PG_ENCODING_NONE
		}
		if !ok {
			if c.PgEncoding != pb.PgEncoding_PG_ENCODING_NONE {
				return fmt.Errorf("%w: column %s holds %v values", ErrTypeMismatch, c.Name, c.PgEncoding)
			}
			return fmt.Errorf("%w: column %s is %v", ErrTypeMismatch, c.Name, c.Type)
		}
	}
	return nil
}

// appendKinds appends the kind of each of a decoded row's values.
func appendKinds(kinds []uint8, row *pb.Row) []uint8 {
	for _, v := range row.Values {
		var k uint8
		switch v.GetKind().(type) {
		case *pb.Value_Null:
			k = kindNull
		case *pb.Value_Int64:
			k = kindInt64
		case *pb.Value_Float64:
			k = kindFloat64
		case *pb.Value_Text:
			k = kindText
		case *pb.Value_Bytes:
			k = kindBytes
		case *pb.Value_Bool:
			k = kindBool
		case *pb.Value_TimestampMicros:
			k = kindTimestamp
		case *pb.Value_Pg:
			k = kindPg
		}
		kinds = append(kinds, k)
	}
	return kinds
}

func rowDetail(tableID uint32, values int, tables map[uint32]*pb.Table, err error) string {
	t := tables[tableID]
	switch {
	case t == nil:
		return fmt.Sprintf("table id %d", tableID)
	case errors.Is(err, ErrColumnCount):
		return fmt.Sprintf("%s has %d columns, row has %d values", t.Name, len(t.Columns), values)
	}
	return fmt.Sprintf("%s: %v", t.Name, errors.Unwrap(err))
}

func checkTrailer(tr *pb.Trailer, order []uint32, rows map[uint32]uint64, total int64) error {
	if tr.GetTotalRows() != uint64(total) {
		return fmt.Errorf("trailer says %d rows in all, file has %d", tr.GetTotalRows(), total)
	}
	seen := map[uint32]bool{}
	for _, tc := range tr.Tables {
		if got := rows[tc.GetTableId()]; got != tc.GetRows() {
			return fmt.Errorf("table id %d: trailer says %d rows, file has %d", tc.GetTableId(), tc.GetRows(), got)
		}
		seen[tc.GetTableId()] = true
	}
	for _, id := range order {
		if !seen[id] && rows[id] != 0 {
			return fmt.Errorf("table id %d has %d rows but no trailer count", id, rows[id])
		}
	}
	return nil
}

// Check is the fast framing walk: it reads every length prefix, decodes
// only the first and last records, and checks that they are a Header and a
// Trailer. It is what the producer runs before sending a file.
func Check(r io.Reader) (records, bytes int64, err error) {
	rr := recordio.NewReader(r)
	var first, last []byte
	var lastOff int64
	for ; ; records++ {
		off := rr.Offset()
		b, err := rr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return records, rr.Offset(), framingError(err, records)
		}
		if records == 0 {
			first = append([]byte(nil), b...)
		}
		last, lastOff = append(last[:0], b...), off
	}
	var rec pb.Record
	if records == 0 || proto.Unmarshal(first, &rec) != nil || rec.GetHeader() == nil {
		return records, rr.Offset(), &Error{Offset: 0, Err: ErrNoHeader}
	}
	if proto.Unmarshal(last, &rec) != nil || rec.GetTrailer() == nil {
		return records, rr.Offset(), &Error{Offset: rr.Offset(), Record: records, Err: ErrNoTrailer,
			Detail: fmt.Sprintf("the last record, at offset %d, is not a trailer", lastOff)}
	}
	return records, rr.Offset(), nil
}

// Cat writes every record of a snapshot to w as one line of JSON
// (protojson), and stops at the first framing or decoding error.
func Cat(r io.Reader, w io.Writer) (int64, error) {
	rr := recordio.NewReader(r)
	opts := protojson.MarshalOptions{}
	var rec pb.Record
	var out []byte
	var n int64
	for ; ; n++ {
		off := rr.Offset()
		b, err := rr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, framingError(err, n)
		}
		if err := proto.Unmarshal(b, &rec); err != nil {
			return n, &Error{Offset: off, Record: n, Err: ErrDecode, Detail: err.Error()}
		}
		out, err = opts.MarshalAppend(out[:0], &rec)
		if err != nil {
			return n, err
		}
		out = append(out, '\n')
		if _, err := w.Write(out); err != nil {
			return n, err
		}
	}
}
