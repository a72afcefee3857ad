package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/segmq/segmq/rabbit"
)

// errConnLost marks an error after which a new connection may succeed:
// the broker restarted, the network reset, the dial was refused.
var errConnLost = errors.New("connection to the broker lost")

// lost wraps err as retriable.
func lost(err error) error { return fmt.Errorf("%w: %w", errConnLost, err) }

// retriable reports whether a new connection may get past err. Refused
// credentials, refused declarations and every other soft (channel-level)
// exception are final: they would happen again.
func retriable(err error) bool {
	if errors.Is(err, errConnLost) || errors.Is(err, amqp.ErrClosed) {
		return true
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return !ae.Recover && (ae.Code == amqp.ConnectionForced || ae.Code == amqp.FrameError || ae.Code == amqp.InternalError)
	}
	return false
}

// closeError classifies a channel's close notification. A soft exception
// (406 PRECONDITION_FAILED, 404 NOT_FOUND, 403 ACCESS_REFUSED: amqp091-go
// sets Recover) is the broker refusing what we did, and a new connection
// would be refused the same way: final. A hard one (320 CONNECTION_FORCED
// on shutdown) or a close with no reason (the network) is a lost
// connection.
func closeError(e *amqp.Error) error {
	if e == nil {
		return lost(errors.New("channel closed"))
	}
	err := fmt.Errorf("channel closed by the broker: %w", e)
	if e.Recover {
		return err
	}
	return lost(err)
}

// backoff sleeps before reconnect attempt n (0-based): 200ms doubling to 5s.
func backoff(ctx context.Context, n int) error {
	d := 200 * time.Millisecond << min(n, 5)
	d = min(d, 5*time.Second)
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxRefusals is how many refusals in a row (403 while connecting) a
// reconnect takes as a cut handshake before it believes them.
const maxRefusals = 5

// session is where a session runs: the node connected to (its URL,
// redacted) and what the topology declaration found.
type sessionInfo struct {
	URL   string // redacted
	Queue rabbit.Queue
}

// reconnect is the one reconnect loop of both commands. It opens a
// session (connection, topology, channel) and runs session on it until
// session returns nil or a final error. After a retriable error it calls
// onLost (which may end the run by returning an error), waits with
// backoff and tries again. A broker never reached is a configuration
// error and ends the run at once.
func reconnect(ctx context.Context, log *slog.Logger, dial rabbit.DialConfig, topo rabbit.Topology, connected *bool, reconnects *int,
	session func(context.Context, *amqp.Connection, *amqp.Channel) error, onLost func(error) error) error {
	return reconnectInfo(ctx, log, dial, topo, connected, reconnects, func(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel, _ sessionInfo) error {
		return session(ctx, conn, ch)
	}, onLost)
}

// reconnectInfo is reconnect whose session also learns where it runs.
//
// With several URLs (the nodes of a cluster), each attempt tries them all
// in turn, starting after the node of the session just lost: a node that
// died is tried last, so failing over costs no dial timeout on it.
func reconnectInfo(ctx context.Context, log *slog.Logger, dial rabbit.DialConfig, topo rabbit.Topology, connected *bool, reconnects *int,
	session func(context.Context, *amqp.Connection, *amqp.Channel, sessionInfo) error, onLost func(error) error) error {
	urls := rabbit.URLs(dial.URL)
	refused := 0 // refusals in a row after a first success
	for attempt := 0; ; {
		conn, ch, info, node, err := openSession(ctx, dial, topo, connected)
		if rabbit.IsAccessRefused(err) {
			// amqp091-go reports any failure while it waits for the
			// broker's handshake replies as 403 (ErrCredentials,
			// ErrVhost), a connection cut there included. After a
			// session with these credentials worked, a refusal is
			// retried a few times before it is believed.
			if refused++; refused > maxRefusals {
				return fmt.Errorf("the broker refused the credentials %d times in a row after accepting them earlier (revoked, or the vhost deleted?): %w", refused, err)
			}
		} else if err == nil {
			refused = 0
		}
		if err == nil {
			if attempt > 0 {
				log.Info("connected to the broker", "node", info.URL, "attempt", attempt)
			}
			began := time.Now()
			err = session(ctx, conn, ch, info)
			ch.Close()
			conn.Close()
			dial.First = node + 1
			if time.Since(began) >= time.Second {
				// A session that worked for a while: the next loss is
				// a new outage (another failover), not more of this one.
				attempt = 0
			}
		}
		if err == nil || !retriable(err) || ctx.Err() != nil || !*connected {
			return err
		}
		*reconnects++
		if lerr := onLost(err); lerr != nil {
			return lerr
		}
		log.Warn("connection to the broker lost; reconnecting", "err", err, "attempt", attempt+1, "nodes", len(urls))
		if berr := backoff(ctx, attempt); berr != nil {
			return berr
		}
		attempt++
	}
}

// openSession dials, declares the topology and opens a channel. Errors
// are classified for the reconnect loops: a broker never reached, or one
// that refuses the credentials, is final; anything after a first success
// is a lost connection. *connected records that first success. node is
// the index of the URL connected to.
func openSession(ctx context.Context, dial rabbit.DialConfig, topo rabbit.Topology, connected *bool) (*amqp.Connection, *amqp.Channel, sessionInfo, int, error) {
	var info sessionInfo
	conn, node, err := rabbit.DialAny(ctx, dial)
	if err != nil {
		if !*connected {
			return nil, nil, info, 0, err // never reached, or refused: a configuration error
		}
		return nil, nil, info, 0, lost(err) // a refusal too: see maxRefusals
	}
	info.URL = rabbit.Redact(rabbit.URLs(dial.URL)[node])
	*connected = true
	if info.Queue, err = rabbit.Ensure(conn, topo); err != nil {
		conn.Close()
		if rabbit.IsUnavailable(err) {
			// A cluster electing the queue's leader, or the node that
			// holds it down: another session, maybe on another node.
			return nil, nil, info, 0, lost(err)
		}
		return nil, nil, info, 0, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, info, 0, lost(err)
	}
	return conn, ch, info, node, nil
}
