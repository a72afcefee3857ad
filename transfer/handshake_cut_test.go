package transfer

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmq/segmq/internal/brokertest"
	"github.com/segmq/segmq/rabbit"
)

// handshakeCutProxy forwards to upstream. It resets the first connection
// once the broker has sent it 40 KB (the consumer is subscribed), cuts the
// second, the reconnect, as soon as the client has sent its first AMQP
// method (connection.start-ok): a network blip in the middle of the
// handshake. Later connections are left alone.
func handshakeCutProxy(t *testing.T, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			k := conns.Add(1)
			go func() {
				u, err := net.Dial("tcp", upstream)
				if err != nil {
					c.Close()
					return
				}
				defer u.Close()
				defer c.Close()
				switch k {
				case 1: // reset after 40 KB from the broker
					go io.Copy(u, c)
					io.CopyN(c, u, 40<<10)
				case 2: // cut inside the handshake
					go io.Copy(c, u)
					buf := make([]byte, 4096)
					for sent := 0; sent < 9; { // the 8-byte protocol header, then start-ok
						n, err := c.Read(buf)
						if n > 0 {
							u.Write(buf[:n])
							sent += n
						}
						if err != nil {
							return
						}
					}
				default:
					go io.Copy(u, c)
					io.Copy(c, u)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestConsumerHandshakeCutIsRetried: a connection reset during the AMQP
// handshake is a lost connection like any other, and the consumer
// reconnects and restores the file. amqp091-go reports any failure while
// it waits for connection.tune as ErrCredentials (403 "username or
// password not allowed"), and during connection.open as ErrVhost (403
// "no access to this vhost"); retriable() takes both for the broker's
// refusal and the consumer gives up for good, on a reconnect, with the
// same credentials that just worked, and a message that sends the user
// to check a password that is right.
func TestConsumerHandshakeCutIsRetried(t *testing.T) {
	e := newEnv(t)
	url := brokertest.URL(t)
	up := strings.TrimSuffix(strings.SplitN(url, "@", 2)[1], "/")
	addr := handshakeCutProxy(t, up)
	const mss = 4096
	data := randData(77, 20*mss-3)
	e.send(e.file("in.bin", data), mss, true)
	out := filepath.Join(e.dir, "out.bin")
	cfg := e.receiveCfg(out)
	cfg.Dial = rabbit.DialConfig{URL: strings.Replace(url, up, addr, 1)}
	cfg.Timeout = 30 * time.Second
	res := e.receive(cfg)
	e.mustEqualFile(out, data)
	if res.Reconnects == 0 {
		t.Fatal("the cut connection was not the one that delivered: the test did not test")
	}
}
