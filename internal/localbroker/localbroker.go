// Package localbroker runs a throwaway RabbitMQ node from Debian's
// rabbitmq-server package: its own directory, node name, ports and epmd,
// bound to 127.0.0.1, so that tests, `make run` and `make bench` get a
// real broker on any machine that has the package, without root
// services or Docker.
//
// It uses /usr/lib/rabbitmq/bin directly: the /usr/sbin wrappers switch
// to the rabbitmq user and reset HOME, and the CLI then cannot find the
// node's Erlang cookie.
//
// With Options.Root the node runs from another Debian root instead (for
// RabbitMQ 4.0.5 on Erlang 27: a debootstrap'd trixie root, whose Erlang
// needs trixie's libc). Each command then runs as
//
//	unshare -m sh -c 'mount -t proc proc ROOT/proc && exec chroot ROOT CMD…'
//
// in a private mount namespace, so /proc is mounted for the node alone and
// vanishes with it: nothing is left to unmount. The chroot shares the
// host's network, so the node listens on the host's loopback.
package localbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BinDir holds rabbitmq-server and rabbitmqctl.
const BinDir = "/usr/lib/rabbitmq/bin"

// ErrNotInstalled means the rabbitmq-server package is missing.
var ErrNotInstalled = errors.New("localbroker: rabbitmq-server is not installed (apt-get install -y rabbitmq-server, or run scripts/setup.sh)")

// Options configures Start. Zero values pick defaults.
type Options struct {
	Dir  string // node directory; "" means a new temporary one, removed by Close
	Name string // node name suffix; "" derives one from the port
	Port int    // AMQP port on 127.0.0.1; 0 picks a free one
	// Config is appended to the node's rabbitmq.conf (sysctl format),
	// e.g. "max_message_size = 1048576".
	Config string
	// Log receives the server's stdout/stderr; nil discards them.
	Log io.Writer
	// Root is a Debian root holding another rabbitmq-server (see the
	// package doc); "" means the host's. Dir must then lie inside it ("":
	// a new directory under ROOT/tmp).
	Root string
	// Stream enables the rabbitmq_stream plugin: the native stream
	// protocol on StreamPort (127.0.0.1), for the stream client.
	Stream bool
}

// Broker is a running (or stopped) local node.
type Broker struct {
	Dir      string
	Node     string
	Port     int
	DistPort int
	EpmdPort int
	URL      string // amqp://guest:guest@127.0.0.1:PORT/
	Root     string // "" for the host's rabbitmq-server
	// StreamPort is the native stream protocol's port (Options.Stream), else 0.
	StreamPort int

	ownDir bool
	log    io.Writer
	cmd    *exec.Cmd
	exited chan struct{}
}

// Installed reports whether the rabbitmq-server package is present, on
// the host or (root != "") in that root.
func Installed(root string) bool {
	_, err := os.Stat(filepath.Join(root, BinDir, "rabbitmq-server"))
	return err == nil
}

// RootEnv names the environment variable that selects a root for every
// node the project starts (tests, make run, make bench):
// SEGMQ_RABBITMQ_ROOT=/var/cache/segmq/trixie-rabbitmq runs them on
// RabbitMQ 4.0.5. Unset or empty: the host's rabbitmq-server.
const RootEnv = "SEGMQ_RABBITMQ_ROOT"

// RootFromEnv returns $SEGMQ_RABBITMQ_ROOT.
func RootFromEnv() string { return os.Getenv(RootEnv) }

// inside returns path as seen from within the root.
func (b *Broker) inside(path string) string {
	if b.Root == "" {
		return path
	}
	rel, _ := filepath.Rel(b.Root, path)
	return "/" + rel
}

// command runs name (a path as seen from the root) on the host or in the
// root.
func (b *Broker) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if b.Root == "" {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		script := `mount -t proc proc "$0/proc" && exec chroot "$0" "$@"`
		cmd = exec.CommandContext(ctx, "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", script, b.Root, name}, args...)...)
	}
	// On cancel, end the whole group: rabbitmqctl runs an Erlang VM that
	// would otherwise outlive its wrapper and keep the output pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start creates (or reuses) the node directory, starts a private epmd and
