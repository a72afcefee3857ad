// Command snapshot writes, checks and prints segmq snapshot files.
//
//	snapshot gen --records N [--workers K] [--seed S] --out FILE
//	snapshot verify FILE
//	snapshot cat FILE
package main

import "github.com/segmq/segmq/internal/cli"

func main() { cli.Main("snapshot", run) }
