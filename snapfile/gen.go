package snapfile

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/segmq/segmq/proto/snapshotpb"
	"github.com/segmq/segmq/recordio"
)

// GenOptions configures Gen. Zero values are documented per field.
type GenOptions struct {
	Rows     int64  // rows in all (split over the tables); 0 writes an empty database
	Workers  int    // encoder goroutines; 0 means 1
	Seed     uint64 // same seed, same bytes
	Database string // "" means "demo"
	// LowEntropy makes rows repetitive, like real tables full of defaults
	// and sequential keys: apart from keys and timestamps (which follow
	// the key), row contents repeat every 64 rows and event payloads are a
	// fixed JSON text. For measuring compression.
	LowEntropy bool
	// Progress, if set, is called from the encoding goroutine with the
	// number of rows queued so far, at most every 64Ki rows.
	Progress func(rows int64)
}

// Validate says what is wrong with o.
func (o GenOptions) Validate() error {
	if o.Rows < 0 {
		return fmt.Errorf("snapfile: rows must be >= 0, got %d", o.Rows)
	}
	if o.Workers < 0 {
		return fmt.Errorf("snapfile: workers must be >= 0, got %d", o.Workers)
	}
	return nil
}

// genEpoch is the fixed creation time of generated snapshots, so that the
// same seed gives the same bytes on any day.
var genEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