// the node, and returns once the node accepts AMQP connections.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	if !Installed(opts.Root) {
		if opts.Root != "" {
			return nil, fmt.Errorf("localbroker: no rabbitmq-server in the root %s (scripts/setup.sh builds it with SEGMQ_RABBITMQ=4)", opts.Root)
		}
		return nil, ErrNotInstalled
	}
	b := &Broker{Dir: opts.Dir, Port: opts.Port, log: opts.Log, Root: opts.Root}
	if b.log == nil {
		b.log = io.Discard
	}
	var err error
	if b.Root != "" {
		if b.Root, err = filepath.Abs(b.Root); err != nil {
			return nil, err
		}
	}
	if b.Dir == "" {
		if b.Dir, err = os.MkdirTemp(filepath.Join(b.Root, os.TempDir()), "segmq-rabbit-"); err != nil {
			return nil, err
		}
		b.ownDir = true
	} else if b.Dir, err = filepath.Abs(b.Dir); err != nil {
		return nil, err
	}
	if rel, err := filepath.Rel(b.Root, b.Dir); b.Root != "" && (err != nil || strings.HasPrefix(rel, "..")) {
		return nil, fmt.Errorf("localbroker: the node directory %s must lie inside the root %s", b.Dir, b.Root)
	}
	for _, p := range []*int{&b.Port, &b.DistPort, &b.EpmdPort} {
		if *p == 0 {
			if *p, err = freePort(); err != nil {
				return nil, err
			}
		}
	}
	name := opts.Name
	if name == "" {
		name = strconv.Itoa(b.Port)
	}
	b.Node = "rabbit-" + name + "@localhost"
	b.URL = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", b.Port)
	plugins, extra := "[].", opts.Config
	if opts.Stream {
		if b.StreamPort, err = freePort(); err != nil {
			return nil, err
		}
		plugins = "[rabbitmq_stream]."
		extra += fmt.Sprintf("\nstream.listeners.tcp.1 = 127.0.0.1:%d\nstream.advertised_host = 127.0.0.1\nstream.advertised_port = %d\n", b.StreamPort, b.StreamPort)
	}
	if err := b.writeFiles(extra, plugins); err != nil {
		return nil, err
	}
	if err := b.Start(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Broker) writeFiles(extra, plugins string) error {
	files := map[string]string{
		".erlang.cookie":    "segmq-local-broker-cookie",
		"rabbitmq.conf":     "loopback_users = none\n" + extra + "\n",
		"enabled_plugins":   plugins + "\n",
		"rabbitmq-env.conf": "",
	}
	for name, body := range files {
		p := filepath.Join(b.Dir, name)
		os.Chmod(p, 0o600) // the cookie is 0400 from an earlier run
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(b.Dir, ".erlang.cookie"), 0o400)
}

func (b *Broker) env() []string {
	path := os.Getenv("PATH")
	if b.Root != "" {
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
	}
	in := func(name string) string { return b.inside(filepath.Join(b.Dir, name)) }
	env := []string{
		"HOME=" + b.inside(b.Dir),
		"PATH=" + path,
		"RABBITMQ_NODENAME=" + b.Node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(b.Port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(b.DistPort),
		"ERL_EPMD_PORT=" + strconv.Itoa(b.EpmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_MNESIA_BASE=" + in("mnesia"),
		"RABBITMQ_LOG_BASE=" + in("log"),
		"RABBITMQ_PID_FILE=" + in("pid"),
		"RABBITMQ_CONFIG_FILE=" + in("rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + in("enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE=" + in("rabbitmq-env.conf"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
	}
	return env
}

// Start (re)starts a stopped node with its data, and waits until it
// accepts AMQP connections.
func (b *Broker) Start(ctx context.Context) error {
	epmd := b.command(context.Background(), "epmd", "-daemon", "-port", strconv.Itoa(b.EpmdPort), "-address", "127.0.0.1")
	epmd.Env = b.env()
	if out, err := epmd.CombinedOutput(); err != nil {
		return fmt.Errorf("localbroker: epmd: %v: %s", err, out)
	}
	cmd := b.command(context.Background(), filepath.Join(BinDir, "rabbitmq-server"))
	cmd.Env = b.env()
	cmd.Dir = b.Dir
	cmd.Stdout, cmd.Stderr = b.log, b.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("localbroker: start: %w", err)
	}
	b.cmd = cmd
	b.exited = make(chan struct{})
	go func() { cmd.Wait(); close(b.exited) }()
	return b.waitReady(ctx, 90*time.Second)
}

// waitReady probes the AMQP port: send the protocol header, expect a
// connection.start frame (first byte 1).
func (b *Broker) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port))
	for {
		if probe(addr) {
			return nil
		}
		select {
		case <-b.exited:
			return fmt.Errorf("localbroker: node %s exited during start; logs in %s", b.Node, filepath.Join(b.Dir, "log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("localbroker: node %s not ready after %s; logs in %s", b.Node, limit, filepath.Join(b.Dir, "log"))
		}
	}
}

func probe(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return false
	}
	var one [1]byte
	_, err = io.ReadFull(c, one[:])
	return err == nil && one[0] == 1
}

