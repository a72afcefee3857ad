package cli

import (
	"errors"
	"flag"

	"os"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/segmq/segmq/rabbit"
)

// BrokerFlags are the connection and queue flags producer and consumer share.
type BrokerFlags struct {
	URL       URLList
	URLFile   string
	Queue     string
	QueueType string
	TLS       rabbit.TLSFiles
	// Streams: retention when the stream is created (streams.go in rabbit).
	StreamMaxAge, StreamMaxBytes, StreamSegmentBytes string
}

// Register adds the flags to fs.
func (b *BrokerFlags) Register(fs *flag.FlagSet) {
	fs.Var(&b.URL, "url", "AMQP URL (amqp:// or amqps://); the nodes of a cluster as several --url flags or one comma-separated list: connect to any live node, move to another when it dies. Default $AMQP_URL, else "+DefaultURL+"; prefer $AMQP_URL or --url-file for a password")
	fs.StringVar(&b.URLFile, "url-file", "", "read the AMQP URL(s) from this file, one per line or comma-separated (keeps the password out of the process list)")
	fs.StringVar(&b.Queue, "queue", "snapshots", "queue name (its dead-letter queue is QUEUE.dead; restored transfers are listed in QUEUE.done)")
	fs.StringVar(&b.QueueType, "queue-type", rabbit.Classic, "queue type when the queue is created: classic, quorum or stream (publish once, restore many times; see --stream-max-age)")
	fs.StringVar(&b.StreamMaxAge, "stream-max-age", rabbit.DefaultMaxAge, "stream retention when the stream is created: drop segment files older than this (a number and Y M D h m s, e.g. 7D, 12h; none = keep for ever)")
	fs.StringVar(&b.StreamMaxBytes, "stream-max-bytes", "16GiB", "stream retention when the stream is created: drop the oldest segment files beyond this size (e.g. 16GiB, 500MB; none = no limit)")
	fs.StringVar(&b.StreamSegmentBytes, "stream-segment-bytes", "0", "size of one stream segment file, the unit retention drops (e.g. 100MB; 0 = the broker's default, 500 MB)")
	fs.StringVar(&b.TLS.CA, "tls-ca", os.Getenv("AMQP_TLS_CA"), "PEM CA bundle for amqps:// (default $AMQP_TLS_CA)")
	fs.StringVar(&b.TLS.Cert, "tls-cert", os.Getenv("AMQP_TLS_CERT"), "PEM client certificate for amqps:// (default $AMQP_TLS_CERT)")
	fs.StringVar(&b.TLS.Key, "tls-key", os.Getenv("AMQP_TLS_KEY"), "PEM client key for amqps:// (default $AMQP_TLS_KEY)")
}

// Dial returns the dial config: --url, else --url-file, else $AMQP_URL, else
// DefaultURL.
func (b *BrokerFlags) Dial(name string) (rabbit.DialConfig, error) {
	u := strings.Join(b.URL, ",")
	switch {
	case u != "" && b.URLFile != "":
		return rabbit.DialConfig{}, Usagef("--url and --url-file are exclusive")
	case b.URLFile != "":
		raw, err := os.ReadFile(b.URLFile)
		if err != nil {
			return rabbit.DialConfig{}, err
		}
		u = strings.Join(strings.Fields(string(raw)), ",")
	case u == "":
		u = URLFromEnv()
	}
	if err := rabbit.CheckURLs(u); err != nil {
		return rabbit.DialConfig{}, &UsageError{Msg: err.Error()}
	}
	return rabbit.DialConfig{URL: strings.Join(rabbit.URLs(u), ","), Name: name, TLS: b.TLS}, nil
}

// URLList is a repeatable flag of AMQP URLs; each value may itself be a
// comma-separated list.
type URLList []string

func (l *URLList) String() string { return rabbit.Redact(strings.Join(*l, ",")) }

// Set adds the URLs of one --url.
func (l *URLList) Set(v string) error {
	urls := rabbit.URLs(v)
	if len(urls) == 0 {
		return errors.New("empty URL")
	}
	*l = append(*l, urls...)
	return nil
}

// Topology returns the queue topology.
func (b *BrokerFlags) Topology() (rabbit.Topology, error) {
	t := rabbit.Topology{Queue: b.Queue, Type: b.QueueType}
	if b.Queue == "" {
		return t, Usagef("--queue must not be empty")
	}
	if t.IsStream() {
		r, err := b.retention()
		if err != nil {
			return t, err
		}
		t.Retention = r
	}
	if err := t.Validate(); err != nil {
		return t, &UsageError{Msg: err.Error()}
	}
	return t, nil
}

// Resolve returns the dial config and the topology: what producer and
// consumer both need before they start.
func (b *BrokerFlags) Resolve(name string) (rabbit.DialConfig, rabbit.Topology, error) {
	dial, err := b.Dial(name)
	if err != nil {
		return dial, rabbit.Topology{}, err
	}
	topo, err := b.Topology()
	return dial, topo, err
}

// retention parses the stream retention flags.
func (b *BrokerFlags) retention() (rabbit.Retention, error) {
	var r rabbit.Retention
	r.MaxAge = b.StreamMaxAge
	if r.MaxAge == "none" || r.MaxAge == "0" {
		r.MaxAge = "0"
	}
	size := func(flag, v string, none int64) (int64, error) {
		switch v {
		case "":
			return 0, nil
		case "none", "0":
			return none, nil
		}
		n, err := humanize.ParseBytes(v)
		if err != nil || n == 0 || n > 1<<62 {
			return 0, Usagef("--%s %q: want a size such as 16GiB or 500MB, or none", flag, v)
		}
		return int64(n), nil
	}
	var err error
	if r.MaxBytes, err = size("stream-max-bytes", b.StreamMaxBytes, -1); err != nil {
		return r, err
	}
	if r.SegmentBytes, err = size("stream-segment-bytes", b.StreamSegmentBytes, 0); err != nil {
		return r, err
	}
	if err := r.Validate(); err != nil {
		return r, &UsageError{Msg: err.Error()}
	}
	return r, nil
}
