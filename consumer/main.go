// Command consumer takes one transfer's segments off a RabbitMQ queue in
// any order, places them by offset, proves the file exact (size, SHA-256)
// and only then writes it to --out.
//
//	consumer --out db.bin [--queue snapshots] [--url URL] [--window N] [--timeout D]
package main

import "github.com/segmq/segmq/internal/cli"

func main() { cli.Main("consumer", run) }
