// Command snapshot writes, checks and prints segmq snapshot files.
//
//	snapshot gen --records N [--workers K] [--seed S] --out FILE
//	snapshot verify FILE
//	snapshot cat FILE
//	snapshot dump [--db URL] --out FILE [--tables a,b | --schema s] [--workers K]
//	snapshot restore FILE [--db URL] [--workers K] [--clean] [-v]
//	snapshot verify FILE --db URL
//
// URL is postgres://… or sqlite:PATH; see package dbsnap.
package main

import "github.com/segmq/segmq/internal/cli"

func main() { cli.Main("snapshot", run) }