var genTables = []*pb.Table{
	{Id: 1, Name: "public.customers", PrimaryKey: []string{"id"}, Columns: []*pb.Column{
		{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
		{Name: "name", Type: pb.ColumnType_COLUMN_TYPE_TEXT},
		{Name: "email", Type: pb.ColumnType_COLUMN_TYPE_TEXT},
		{Name: "balance", Type: pb.ColumnType_COLUMN_TYPE_FLOAT64},
		{Name: "active", Type: pb.ColumnType_COLUMN_TYPE_BOOL},
		{Name: "created_at", Type: pb.ColumnType_COLUMN_TYPE_TIMESTAMP},
		{Name: "notes", Type: pb.ColumnType_COLUMN_TYPE_TEXT, Nullable: true},
	}},
	{Id: 2, Name: "public.orders", PrimaryKey: []string{"id"}, Columns: []*pb.Column{
		{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
		{Name: "customer_id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
		{Name: "amount", Type: pb.ColumnType_COLUMN_TYPE_FLOAT64},
		{Name: "status", Type: pb.ColumnType_COLUMN_TYPE_TEXT},
		{Name: "placed_at", Type: pb.ColumnType_COLUMN_TYPE_TIMESTAMP},
		{Name: "coupon", Type: pb.ColumnType_COLUMN_TYPE_TEXT, Nullable: true},
	}},
	{Id: 3, Name: "public.events", PrimaryKey: []string{"id"}, Columns: []*pb.Column{
		{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
		{Name: "order_id", Type: pb.ColumnType_COLUMN_TYPE_INT64, Nullable: true},
		{Name: "kind", Type: pb.ColumnType_COLUMN_TYPE_TEXT},
		{Name: "payload", Type: pb.ColumnType_COLUMN_TYPE_BYTES},
		{Name: "at", Type: pb.ColumnType_COLUMN_TYPE_TIMESTAMP},
	}},
}

// tableRows splits rows over the tables 1:3:6, like customers, their
// orders and the orders' events.
func tableRows(rows int64) [3]int64 {
	c := rows / 10
	o := rows * 3 / 10
	return [3]int64{c, o, rows - c - o}
}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Dennis", "Margaret", "Linus", "Radia", "Donald", "Frances"}
	lastNames  = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Ritchie", "Hamilton", "Torvalds", "Perlman", "Knuth", "Allen"}
	statuses   = []string{"pending", "paid", "shipped", "delivered", "refunded"}
	kinds      = []string{"created", "payment_authorized", "packed", "left_warehouse", "delivered", "support_ticket"}
	lowPayload = `{"source":"web","ok":true,"retries":0,"tags":[]}`
)

// rowBuilder builds rows into reusable messages.
type rowBuilder struct {
	rec     pb.Record
	row     pb.Row
	vals    []pb.Value
	ptrs    []*pb.Value
	i64     []pb.Value_Int64
	txt     []pb.Value_Text
	f64     pb.Value_Float64
	b       pb.Value_Bool
	ts      []pb.Value_TimestampMicros
	byt     pb.Value_Bytes
	null    pb.Value_Null
	scratch []byte
	payload [48]byte
}

var builders = sync.Pool{New: func() any {
	b := &rowBuilder{vals: make([]pb.Value, 7), ptrs: make([]*pb.Value, 7),
		i64: make([]pb.Value_Int64, 2), txt: make([]pb.Value_Text, 3), ts: make([]pb.Value_TimestampMicros, 1)}
	for i := range b.vals {
		b.ptrs[i] = &b.vals[i]
	}
	b.rec.Kind = &pb.Record_Row{Row: &b.row}
	return b
}}

var marshal = proto.MarshalOptions{Deterministic: true}

// appendRow appends the encoded Record of global row g (0-based).
func appendRow(dst []byte, seed uint64, counts [3]int64, g int64, low bool) ([]byte, error) {
	b := builders.Get().(*rowBuilder)
	defer builders.Put(b)
	stream := uint64(g)
	if low {
		stream %= 64 // rows repeat every 64, but for keys and timestamps
	}
	r := rand.New(rand.NewPCG(seed, stream))
	table, id := 0, g
	for table < 2 && id >= counts[table] {
		id -= counts[table]
		table++
	}
	id++ // primary keys start at 1
	base := genEpoch.UnixMicro()
	v := b.vals
	switch table {
	case 0:
		name := firstNames[r.IntN(len(firstNames))] + " " + lastNames[r.IntN(len(lastNames))]
		b.i64[0].Int64 = id
		b.txt[0].Text = name
		b.scratch = append(b.scratch[:0], "user"...)
		b.scratch = strconv.AppendInt(b.scratch, id, 10)
		b.scratch = append(b.scratch, "@example.com"...)
		b.txt[1].Text = string(b.scratch)
		b.f64.Float64 = float64(r.IntN(10_000_00)) / 100
		b.b.Bool = r.IntN(10) != 0
		b.ts[0].TimestampMicros = base - r.Int64N(5*365*24*3600*1e6)
		v[0].Kind, v[1].Kind, v[2].Kind, v[3].Kind, v[4].Kind, v[5].Kind = &b.i64[0], &b.txt[0], &b.txt[1], &b.f64, &b.b, &b.ts[0]
		if r.IntN(4) == 0 {
			b.txt[2].Text = "prefers contact by " + []string{"email", "phone", "post"}[r.IntN(3)]
			v[6].Kind = &b.txt[2]
		} else {
			v[6].Kind = &b.null
		}
		b.row.Values = b.ptrs[:7]
	case 1:
		b.i64[0].Int64 = id
		b.i64[1].Int64 = 1 + r.Int64N(max(counts[0], 1))
		b.f64.Float64 = float64(1+r.IntN(50_000_00)) / 100
		b.txt[0].Text = statuses[r.IntN(len(statuses))]
		b.ts[0].TimestampMicros = base - r.Int64N(365*24*3600*1e6)
		v[0].Kind, v[1].Kind, v[2].Kind, v[3].Kind, v[4].Kind = &b.i64[0], &b.i64[1], &b.f64, &b.txt[0], &b.ts[0]
		if r.IntN(5) == 0 {
			b.scratch = append(b.scratch[:0], "SAVE"...)
			b.scratch = strconv.AppendInt(b.scratch, int64(5+r.IntN(45)), 10)
			b.txt[1].Text = string(b.scratch)
			v[5].Kind = &b.txt[1]
		} else {
			v[5].Kind = &b.null
		}
		b.row.Values = b.ptrs[:6]
	default:
		b.i64[0].Int64 = id
		v[0].Kind = &b.i64[0]
		if counts[1] > 0 && r.IntN(10) != 0 {
			b.i64[1].Int64 = 1 + r.Int64N(counts[1])
			v[1].Kind = &b.i64[1]
		} else {
			v[1].Kind = &b.null
		}
		b.txt[0].Text = kinds[r.IntN(len(kinds))]
		n := 8 + r.IntN(len(b.payload)-8)
		if low {
			copy(b.payload[:], lowPayload)
		} else {
			for i := 0; i < n; i += 8 {
				x := r.Uint64()
				for j := 0; j < 8 && i+j < n; j++ {
					b.payload[i+j] = byte(x >> (8 * j))
				}
			}
		}
		b.byt.Bytes = b.payload[:n]
		b.ts[0].TimestampMicros = base - r.Int64N(365*24*3600*1e6)
		if low {
			b.ts[0].TimestampMicros = base + id*1e6
		}
		v[2].Kind, v[3].Kind, v[4].Kind = &b.txt[0], &b.byt, &b.ts[0]
		b.row.Values = b.ptrs[:5]
	}
	b.row.TableId = uint32(table + 1)
	return marshal.MarshalAppend(dst, &b.rec)
}

// Stats describes a written snapshot.
type Stats struct {
	Records int64 // all records, header and trailer included
	Rows    int64
	Bytes   int64
}

// Gen writes a synthetic snapshot of opts.Rows rows to w.
func Gen(ctx context.Context, w io.Writer, opts GenOptions) (Stats, error) {
	if err := opts.Validate(); err != nil {
		return Stats{}, err
	}
	db := opts.Database
	if db == "" {
		db = "demo"
	}
	rw := recordio.NewWriter(w)
	writeMsg := func(m *pb.Record) error {
		b, err := marshal.Marshal(m)
		if err != nil {
			return err
		}
		return rw.Write(b)
	}
	err := writeMsg(&pb.Record{Kind: &pb.Record_Header{Header: &pb.Header{
		FormatVersion: 1, Database: db, CreatedUnixMicros: genEpoch.UnixMicro(), Generator: "segmq snapshot gen",
	}}})
	for _, t := range genTables {
		if err == nil {
			err = writeMsg(&pb.Record{Kind: &pb.Record_Table{Table: t}})
		}
	}
	if err != nil {
		return Stats{}, err
	}
	counts := tableRows(opts.Rows)
	enc := recordio.NewOrderedEncoder(ctx, rw, opts.Workers, 0, func(dst []byte, g int64) ([]byte, error) {
		return appendRow(dst, opts.Seed, counts, g, opts.LowEntropy)
	})
	for g := int64(0); g < opts.Rows; g++ {
		if err := enc.Encode(g); err != nil {
			enc.Close()
			return Stats{}, err
		}
		if opts.Progress != nil && g&0xFFFF == 0xFFFF {
			opts.Progress(g + 1)
		}
	}
	if err := enc.Close(); err != nil {
		return Stats{}, err
	}
	tr := &pb.Trailer{TotalRows: uint64(opts.Rows)}
	for i, t := range genTables {
		tr.Tables = append(tr.Tables, &pb.TableCount{TableId: t.Id, Rows: uint64(counts[i])})
	}
	if err := writeMsg(&pb.Record{Kind: &pb.Record_Trailer{Trailer: tr}}); err != nil {
		return Stats{}, err
	}
	if err := rw.Close(); err != nil {
		return Stats{}, err
	}
	if opts.Progress != nil {
		opts.Progress(opts.Rows)
	}
	return Stats{Records: rw.Count(), Rows: opts.Rows, Bytes: rw.Offset()}, nil
}
