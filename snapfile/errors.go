package snapfile

import (
	"errors"
	"fmt"
)

// Sentinels for what Verify and Check find; they arrive wrapped in an
// *Error that carries the byte offset.
var (
	ErrNoHeader      = errors.New("snapfile: first record is not a Header")
	ErrNoTrailer     = errors.New("snapfile: no trailer (the snapshot is cut or incomplete)")
	ErrAfterTrailer  = errors.New("snapfile: records after the trailer")
	ErrDecode        = errors.New("snapfile: record does not decode")
	ErrOrder         = errors.New("snapfile: record out of place")
	ErrUnknownTable  = errors.New("snapfile: row references an undeclared table")
	ErrDuplicateTbl  = errors.New("snapfile: table declared twice")
	ErrColumnCount   = errors.New("snapfile: row has the wrong number of values")
	ErrTypeMismatch  = errors.New("snapfile: value does not match its column type")
	ErrCountMismatch = errors.New("snapfile: trailer row counts do not match the rows")
)

// Error is a problem at a byte offset of a snapshot file.
type Error struct {
	Offset int64 // offset of the record's length prefix (or of the end of file)
	Record int64 // 0-based index of the record
	Err    error
	Detail string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("offset %d (record %d): %v", e.Offset, e.Record, e.Err)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }
