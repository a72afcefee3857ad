// Package rabbit is segmq's RabbitMQ layer over amqp091-go: dialing
// (amqp:// and amqps://, connection names, heartbeats), the topology both
// commands declare, and turning broker errors into messages that say what
// to do.
//
// Topology for a queue Q (declared idempotently by producer and consumer):
//
//	Q        durable, x-queue-type classic|quorum, x-dead-letter-exchange Q.dlx
//	Q.dlx    durable fanout exchange
//	Q.dead   durable queue bound to Q.dlx: poison segments, inspectable
//	Q.done   durable classic queue, x-max-length 1000, x-overflow drop-head:
//	         the registry of completed transfers
//
// A segment the consumer rejects (nack, requeue=false) is routed by the
// broker to Q.dead with an x-death header; the consumer logs why.
//
// After a restore, the consumer publishes one marker to Q.done (body
// "TRANSFER/RUN", headers segmq-transfer, segmq-run, segmq-size,
// segmq-sha256). Every consumer session first reads the markers with
// basic.get (no ack) and closes that channel, so the broker requeues them
// all; a segment of a transfer found there is a leftover copy (the
// producer is at-least-once) and is dropped. The broker keeps the newest
// DoneMax markers and drops the oldest.
package rabbit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DialConfig configures Dial. Zero values are documented per field.
type DialConfig struct {
	URL       string        // amqp:// or amqps://; required
	Name      string        // connection name shown in the management UI; "" means "segmq"
	Heartbeat time.Duration // 0 means 10s
	TLS       TLSFiles      // for amqps://; empty uses the system roots
	Timeout   time.Duration // TCP and handshake; 0 means 15s
}

// TLSFiles names PEM files for amqps://.
type TLSFiles struct {
	CA   string // CA bundle to trust instead of the system roots
	Cert string // client certificate (with Key) for mutual TLS
	Key  string
}

// Config builds a *tls.Config, or nil when no file is named.
func (f TLSFiles) Config() (*tls.Config, error) {
	if f == (TLSFiles{}) {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca: no certificate in %s", f.CA)
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: a client certificate needs both --tls-cert and --tls-key")
	}
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// Redact returns u with any password replaced by "xxxxx", for logs and
// errors. Unparseable input is replaced whole.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "<unparseable url>"
	}
	return p.Redacted()
}

