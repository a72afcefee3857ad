package tcpproxy

import (
	"io"
	"net"
	"testing"
	"time"
)

func echoServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

func TestForwardResetRate(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if n := p.Reset(); n != 1 {
		t.Fatalf("Reset cut %d connections, want 1", n)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("connection still alive after Reset")
	}
	p.SetRate(64 << 10)
	c2, _ := net.Dial("tcp", p.Addr)
	defer c2.Close()
	start := time.Now()
	go c2.Write(make([]byte, 64<<10))
	io.ReadFull(c2, make([]byte, 64<<10))
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Fatalf("64 KiB at 64 KiB/s took %s", el)
	}
	p.SetDown(true)
	c3, err := net.Dial("tcp", p.Addr)
	if err == nil {
		c3.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c3.Read(buf); err == nil {
			t.Fatal("a down proxy forwarded a connection")
		}
	}
}
