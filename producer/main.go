// Command producer cuts a snapshot into segments and publishes them to
// RabbitMQ with publisher confirms.
//
//	producer [--in db.bin] [--mss 65528] [--queue snapshots] [--url URL]
package main

import "github.com/segmq/segmq/internal/cli"

func main() { cli.Main("producer", run) }
