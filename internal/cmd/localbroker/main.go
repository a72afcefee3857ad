// Command localbroker starts and stops throwaway rabbitmq-server nodes
// for `make run`, `make bench` and cluster runs by hand (see package
// localbroker).
//
//	localbroker start --dir D [--port P] [--config 'key = value']   prints the AMQP URL
//	localbroker start --dir D --nodes 3 [--root R]                    a 3-node cluster: prints the URLs, comma-separated
//	localbroker stop --dir D                                          stops the node, or every node of the cluster
//
// A cluster needs the RabbitMQ 4.0.5 root ($SEGMQ_RABBITMQ_ROOT or --root,
// built by scripts/setup.sh); its nodes live in D/1, D/2, D/3, and D must
// lie inside the root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/internal/localbroker"
)

func main() { cli.Main("localbroker", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "start" && args[0] != "stop") {
		return cli.Usagef("usage: localbroker start|stop --dir DIR [--port P] [--nodes N]")
	}
	fs := flag.NewFlagSet("localbroker "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "node directory (required); a cluster's nodes go in DIR/1, DIR/2, ...")
	port := fs.Int("port", 0, "AMQP port (0 = a free one); one node only")
	nodes := fs.Int("nodes", 1, "nodes to start; more than 1 forms a cluster (needs the RabbitMQ 4.0.5 root: --root or $"+localbroker.RootEnv+")")
	config := fs.String("config", "", "extra rabbitmq.conf lines")
	root := fs.String("root", localbroker.RootFromEnv(), "run rabbitmq-server from this Debian root (default $"+localbroker.RootEnv+"; --dir must lie inside it)")
	if err := cli.Parse(fs, args[1:]); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return cli.Usagef("--dir is required")
	case *nodes < 1:
		return cli.Usagef("--nodes must be >= 1, got %d", *nodes)
	case *nodes > 1 && *port != 0:
		return cli.Usagef("--port is for one node; a cluster's nodes take free ports")
	case *nodes > 1 && *root == "":
		return cli.Usagef("--nodes %d needs the RabbitMQ 4.0.5 root: set $%s or pass --root (scripts/setup.sh builds it in /var/cache/segmq/trixie-rabbitmq)", *nodes, localbroker.RootEnv)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if args[0] == "stop" {
		return stop(ctx, *dir)
	}
	if *nodes > 1 {
		if !localbroker.Installed(*root) {
			return fmt.Errorf("--nodes %d: no rabbitmq-server in the root %s (scripts/setup.sh builds it)", *nodes, *root)
		}
		c, err := localbroker.StartCluster(ctx, localbroker.ClusterOptions{Size: *nodes, Root: *root, Config: *config, Dir: *dir})
		if err != nil {
			return err
		}
		for _, b := range c.Nodes {
			if err := b.SaveEnv(); err != nil {
				return err
			}
		}
		fmt.Fprintln(stdout, strings.Join(c.URLs(), ","))
		return nil
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	b, err := localbroker.Start(ctx, localbroker.Options{Dir: *dir, Port: *port, Config: *config, Root: *root})
	if err != nil {
		return err
	}
	if err := b.SaveEnv(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, b.URL)
	return nil
}

// stop stops the node recorded in dir, or every node of a cluster
// recorded in dir/1, dir/2, ... (at once, as their shutdowns overlap).
func stop(ctx context.Context, dir string) error {
	if b, err := localbroker.Attach(dir); err == nil {
		return b.StopDetached(ctx)
	}
	var brokers []*localbroker.Broker
	for i := 1; ; i++ {
		b, err := localbroker.Attach(filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			break
		}
		brokers = append(brokers, b)
	}
	if len(brokers) == 0 {
		return fmt.Errorf("no broker recorded in %s (no %s, nor %s)", dir, filepath.Join(dir, "broker.env"), filepath.Join(dir, "1", "broker.env"))
	}
	errs := make([]error, len(brokers))
	var wg sync.WaitGroup
	for i, b := range brokers {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.StopDetached(ctx) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}
