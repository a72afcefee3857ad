package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/segmq/segmq/internal/localbroker"
)

// The RabbitMQ 4 rows: segmq against the raw baseline on a single 4.0.5
// node (classic, quorum and stream) and on a 3-node 4.0.5 cluster
// (quorum), each pair alternated run after run on the same broker.

func init() { register(section{"cluster", 70, clusterSection}) }

// rabbit4Root is the Debian root with RabbitMQ 4 that scripts/setup.sh
// builds: $SEGMQ_RABBITMQ_ROOT, else the Makefile's default.
func rabbit4Root() string {
	if r := localbroker.RootFromEnv(); r != "" {
		return r
	}
	return "/var/cache/segmq/trixie-rabbitmq"
}

func clusterSection(ctx context.Context, b *bench, e *env) error {
	root := rabbit4Root()
	if !localbroker.Installed(root) {
		return fmt.Errorf("no RabbitMQ 4 root at %s (scripts/setup.sh builds it)", root)
	}
	orig := b.url
	defer func() { b.url = orig }()
	t := table{cols: []string{"broker", "queue", "raw MB/s", "segmq MB/s", "segmq / raw", "raw runs (MB/s)", "segmq runs (MB/s)"}}

	// One node: the bench's own broker when it already is 4.x.
	single := orig
	version := b.brokerVersion()
	if !strings.Contains(version, " 4.") {
		b.logf("cluster: starting a RabbitMQ 4 node from %s", root)
		n, err := localbroker.Start(ctx, localbroker.Options{Root: root})
		if err != nil {
			return err
		}
		defer n.Close()
		single = n.URL
	}
	b.url = single
	version = strings.TrimPrefix(b.brokerVersion(), "RabbitMQ ")
	for _, qt := range []struct {
		name string
		runs int
	}{{"classic", b.o.runs}, {"quorum", b.o.quorumRuns}, {"stream", b.o.runs}} {
		if qt.runs == 0 {
			continue
		}
		if err := b.pair(ctx, e, &t, version+", 1 node", qt.name, qt.runs, single, single); err != nil {
			return err
		}
	}

	if b.o.quorumRuns > 0 {
		b.logf("cluster: starting 3 RabbitMQ 4 nodes from %s", root)
		c, err := localbroker.StartCluster(ctx, localbroker.ClusterOptions{Root: root})
		if err != nil {
			return err
		}
		defer c.Close()
		// Both clients on node 1, where the queue (and its leader) is
		// declared; segmq is given every node, as a cluster's user would.
		if err := b.pair(ctx, e, &t, version+", 3 nodes", "quorum", b.o.quorumRuns, c.Nodes[0].URL, strings.Join(c.URLs(), ",")); err != nil {
			return err
		}
	}
	b.section("RabbitMQ 4: one node and a 3-node cluster",
		fmt.Sprintf("%s snapshot (%d bytes), MSS %d. Same **raw** baseline and **segmq** run as End to end, alternated on a RabbitMQ %s node started from the Debian trixie root, and on a 3-node cluster of it (three nodes on this one machine; the clients connect to the node that declares the queue, so the quorum leader is local and each write is replicated to two other nodes on the same disk). On the **stream** row the raw consumer reads from the stream's first offset (attached before the publish), and segmq runs with --queue-type stream (it also declares and writes the small QUEUE.index stream, and puts a start and a done marker around the segments).",
			human(b.o.ratioSize), e.main.bytes, b.o.mss, version), t)
	return nil
}

// pair alternates the raw baseline (on rawURL) and segmq (given
// segmqURL) runs times on one queue type, and adds a row.
func (b *bench) pair(ctx context.Context, e *env, t *table, broker, queueType string, runs int, rawURL, segmqURL string) error {
	var raws, sgs []float64
	n := e.segs(e.main.bytes, b.o.mss)
	b.url = rawURL
	for i := range runs {
		d, err := b.raw(ctx, queueType, b.o.mss+8, n, "", b.o.rawAckEvery)
		if err != nil {
			return fmt.Errorf("raw %s on %s: %w", queueType, broker, err)
		}
		raws = append(raws, mbps(e.main.bytes, d))
		// The bench itself (queue cleanup) dials rawURL; the commands
		// are given segmqURL.
		urls := []string{"--url", segmqURL}
		r, err := b.e2e(ctx, e.main, queueType, b.o.mss, urls, urls)
		if err != nil {
			return fmt.Errorf("segmq %s on %s: %w", queueType, broker, err)
		}
		sgs = append(sgs, mbps(e.main.bytes, r.elapsed))
		b.logf("%s, %s run %d: raw %.1f, segmq %.1f MB/s", broker, queueType, i+1, raws[i], sgs[i])
	}
	t.add(broker, queueType, fmt.Sprintf("%.1f", median(raws)), fmt.Sprintf("%.1f", median(sgs)), fmt.Sprintf("%.2f", median(sgs)/median(raws)), runList(raws), runList(sgs))
	return nil
}
