// Package tcpproxy is a small TCP proxy for fault-injection tests: it
// forwards 127.0.0.1 connections to an upstream address and can cut every
// live connection (a network reset) or refuse new ones (a partition).
package tcpproxy

import (
	"net"
	"sync"
	"time"
)

// Proxy forwards connections from Addr to an upstream address.
type Proxy struct {
	Addr     string
	upstream string
	l        net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	down   bool
	rate   int // bytes per second per direction; 0 = unlimited
	resets int
	wg     sync.WaitGroup
}

// New starts a proxy on a free loopback port.
func New(upstream string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: l.Addr().String(), upstream: upstream, l: l, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.track(c, u)
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *Proxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
			p.mu.Lock()
			rate := p.rate
			p.mu.Unlock()
			if rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Reset cuts every live connection, as a network reset would.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN
		}
		c.Close()
	}
	p.resets++
	return n / 2
}

// SetRate limits each direction of each connection to bytes per second
// (0: unlimited).
func (p *Proxy) SetRate(bytesPerSec int) {
	p.mu.Lock()
	p.rate = bytesPerSec
	p.mu.Unlock()
}

// SetDown makes the proxy refuse (true) or accept (false) new connections.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// Close stops the proxy and cuts every connection.
func (p *Proxy) Close() error {
	err := p.l.Close()
	p.Reset()
	p.wg.Wait()
	return err
}
