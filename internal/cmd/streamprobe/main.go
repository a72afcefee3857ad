// Command streamprobe: the measurement that decided against the native protocol (removed in the next commit): late consume of one segmq
// transfer on a 4.0.5 stream, consumer over AMQP vs native, alternating;
// wall time, consumer CPU and broker (beam) CPU per run.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/segmq/segmq/internal/localbroker"
)

func beamCPU(node string) time.Duration {
	ents, _ := os.ReadDir("/proc")
	var tot int64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !bytes.Contains(cl, []byte(node)) || !bytes.Contains(cl, []byte("beam")) {
			continue
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		tot += u + s
	}
	return time.Duration(tot) * 10 * time.Millisecond
}

func main() {
	bin, snap, runs := os.Args[1], os.Args[2], 4
	if len(os.Args) > 3 {
		runs, _ = strconv.Atoi(os.Args[3])
	}
	ctx := context.Background()
	b, err := localbroker.Start(ctx, localbroker.Options{Root: localbroker.RootFromEnv(), Stream: true})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	env := append(os.Environ(), "AMQP_URL="+b.URL)
	q := []string{"--queue", "probe", "--queue-type", "stream"}
	p := exec.Command(filepath.Join(bin, "producer"), append([]string{"--in", snap, "--state", "-"}, q...)...)
	p.Env = env
	if out, err := p.CombinedOutput(); err != nil {
		panic(fmt.Sprint(err, string(out)))
	}
	if beamCPU(filepath.Base(b.Dir)) == 0 {
		panic("no beam found for " + b.Dir)
	}
	dir, _ := os.MkdirTemp("", "probe")
	defer os.RemoveAll(dir)
	fi, _ := os.Stat(snap)
	for i := range runs {
		for _, proto := range []string{"amqp", "native"} {
			if i%2 == 1 { // alternate which goes first
				proto = map[string]string{"amqp": "native", "native": "amqp"}[proto]
			}
			k := 1
			if v := os.Getenv("PROBE_K"); v != "" {
				k, _ = strconv.Atoi(v)
			}
			cs := make([]*exec.Cmd, k)
			logs := make([]*bytes.Buffer, k)
			for j := range k {
				out := filepath.Join(dir, fmt.Sprintf("out%d.bin", j))
				os.Remove(out)
				c := exec.Command(filepath.Join(bin, "consumer"), append([]string{"--out", out, "--timeout", "60s", "--stream-protocol", proto, "--stream-port", fmt.Sprint(b.StreamPort)}, q...)...)
				c.Env = env
				logs[j] = &bytes.Buffer{}
				c.Stdout, c.Stderr = logs[j], logs[j]
				cs[j] = c
			}
			b0 := beamCPU(filepath.Base(b.Dir))
			start := time.Now()
			for _, c := range cs {
				if err := c.Start(); err != nil {
					panic(err)
				}
			}
			var cu, csys float64
			for j, c := range cs {
				err := c.Wait()
				if err != nil || !strings.Contains(logs[j].String(), "size and sha256 verified") {
					panic(fmt.Sprint(err, logs[j].String()))
				}
				cu += c.ProcessState.UserTime().Seconds()
				csys += c.ProcessState.SystemTime().Seconds()
			}
			wall := time.Since(start)
			b1 := beamCPU(filepath.Base(b.Dir))
			c := cs[0]
			_ = c
			l, _ := os.ReadFile("/proc/loadavg")
			fmt.Printf("run %d %-6s wall %6.2fs %6.1f MB/s  consumer user %5.2fs sys %5.2fs  broker %5.2fs  load %s\n", i+1, proto, wall.Seconds(), float64(k)*float64(fi.Size())/wall.Seconds()/1e6,
				cu, csys, (b1 - b0).Seconds(), strings.Fields(string(l))[0])
		}
	}
}