// Dial connects to the broker. Errors name the redacted URL and never
// contain the password.
func Dial(ctx context.Context, cfg DialConfig) (*amqp.Connection, error) {
	if cfg.URL == "" {
		return nil, errors.New("rabbit: no URL")
	}
	u, err := amqp.ParseURI(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("bad AMQP URL %s: %w", Redact(cfg.URL), err)
	}
	name := cfg.Name
	if name == "" {
		name = "segmq"
	}
	hb := cfg.Heartbeat
	if hb == 0 {
		hb = 10 * time.Second
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	tlsCfg, err := cfg.TLS.Config()
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil && u.Scheme != "amqps" {
		return nil, fmt.Errorf("TLS files given but the URL %s is not amqps://", Redact(cfg.URL))
	}
	if tlsCfg == nil && u.Scheme == "amqps" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tlsCfg != nil && tlsCfg.ServerName == "" {
		tlsCfg.ServerName = u.Host
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	conf := amqp.Config{
		Heartbeat:       hb,
		TLSClientConfig: tlsCfg,
		Properties:      props,
		Locale:          "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake must finish in time; amqp091-go clears the
			// deadline once the connection is open.
			c.SetDeadline(time.Now().Add(timeout))
			return c, nil
		},
	}
	conn, err := amqp.DialConfig(cfg.URL, conf)
	if err != nil {
		return nil, &DialError{URL: Redact(cfg.URL), Err: err, password: u.Password}
	}
	return conn, nil
}

// DialError is a failed connection attempt. Its message names the
// redacted URL and never the password; Unwrap gives the cause (an
// *amqp.Error for a refusal by the broker).
type DialError struct {
	URL      string
	Err      error
	password string
}

func (e *DialError) Error() string {
	return fmt.Sprintf("connect to %s: %s", e.URL, scrub(e.Err.Error(), e.password))
}

func (e *DialError) Unwrap() error { return e.Err }

// IsAccessRefused reports whether err is the broker refusing the
// credentials or the vhost (AMQP 403), which no retry can fix.
func IsAccessRefused(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.AccessRefused
}

// scrub removes a password from a message, in case a library echoed it.
func scrub(msg, password string) string {
	if password == "" || len(password) < 3 {
		return msg
	}
	return strings.ReplaceAll(msg, password, "xxxxx")
}

// Queue types.
const (
	Classic = "classic"
	Quorum  = "quorum"
	Stream  = "stream" // see stream.go
)

// Topology names the queues and exchange for one segmq queue.
type Topology struct {
	Queue string // "" means "snapshots"
	Type  string // Classic, Quorum or Stream; "" means Classic
	// Retention applies to Stream only, when the stream is created.
	Retention Retention
}

func (t Topology) queue() string {
	if t.Queue == "" {
		return "snapshots"
	}
	return t.Queue
}

// Name is the main queue.
func (t Topology) Name() string { return t.queue() }

// DLX is the dead-letter exchange.
func (t Topology) DLX() string { return t.queue() + ".dlx" }

// DeadQueue is the dead-letter queue.
func (t Topology) DeadQueue() string { return t.queue() + ".dead" }

// DoneQueue is the registry of completed transfers.
func (t Topology) DoneQueue() string { return t.queue() + ".done" }

// DoneMax is how many completed transfers DoneQueue remembers.
const DoneMax = 1000

// Validate says what is wrong with t.
func (t Topology) Validate() error {
	switch t.Type {
	case "", Classic, Quorum:
	case Stream:
		if err := t.Retention.Validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("queue type %q: want classic, quorum or stream", t.Type)
	}
	if strings.HasPrefix(t.Queue, "amq.") {
		return fmt.Errorf("queue name %q: the amq. prefix is reserved by the broker", t.Queue)
	}
	return nil
}

// Declare declares the topology on its own channel (a failed declaration
// closes the channel it ran on). An existing queue with other arguments
// gives an error that says which argument and what to do.
func Declare(conn *amqp.Connection, t Topology) error {
	if err := t.Validate(); err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	if t.Type == Stream {
		return declareStream(conn, ch, t)
	}
	qt := t.Type
	if qt == "" {
		qt = Classic
	}
	if err := ch.ExchangeDeclare(t.DLX(), amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return explain(err, "exchange", t.DLX(), qt)
	}
	deadArgs := amqp.Table{amqp.QueueTypeArg: qt}
	if _, err := ch.QueueDeclare(t.DeadQueue(), true, false, false, false, deadArgs); err != nil {
		return explain(err, "queue", t.DeadQueue(), qt)
	}
	if err := ch.QueueBind(t.DeadQueue(), "", t.DLX(), false, nil); err != nil {
		return fmt.Errorf("bind %s to %s: %w", t.DeadQueue(), t.DLX(), err)
	}
	args := amqp.Table{amqp.QueueTypeArg: qt, "x-dead-letter-exchange": t.DLX()}
	if _, err := ch.QueueDeclare(t.Name(), true, false, false, false, args); err != nil {
		return explain(err, "queue", t.Name(), qt)
	}
	// Always classic, whatever --queue-type: it holds small markers only.
	doneArgs := amqp.Table{amqp.QueueTypeArg: Classic, "x-max-length": int64(DoneMax), "x-overflow": "drop-head"}
	if _, err := ch.QueueDeclare(t.DoneQueue(), true, false, false, false, doneArgs); err != nil {
		return explain(err, "queue", t.DoneQueue(), "")
	}
	return nil
}

var inequivalent = regexp.MustCompile(`inequivalent arg '([^']+)' for (queue|exchange) '([^']+)'.*received (.*) but current is (.*)`)

// explain turns PRECONDITION_FAILED on a declaration into advice. qt is
// the queue type segmq asked for; "" for Q.done, whose type is not the
// user's choice.
func explain(err error, kind, name, qt string) error {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		return fmt.Errorf("declare %s %s: %w", kind, name, err)
	}
	if m := inequivalent.FindStringSubmatch(ae.Reason); m != nil {
		hint := fmt.Sprintf("use the existing %s's setting, another --queue, or delete it (rabbitmqctl delete_queue %s) if it holds nothing you need", kind, name)
		if qt == "" {
			// Q.done: segmq's own registry, whatever the queue type.
			hint = fmt.Sprintf("segmq keeps its registry of completed transfers there; delete it (rabbitmqctl delete_queue %s: leftover copies of transfers it listed will no longer be recognised), or use another --queue", name)
		} else if (m[1] == amqp.StreamMaxAgeArg || m[1] == amqp.QueueMaxLenBytesArg) && m[4] == "none" {
			hint = "it has stream retention, so it is most likely a stream: pass --queue-type stream, or another --queue"
		} else if m[1] == amqp.QueueTypeArg {
			hint = fmt.Sprintf("the queue exists with type %s; pass --queue-type %s, or another --queue, or delete it (rabbitmqctl delete_queue %s) if it holds nothing you need",
				strings.Trim(m[5], "'"), strings.Trim(m[5], "'"), name)
		}
		return fmt.Errorf("%s %q already exists with argument %s = %s (segmq wants %s): %s", kind, name, m[1], m[5], m[4], hint)
	}
	return fmt.Errorf("declare %s %s: %s", kind, name, ae.Reason)
}