// Ctl runs rabbitmqctl against the node.
func (b *Broker) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := b.command(ctx, filepath.Join(BinDir, "rabbitmqctl"), append([]string{"-n", b.Node}, args...)...)
	cmd.Env = b.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Stop stops the node, keeping its data (durable queues and persistent
// messages survive a later Start).
func (b *Broker) Stop() error {
	if b.cmd == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := b.Ctl(ctx, "stop", b.inside(filepath.Join(b.Dir, "pid")))
	select {
	case <-b.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
	}
	b.cmd = nil
	return err
}

// Close stops the node and its epmd, and removes the directory if Start
// made it.
func (b *Broker) Close() error {
	err := b.Stop()
	b.killEpmd()
	if b.ownDir {
		os.RemoveAll(b.Dir)
	}
	return err
}

// Attach returns a Broker for a node started earlier in dir by another
// process (see cmd localbroker), for Stop/Close.
func Attach(dir string) (*Broker, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "broker.env"))
	if err != nil {
		return nil, err
	}
	b := &Broker{Dir: dir, log: io.Discard}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, _ := strings.Cut(line, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "NODE":
			b.Node = v
		case "PORT":
			b.Port = n
		case "DIST_PORT":
			b.DistPort = n
		case "EPMD_PORT":
			b.EpmdPort = n
		case "URL":
			b.URL = v
		case "ROOT":
			b.Root = v
		}
	}
	return b, nil
}

// SaveEnv writes dir/broker.env so that Attach can find the node.
func (b *Broker) SaveEnv() error {
	s := fmt.Sprintf("NODE=%s\nPORT=%d\nDIST_PORT=%d\nEPMD_PORT=%d\nURL=%s\nROOT=%s\n", b.Node, b.Port, b.DistPort, b.EpmdPort, b.URL, b.Root)
	return os.WriteFile(filepath.Join(b.Dir, "broker.env"), []byte(s), 0o644)
}

// StopDetached stops a node started by another process: rabbitmqctl stop,
// then its epmd.
func (b *Broker) StopDetached(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := b.Ctl(cctx, "stop", b.inside(filepath.Join(b.Dir, "pid")))
	cancel()
	if err != nil {
		// rabbitmqctl could not stop it (seen with 4.0.5 from a root when
		// the starting process has exited): end the node by its pid.
		if raw, rerr := os.ReadFile(filepath.Join(b.Dir, "pid")); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(raw))); perr == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGTERM)
				for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
					time.Sleep(100 * time.Millisecond)
				}
				if syscall.Kill(pid, 0) == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				err = nil
			}
		}
	}
	b.killEpmd()
	return err
}

// killEpmd ends the node's private epmd, which outlives the node.
func (b *Broker) killEpmd() {
	kill := b.command(context.Background(), "epmd", "-port", strconv.Itoa(b.EpmdPort), "-kill")
	kill.Env = b.env()
	kill.Run()
}
