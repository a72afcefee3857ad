// Command localbroker starts and stops a throwaway rabbitmq-server node
// for `make run` and `make bench` (see package localbroker).
//
//	localbroker start --dir D [--port P] [--config 'key = value']   prints the AMQP URL
//	localbroker stop --dir D
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/segmq/segmq/internal/cli"
	"github.com/segmq/segmq/internal/localbroker"
)

func main() { cli.Main("localbroker", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "start" && args[0] != "stop") {
		return cli.Usagef("usage: localbroker start|stop --dir DIR [--port P]")
	}
	fs := flag.NewFlagSet("localbroker "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "node directory (required)")
	port := fs.Int("port", 0, "AMQP port (0 = a free one)")
	config := fs.String("config", "", "extra rabbitmq.conf lines")
	root := fs.String("root", localbroker.RootFromEnv(), "run rabbitmq-server from this Debian root (default $"+localbroker.RootEnv+"; --dir must lie inside it)")
	if err := cli.Parse(fs, args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return cli.Usagef("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if args[0] == "stop" {
		b, err := localbroker.Attach(*dir)
		if err != nil {
			return fmt.Errorf("no broker recorded in %s: %w", *dir, err)
		}
		return b.StopDetached(ctx)
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
