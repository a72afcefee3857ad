package recordio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// AppendFunc appends the encoding of v to dst and returns the result, like
// proto.MarshalOptions.MarshalAppend. It is called from several goroutines
// at once and must not keep dst.
type AppendFunc[T any] func(dst []byte, v T) ([]byte, error)

// OrderedEncoder encodes values on a pool of workers and writes the
// records in the order Encode was called. With distinct records the output
// is byte-identical for any worker count.
//
//	Encode ─► batch ─► jobs ─► worker 1..N (append records into batch.buf)
//	                └─► order ─► writer goroutine: wait batch k, write, recycle
//
// At most 2×workers batches are alive; Encode blocks when they are all
// busy, so memory is bounded by the batch size, not the stream length.
type OrderedEncoder[T any] struct {
	w      *Writer
	encode AppendFunc[T]
	size   int // items per batch

	cur   *batch[T]
	free  chan *batch[T]
	jobs  chan *batch[T]
	order chan *batch[T]

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	done   chan struct{} // writer exit
	err    error         // first error; read after done or via ctx cause
	closed bool
}

type batch[T any] struct {
	items []T
	buf   []byte
	err   error
	ready chan struct{}
}

// DefaultBatch is the number of items per batch when NewOrderedEncoder is
// given 0.
const DefaultBatch = 512

// NewOrderedEncoder starts workers goroutines (at least 1) encoding with
// fn into w. Call Close to finish; it flushes w.
func NewOrderedEncoder[T any](ctx context.Context, w *Writer, workers, batchSize int, fn AppendFunc[T]) *OrderedEncoder[T] {
	if workers < 1 {
		workers = 1
	}
	if batchSize < 1 {
		batchSize = DefaultBatch
	}
	ctx, cancel := context.WithCancelCause(ctx)
	e := &OrderedEncoder[T]{
		w: w, encode: fn, size: batchSize,
		free:  make(chan *batch[T], 2*workers),
		jobs:  make(chan *batch[T], 2*workers),
		order: make(chan *batch[T], 2*workers),
		ctx:   ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	for range 2 * workers {
		e.free <- &batch[T]{items: make([]T, 0, batchSize), ready: make(chan struct{}, 1)}
	}
	e.wg.Add(workers)
	for range workers {
		go e.work()
	}
	go e.write()
	return e
}

func (e *OrderedEncoder[T]) work() {
	defer e.wg.Done()
	for b := range e.jobs {
		b.buf, b.err = e.encodeBatch(b.buf[:0], b.items)
		b.ready <- struct{}{}
	}
}

func (e *OrderedEncoder[T]) encodeBatch(buf []byte, items []T) ([]byte, error) {
	max := e.w.max
	for i := range items {
		start := len(buf)
		buf = append(buf, 0, 0, 0, 0)
		var err error
		buf, err = e.encode(buf, items[i])
		if err != nil {
			return buf[:start], err
		}
		n := len(buf) - start - PrefixSize
		if n > max {
			return buf[:start], fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, n, max)
		}
		binary.LittleEndian.PutUint32(buf[start:], uint32(n))
	}
	return buf, nil
}

func (e *OrderedEncoder[T]) write() {
	defer close(e.done)
	for b := range e.order {
		<-b.ready
		if e.err == nil {
			if b.err != nil {
				e.fail(b.err)
			} else if err := e.w.writeFramed(b.buf, len(b.items)); err != nil {
				e.fail(err)
			}
		}
		b.items = b.items[:0]
		e.free <- b
	}
}

func (e *OrderedEncoder[T]) fail(err error) {
	e.err = err
	e.cancel(err)
}

// Encode queues v. It blocks while every batch is busy, and returns the
// first error of the encoder (sticky) or of ctx.
func (e *OrderedEncoder[T]) Encode(v T) error {
	if e.closed {
		return errors.New("recordio: Encode after Close")
	}
	if e.cur == nil {
		select {
		case e.cur = <-e.free:
		case <-e.ctx.Done():
			return context.Cause(e.ctx)
		}
	}
	e.cur.items = append(e.cur.items, v)
	if len(e.cur.items) == e.size {
		return e.dispatch()
	}
	return nil
}

func (e *OrderedEncoder[T]) dispatch() error {
	b := e.cur
	e.cur = nil
	// order before jobs: the writer must learn of b before any worker can
	// finish it. Both channels have room for every batch in existence.
	e.order <- b
	e.jobs <- b
	if err := e.ctx.Err(); err != nil {
		return context.Cause(e.ctx)
	}
	return nil
}

// Close encodes what is queued, waits for the writer, flushes the Writer
// and returns the first error. It does not close the Writer's destination.
func (e *OrderedEncoder[T]) Close() error {
	if e.closed {
		return errors.New("recordio: Close called twice")
	}
	if e.cur != nil && len(e.cur.items) > 0 {
		e.dispatch()
	}
	e.closed = true
	close(e.jobs)
	close(e.order)
	e.wg.Wait()
	<-e.done
	defer e.cancel(nil)
	if e.err != nil {
		return e.err
	}
	if err := context.Cause(e.ctx); err != nil {
		return err
	}
	return e.w.Flush()
}
