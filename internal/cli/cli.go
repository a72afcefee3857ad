// Package cli holds what segmq's three commands share: the mapping of an
// error to an exit code and a one-line message, usage errors, the AMQP URL
// fallback, logging and progress reporting.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the work failed; stderr says why
	ExitUsage   = 2 // bad arguments
)

// UsageError is a problem with the command line (exit code 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// Main runs a command's run function with a context cancelled on SIGINT
// and SIGTERM and exits with its exit code. It is the whole of each main.
func Main(name string, run RunFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(Report(name, err, os.Stderr))
}

// RunFunc is a command's body: main maps its error to an exit code.
type RunFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Capture runs a command in-process, as main would, and returns its
// stdout, stderr and exit code. For tests of the commands.
func Capture(name string, run RunFunc, args ...string) (stdout, stderr string, code int) {
	var out, errb strings.Builder
	err := run(context.Background(), args, &out, &errb)
	code = Report(name, err, &errb)
	return out.String(), errb.String(), code
}

// Report writes a one-line reason for err to stderr and returns the exit
// code: 0 for nil, 2 for usage errors (and -h), 1 for anything else.
func Report(name string, err error, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitUsage
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintf(stderr, "%s: %s\n", name, msg)
	var ue *UsageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitFailure
}

// FlagSet returns a ContinueOnError flag set whose usage goes to stderr.
func FlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args and turns a parse failure into a *UsageError (the
// flag package has already printed the details and the usage).
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{Msg: err.Error()}
	}
	return nil
}

// DefaultURL is used when neither --url nor $AMQP_URL is set.
const DefaultURL = "amqp://guest:guest@localhost:5672/"

// URLFromEnv returns $AMQP_URL, or DefaultURL.
func URLFromEnv() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Logger returns a text logger on w at the given level.
func Logger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
