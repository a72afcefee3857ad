package snapfile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
)

// verifyReference is Verify as it was before it decoded in parallel
// (commit 77ce015): one goroutine, proto.Unmarshal for every record. The
// tests hold the parallel Verify to its verdicts and offsets.
//
// It walks every record of a snapshot, decodes it and checks the
// record order, every row against its table's columns, and the trailer's
// counts. It returns a Summary, or an *Error at the offset of the first
// problem (for a missing trailer, the end of the file). progress, if not
// nil, is called with the bytes read so far every 4096 records.
func verifyReference(ctx context.Context, r io.Reader, progress func(bytes int64)) (Summary, error) {
	ch := &countingHash{r: r, h: sha256.New()}
	rr := recordio.NewReader(ch)
	var (
		sum     Summary
		rec     pb.Record
		tables  = map[uint32]*pb.Table{}
		order   []uint32
		rows    = map[uint32]uint64{}
		trailer *pb.Trailer
		idx     int64
	)
	fail := func(off int64, err error, format string, args ...any) error {
		return &Error{Offset: off, Record: idx, Err: err, Detail: fmt.Sprintf(format, args...)}
	}
	for ; ; idx++ {
		off := rr.Offset()
		b, err := rr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return sum, framingError(err, idx)
		}
		if idx&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return sum, err
			}
			if progress != nil {
				progress(rr.Offset())
			}
		}
		if err := proto.Unmarshal(b, &rec); err != nil {
			return sum, fail(off, ErrDecode, "%v", err)
		}
		if trailer != nil {
			return sum, fail(off, ErrAfterTrailer, "")
		}
		switch k := rec.Kind.(type) {
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
		case *pb.Record_Row:
			if idx == 0 {
				return sum, fail(off, ErrNoHeader, "found a row")
			}
			if err := refCheckRow(k.Row, tables); err != nil {
				return sum, fail(off, err, "%s", refRowDetail(k.Row, tables, err))
			}
			rows[k.Row.GetTableId()]++
			sum.Rows++
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
	}
	sum.Records = idx
	sum.Bytes = rr.Offset()
	sum.Tables = len(tables)
	if idx == 0 {
		return sum, &Error{Offset: 0, Err: ErrNoHeader, Detail: "the file is empty"}
	}
	if trailer == nil {
		return sum, &Error{Offset: rr.Offset(), Record: idx, Err: ErrNoTrailer,
			Detail: fmt.Sprintf("%d records, %d rows read", idx, sum.Rows)}
	}
	sum.SHA256 = hex.EncodeToString(ch.h.Sum(nil))
	return sum, nil
}

func refCheckRow(row *pb.Row, tables map[uint32]*pb.Table) error {
	t, ok := tables[row.GetTableId()]
	if !ok {
		return ErrUnknownTable
	}
	if len(row.Values) != len(t.Columns) {
		return ErrColumnCount
	}
	for i, v := range row.Values {
		c := t.Columns[i]
		var ok bool
		switch v.GetKind().(type) {
		case *pb.Value_Null:
			if !c.Nullable {
				return fmt.Errorf("%w: column %s: %w", ErrTypeMismatch, c.Name, errNullNotAllowed)
			}
			ok = true
		case *pb.Value_Int64:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_INT64
		case *pb.Value_Float64:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_FLOAT64
		case *pb.Value_Text:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_TEXT
		case *pb.Value_Bytes:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_BYTES
		case *pb.Value_Bool:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_BOOL
		case *pb.Value_TimestampMicros:
			ok = c.Type == pb.ColumnType_COLUMN_TYPE_TIMESTAMP
		}
		if !ok {
			return fmt.Errorf("%w: column %s is %v", ErrTypeMismatch, c.Name, c.Type)
		}
	}
	return nil
}

func refRowDetail(row *pb.Row, tables map[uint32]*pb.Table, err error) string {
	t := tables[row.GetTableId()]
	switch {
	case t == nil:
		return fmt.Sprintf("table id %d", row.GetTableId())
	case errors.Is(err, ErrColumnCount):
		return fmt.Sprintf("%s has %d columns, row has %d values", t.Name, len(t.Columns), len(row.Values))
	}
	return fmt.Sprintf("%s: %v", t.Name, errors.Unwrap(err))
}
