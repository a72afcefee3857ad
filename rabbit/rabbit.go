// Package rabbit is segmq's RabbitMQ layer over amqp091-go: dialing
// (amqp:// and amqps://, connection names, heartbeats), the topology both
// commands declare, and turning broker errors into messages that say what
// to do.
//
// Topology for a queue Q (declared idempotently by producer and consumer):
//
//	Q        durable, x-queue-type classic|quorum, x-dead-letter-exchange Q.dlx,
//	         x-single-active-consumer, x-delivery-limit (quorum)
//	Q.dlx    durable fanout exchange
//	Q.dead   durable queue bound to Q.dlx: poison segments, inspectable
//	Q.done   durable queue of Q's type (quorum: x-delivery-limit lifted),
//	         x-max-length 1000, x-overflow drop-head: the registry of
//	         completed transfers
//	Q.claims stream, x-max-age 30D, x-max-length-bytes 64 MiB: consumers'
//	         claims on the transfers they restore (claims.go)
//
// Q also has x-single-active-consumer (one consumer restores at a time,
// others wait as hot standbys) and, when quorum, x-delivery-limit
// DeliveryLimit. A Q created without them is used as it is (see Queue).
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
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DialConfig configures Dial. Zero values are documented per field.
type DialConfig struct {
	// URL is amqp:// or amqps://; required. Several URLs separated by
	// commas name the nodes of one cluster: Dial connects to the first
	// that answers, starting with the one at index First.
	URL       string
	First     int           // index in URL's list to try first (taken modulo its length)
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
// errors; each URL of a comma-separated list is redacted. Unparseable
// input is replaced whole.
func Redact(u string) string {
	if list := URLs(u); len(list) > 1 {
		for i, one := range list {
			list[i] = Redact(one)
		}
		return strings.Join(list, ",")
	}
	p, err := url.Parse(u)
	if err != nil {
		return "<unparseable url>"
	}
	return p.Redacted()
}

// URLs splits a list of URLs (the nodes of one cluster) at the commas
// that start a new URL (SCHEME://, normally amqp:// or amqps://; another
// scheme is split off so that CheckURLs names it), dropping empty entries
// and spaces. Any other comma belongs to the URL it is in: a password may
// hold a ',' (url.Parse accepts it in userinfo), so one URL is never cut in
// two. A valid URL cannot hold ",SCHEME://" inside: a '/' in user
// information must be percent-encoded.
func URLs(list string) []string {
	var out []string
	add := func(u string) {
		// Trailing commas are separators ("a,,b", "a,"): a URL cannot
		// end in its password.
		if u = strings.TrimRight(strings.TrimSpace(u), ", \t\r\n"); u != "" {
			out = append(out, u)
		}
	}
	start := 0
	for i := 0; i < len(list); i++ {
		if list[i] != ',' {
			continue
		}
		rest := strings.TrimLeft(list[i+1:], " \t\r\n")
		if rest == "" || startsURL(rest) {
			add(list[start:i])
			start = i + 1
		}
	}
	add(list[start:])
	return out
}

// startsURL reports whether s begins with SCHEME:// (RFC 3986 scheme
// characters).
func startsURL(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	for j, c := range s[:i] {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case j > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// CheckURLs parses every URL of a comma-separated list, so that a typo in
// the third node's URL is found before the first two fail. Errors never
// contain any part of a password: url.Parse's error quotes the whole URL
// and, when a reserved character in a password is not percent-encoded,
// the piece it took for a host or port; neither is printed.
func CheckURLs(list string) error {
	urls := URLs(list)
	if len(urls) == 0 {
		return errors.New("no AMQP URL")
	}
	for _, u := range urls {
		if _, err := amqp.ParseURI(u); err != nil {
			if _, perr := url.Parse(u); perr != nil {
				return fmt.Errorf("bad AMQP URL %s: not a valid URL (a '/', '?', '#', '@' or ':' in a user name or password must be percent-encoded: %%2F %%3F %%23 %%40 %%3A)", redactBad(u))
			}
			return fmt.Errorf("bad AMQP URL %s: %w", Redact(u), err)
		}
	}
	return nil
}

// redactBad names an unparseable URL by its scheme and what follows the
// last '@' (the host part), never its user information.
func redactBad(u string) string {
	scheme := ""
	if i := strings.Index(u, "://"); i >= 0 {
		scheme, u = u[:i+3], u[i+3:]
	}
	if i := strings.LastIndex(u, "@"); i >= 0 {
		return scheme + "xxxxx@" + u[i+1:]
	}
	return "<unparseable url>"
}

// Dial connects to the broker: to the first node of cfg.URL's list that
// accepts the connection, trying them in turn from cfg.First. Errors
// name the redacted URLs and never contain a password.
func Dial(ctx context.Context, cfg DialConfig) (*amqp.Connection, error) {
	conn, _, err := DialAny(ctx, cfg)
	return conn, err
}

// DialAny is Dial that also returns the index in cfg.URL's list of the
// node it connected to. When every node fails, the error joins each
// node's *DialError.
func DialAny(ctx context.Context, cfg DialConfig) (*amqp.Connection, int, error) {
	urls := URLs(cfg.URL)
	if len(urls) == 0 {
		return nil, 0, errors.New("rabbit: no URL")
	}
	if len(urls) == 1 {
		conn, err := dialOne(ctx, cfg)
		return conn, 0, err
	}
	if err := CheckURLs(cfg.URL); err != nil {
		return nil, 0, err
	}
	var errs []error
	first := ((cfg.First % len(urls)) + len(urls)) % len(urls)
	for k := range urls {
		i := (first + k) % len(urls)
		one := cfg
		one.URL = urls[i]
		conn, err := dialOne(ctx, one)
		if err == nil {
			return conn, i, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, errors.Join(errs...)
}

func dialOne(ctx context.Context, cfg DialConfig) (*amqp.Connection, error) {
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

// DeliveryLimit is the x-delivery-limit segmq declares on a quorum
// queue: high enough that the limit never trips. RabbitMQ 4.0–4.2 count
// every return of a message toward a default limit of 20 (a nack with
// requeue, and a consumer's channel or connection lost while it holds
// the message unacked: measured on 4.0.5, the 21st return dead-letters
// it), so a consumer that reconnects 20 times could lose a segment. -1
// means "no limit" on 4.x, but 3.10 takes -1 as a limit that drops a
// message at its first return (measured on 3.10.8); a large positive
// value means the same on every version.
const DeliveryLimit = 1<<31 - 1

// Queue is what Ensure found about the main queue.
type Queue struct {
	// SingleActive: the queue has x-single-active-consumer, so the broker
	// delivers to one consumer at a time and any other is a standby.
	SingleActive bool
	// DeliveryLimit: a quorum queue that has segmq's x-delivery-limit
	// (always true for a classic queue, which has no limit).
	DeliveryLimit bool
	// Missing names the arguments segmq declares that the existing queue
	// was created without (by an older segmq, or by hand), or with
	// another value: "x-delivery-limit (current: the value '50' of type
	// 'long')".
	Missing []string
	// Version is the broker's version, e.g. "4.0.5".
	Version string
	// DoneClassic: the main queue is quorum but its registry (QUEUE.done)
	// is a classic queue made by an older segmq, which lives on one node
	// of a cluster.
	DoneClassic bool
	// DoneErr: the registry could not be declared (unavailable, e.g. a
	// classic registry whose node is down); the transfer goes on
	// without it.
	DoneErr error
	// ClaimsErr: the claims stream (Q.claims) could not be declared; a
	// consumer stops at its first claim unless told not to claim.
	ClaimsErr error
}

// LimitApplies reports whether the broker counts returns of quorum-queue
// messages toward a default delivery limit (RabbitMQ 4.0 and later) on a
// queue that does not set its own.
func (q Queue) LimitApplies() bool {
	return !q.DeliveryLimit && !strings.HasPrefix(q.Version, "3.")
}

// Declare declares the topology; see Ensure.
func Declare(conn *amqp.Connection, t Topology) error {
	_, err := Ensure(conn, t)
	return err
}

// optionalArgs are the queue arguments a newer segmq adds; a queue that
// an older one created without them is still used (redeclaring it with
// them fails with PRECONDITION_FAILED), and Ensure reports what it lacks.
var optionalArgs = []string{"x-single-active-consumer", "x-delivery-limit"}

// Ensure declares the topology, each declaration on a channel of its own
// (a failed declaration closes the channel it ran on). The main queue is
// declared with x-single-active-consumer (one consumer restores at a
// time; others wait as standbys) and, for quorum, x-delivery-limit
// DeliveryLimit. An existing queue created without them is used as it
// is, and the result says what it lacks. An existing queue with other
// arguments gives an error that says which argument and what to do.
func Ensure(conn *amqp.Connection, t Topology) (Queue, error) {
	var res Queue
	res.Version, _ = conn.Properties["version"].(string)
	if err := t.Validate(); err != nil {
		return res, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return res, fmt.Errorf("open channel: %w", err)
	}
	defer func() { ch.Close() }()
	if t.Type == Stream {
		return res, declareStream(conn, ch, t)
	}
	qt := t.Type
	if qt == "" {
		qt = Classic
	}
	if err := ch.ExchangeDeclare(t.DLX(), amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return res, explain(err, "exchange", t.DLX(), qt)
	}
	deadArgs := amqp.Table{amqp.QueueTypeArg: qt}
	if _, err := ch.QueueDeclare(t.DeadQueue(), true, false, false, false, deadArgs); err != nil {
		return res, explain(err, "queue", t.DeadQueue(), qt)
	}
	if err := ch.QueueBind(t.DeadQueue(), "", t.DLX(), false, nil); err != nil {
		return res, fmt.Errorf("bind %s to %s: %w", t.DeadQueue(), t.DLX(), err)
	}
	args := amqp.Table{amqp.QueueTypeArg: qt, "x-dead-letter-exchange": t.DLX()}
	switch qt {
	case Classic:
		args["x-single-active-consumer"] = true
	case Quorum:
		args["x-single-active-consumer"] = true
		args["x-delivery-limit"] = int64(DeliveryLimit)
	}
	// A failed declaration closes its channel: each retry gets a new one.
	reopen := func() (err error) {
		ch.Close()
		if ch, err = conn.Channel(); err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		return nil
	}
	for {
		_, err := ch.QueueDeclare(t.Name(), true, false, false, false, args)
		if err == nil {
			break
		}
		arg, current := inequivalentOf(err)
		if _, ok := args[arg]; !ok || !slices.Contains(optionalArgs, arg) {
			return res, explain(err, "queue", t.Name(), qt)
		}
		// The queue predates this argument, or sets its own: use it as
		// it is.
		delete(args, arg)
		if current != "none" {
			arg += " (current: " + current + ")"
		}
		res.Missing = append(res.Missing, arg)
		if err := reopen(); err != nil {
			return res, err
		}
	}
	_, res.SingleActive = args["x-single-active-consumer"]
	_, res.DeliveryLimit = args["x-delivery-limit"]
	res.DeliveryLimit = res.DeliveryLimit || qt != Quorum
	// The registry has the main queue's type, so that on a cluster it
	// outlives the node that created it (a classic queue lives on one
	// node). Reading it returns every marker (basic.get, then close), so
	// a quorum registry needs the delivery limit lifted too.
	doneArgs := amqp.Table{amqp.QueueTypeArg: Classic, "x-max-length": int64(DoneMax), "x-overflow": "drop-head"}
	if qt == Quorum {
		doneArgs[amqp.QueueTypeArg], doneArgs["x-delivery-limit"] = Quorum, int64(DeliveryLimit)
	}
	_, err = ch.QueueDeclare(t.DoneQueue(), true, false, false, false, doneArgs)
	if arg, current := inequivalentOf(err); arg == amqp.QueueTypeArg && current == "'classic'" && qt == Quorum {
		// A classic registry from an older segmq: keep using it.
		res.DoneClassic = true
		doneArgs = amqp.Table{amqp.QueueTypeArg: Classic, "x-max-length": int64(DoneMax), "x-overflow": "drop-head"}
		if err := reopen(); err != nil {
			return res, err
		}
		_, err = ch.QueueDeclare(t.DoneQueue(), true, false, false, false, doneArgs)
	}
	var ae *amqp.Error
	switch {
	case err == nil:
	case errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed:
		return res, explain(err, "queue", t.DoneQueue(), "")
	case errors.As(err, &ae) && ae.Recover:
		// Unavailable (the node holding a classic registry is down:
		// 404 "due to timeout"). The registry is an aid, not the
		// transfer: go on without it.
		res.DoneErr = fmt.Errorf("declare %s: %w", t.DoneQueue(), err)
	default:
		return res, fmt.Errorf("declare queue %s: %w", t.DoneQueue(), err)
	}
	// The claims stream, ahead of the first claim: on RabbitMQ 4.0.5 a
	// publish to a stream that another connection has just created can
	// close the publisher's connection (541 INTERNAL_ERROR). A consumer
	// declares it again when it claims, and stops there if it cannot.
	res.ClaimsErr = DeclareClaims(conn, t)
	return res, nil
}

// inequivalentOf returns the argument that a PRECONDITION_FAILED
// "inequivalent arg 'X' ... but current is Y" names, and Y; "" if err is
// not one.
func inequivalentOf(err error) (arg, current string) {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		return "", ""
	}
	if m := inequivalent.FindStringSubmatch(ae.Reason); m != nil {
		return m[1], m[5]
	}
	return "", ""
}

// IsUnavailable reports whether err is the broker saying a queue cannot
// be reached for now: on a cluster, a queue whose node is down or whose
// leader is being elected ("NOT_FOUND ... due to timeout", 541
// INTERNAL_ERROR). A new session may get past it.
func IsUnavailable(err error) bool {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return false
	}
	return ae.Code == amqp.InternalError || (ae.Code == amqp.NotFound && strings.Contains(ae.Reason, "timeout"))
}

// Consumers returns the number of consumers on the queue and its ready
// messages, asked on a channel of its own.
func Consumers(conn *amqp.Connection, queue string) (consumers, messages int, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	return q.Consumers, q.Messages, err
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
