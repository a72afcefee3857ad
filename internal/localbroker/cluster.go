package localbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Cluster is a set of local nodes joined into one RabbitMQ cluster: one
// Erlang cookie, one private epmd, a node name, ports and a directory per
// node. Quorum queues created on it replicate across every node.
type Cluster struct {
	Nodes  []*Broker
	dir    string
	ownDir bool // StartCluster made dir: Close removes it
}

// ClusterOptions configures StartCluster. Zero values pick defaults.
type ClusterOptions struct {
	Size   int       // nodes; 0 means 3
	Root   string    // as Options.Root
	Config string    // appended to every node's rabbitmq.conf
	Log    io.Writer // every node's output; nil discards it
	// Dir holds a directory per node (Dir/1, Dir/2, ...); inside Root
	// when Root is set. "" means a new temporary directory, which Close
	// removes; a given Dir is kept.
	Dir string
}

// StartCluster starts opts.Size nodes at once (their boots overlap, so a
// 3-node cluster costs little more than one node), then joins every node
// to the first (stop_app, join_cluster, start_app) and waits until the
// first node reports them all running.
func StartCluster(ctx context.Context, opts ClusterOptions) (c *Cluster, err error) {
	n := opts.Size
	if n == 0 {
		n = 3
	}
	if !Installed(opts.Root) {
		if opts.Root != "" {
			return nil, fmt.Errorf("localbroker: no rabbitmq-server in the root %s (scripts/setup.sh builds it)", opts.Root)
		}
		return nil, ErrNotInstalled
	}
	root := opts.Root
	if root != "" {
		if root, err = filepath.Abs(root); err != nil {
			return nil, err
		}
	}
	dir, own := opts.Dir, opts.Dir == ""
	if own {
		dir, err = os.MkdirTemp(filepath.Join(root, os.TempDir()), "segmq-cluster-")
	} else if dir, err = filepath.Abs(dir); err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return nil, err
	}
	if rel, err := filepath.Rel(root, dir); root != "" && (err != nil || strings.HasPrefix(rel, "..")) {
		return nil, fmt.Errorf("localbroker: the cluster directory %s must lie inside the root %s", dir, root)
	}
	c = &Cluster{dir: dir, ownDir: own}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	epmd, err := freePort()
	if err != nil {
		return nil, err
	}
	tag := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	if own {
		tag = filepath.Base(dir)[len("segmq-cluster-"):]
	}
	for i := range n {
		b := &Broker{Dir: filepath.Join(dir, strconv.Itoa(i+1)), Root: root, EpmdPort: epmd, log: opts.Log}
		if b.log == nil {
			b.log = io.Discard
		}
		if err := os.Mkdir(b.Dir, 0o755); err != nil && (own || !os.IsExist(err)) {
			return nil, err
		}
		if b.Port, err = freePort(); err != nil {
			return nil, err
		}
		if b.DistPort, err = freePort(); err != nil {
			return nil, err
		}
		b.Node = fmt.Sprintf("rabbit-%s-%d@localhost", tag, i+1)
		b.URL = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", b.Port)
		if err := b.writeFiles(opts.Config, "[]."); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, b)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, b := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.Start(ctx) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	seed := c.Nodes[0].Node
	for _, b := range c.Nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", seed}, {"start_app"}} {
			if _, err := b.Ctl(ctx, args...); err != nil {
				return nil, fmt.Errorf("localbroker: join %s to %s: %w", b.Node, seed, err)
			}
		}
	}
	if err := c.WaitRunning(ctx, n); err != nil {
		return nil, err
	}
	return c, nil
}

// URLs returns every node's AMQP URL, in node order.
func (c *Cluster) URLs() []string {
	u := make([]string, len(c.Nodes))
	for i, b := range c.Nodes {
		u[i] = b.URL
	}
	return u
}

// Alive returns a node that is running, for rabbitmqctl.
func (c *Cluster) Alive() (*Broker, error) {
	for _, b := range c.Nodes {
		if b.Running() {
			return b, nil
		}
	}
	return nil, errors.New("localbroker: no node of the cluster is running")
}

// WaitRunning waits until a running node reports want nodes running.
func (c *Cluster) WaitRunning(ctx context.Context, want int) error {
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		if b, err := c.Alive(); err == nil {
			out, err := b.Ctl(ctx, "eval", "length(rabbit_nodes:list_running()).")
			last = strings.TrimSpace(out)
			if err == nil && last == strconv.Itoa(want) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("localbroker: cluster: %s of %d nodes running after 2m", last, want)
}

// Leader returns the node that hosts the leader of quorum queue q (in
// vhost /), asked of any running node.
func (c *Cluster) Leader(ctx context.Context, q string) (*Broker, error) {
	b, err := c.Alive()
	if err != nil {
		return nil, err
	}
	out, err := b.Ctl(ctx, "eval", fmt.Sprintf(`{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"%s">>)), {_, N} = amqqueue:get_pid(Q), N.`, q))
	if err != nil {
		return nil, err
	}
	name := strings.Trim(strings.TrimSpace(out), "'")
	for _, n := range c.Nodes {
		if n.Node == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("localbroker: the leader of %s is %q, not a node of this cluster", q, name)
}

// NodeOfPort returns the node listening on AMQP port p.
func (c *Cluster) NodeOfPort(p int) *Broker {
	for _, b := range c.Nodes {
		if b.Port == p {
			return b
		}
	}
	return nil
}

// Close stops every node and the shared epmd, and removes the cluster's
// directory.
func (c *Cluster) Close() error {
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, b := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Stop(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(c.Nodes) > 0 {
		c.Nodes[0].killEpmd()
	}
	if c.ownDir {
		os.RemoveAll(c.dir)
	}
	return errors.Join(errs...)
}

// Running reports whether the node's server process (started by this
// Broker) is alive.
func (b *Broker) Running() bool {
	if b.cmd == nil {
		return false
	}
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// Kill ends the node at once with SIGKILL (its whole process group: the
// Erlang VM and its helpers), as a crash or a pulled plug would, and
// waits until it is gone. Its data stays for a later Start.
func (b *Broker) Kill() error {
	if b.cmd == nil {
		return errors.New("localbroker: node not started by this process")
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	<-b.exited
	b.cmd = nil
	return nil
}
