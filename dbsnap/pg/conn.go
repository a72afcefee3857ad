// Package pg dumps a PostgreSQL database into a snapshot file, restores a
// snapshot into a PostgreSQL database and compares the two. See package
// dbsnap for the design and the value encodings.
package pg

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sessionParams fix the text forms of values (for TEXT-encoded columns)
// on every connection, as pg_dump does.
var sessionParams = map[string]string{
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"TimeZone":           "UTC",
	"client_encoding":    "UTF8",
}

// connect opens a connection to url ("" means the PG* environment
// variables, as libpq reads them).
func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pg: bad database URL: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pg: connect to %s:%d/%s: %w", cfg.Host, cfg.Port, cfg.Database, err)
	}
	return conn, nil
}

// pgErr renders a server error with its detail and context, which say
// which key, row or column was at fault.
func pgErr(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	parts := []string{pe.Message}
	if pe.Detail != "" {
		parts = append(parts, pe.Detail)
	}
	if pe.Where != "" {
		parts = append(parts, "where: "+strings.ReplaceAll(pe.Where, "\n", "; "))
	}
	return &serverError{msg: fmt.Sprintf("%s (SQLSTATE %s)", strings.Join(parts, "; "), pe.Code), err: err}
}

// serverError is a server error rendered with its detail and context;
// errors.As still finds the *pgconn.PgError.
type serverError struct {
	msg string
	err error
}

func (e *serverError) Error() string { return e.msg }
func (e *serverError) Unwrap() error { return e.err }

// pgWhere is the CONTEXT of a server error, or "".
func pgWhere(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Where
	}
	return ""
}
