// Package faultproxy owns the network faults flashgate's tests put between a binary and
// a real server: a loopback TCP proxy that forwards until told to black-hole (accept,
// then drop every byte, never RST), add latency, drop only the server's answers (a
// broker that takes produces and never acknowledges them), or go half-open (the server
// side is closed, the client side held open and silent). Processes that die are the
// chaos suite's; these are the faults that kill nothing. Tests only.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with the bytes of every connection, open or new.
type Mode int32

const (
	// Forward passes bytes both ways (after Latency, if set).
	Forward Mode = iota
	// Blackhole accepts connections and reads what is sent, but forwards nothing either
	// way and closes nothing: the client's writes succeed and its reads wait forever,
	// like packets dropped by a partition (no RST, no FIN).
	Blackhole
	// DropResponses forwards what the client sends but drops what the server answers:
	// the server acts on every request, the client never hears back.
	DropResponses
	// HalfOpen closes the server side of every connection and holds the client side
	// open and silent (a peer that vanished without a FIN): new connections are
	// accepted and never connected upstream.
	HalfOpen
)

func (m Mode) String() string {
	switch m {
	case Forward:
		return "forward"
	case Blackhole:
		return "blackhole"
	case DropResponses:
		return "drop-responses"
	case HalfOpen:
		return "half-open"
	}
	return "mode?"
}

// Proxy is a loopback TCP proxy to one target address.
type Proxy struct {
	ln      net.Listener
	target  string
	mode    atomic.Int32
	latency atomic.Int64 // ns added before each chunk is forwarded

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type conn struct {
	client, server net.Conn
	// tainted is set once a byte of this connection was dropped: its protocol stream
	// is broken, so Set(Forward) closes it and the client reconnects cleanly.
	tainted atomic.Bool
}

// New listens on a free loopback port and forwards to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode reports the current mode.
func (p *Proxy) Mode() Mode { return Mode(p.mode.Load()) }

// SetLatency delays every forwarded chunk, both ways, by d (0: none).
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Set switches every connection, open and new, to m. Back to Forward, the connections
// that lost bytes meanwhile are closed (their streams are broken); the others resume.
// HalfOpen closes the server side of every open connection.
func (p *Proxy) Set(m Mode) {
	p.mode.Store(int32(m))
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		switch {
		case m == Forward && c.tainted.Load():
			c.close()
			delete(p.conns, c)
		case m == HalfOpen && c.server != nil:
			c.tainted.Store(true)
			c.server.Close()
		}
	}
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.close()
	}
	p.conns = nil
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (c *conn) close() {
	c.client.Close()
	if c.server != nil {
		c.server.Close()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		cl, err := p.ln.Accept()
		if err != nil {
			return
		}
		c := &conn{client: cl}
		if m := p.Mode(); m != Blackhole && m != HalfOpen {
			srv, err := net.DialTimeout("tcp", p.target, 2*time.Second)
			if err != nil {
				cl.Close()
				continue
			}
			c.server = srv
		} else {
			c.tainted.Store(true)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(c, true)
		go p.pump(c, false)
	}
}

// pump copies one direction of c. up is client -> server.
func (p *Proxy) pump(c *conn, up bool) {
	defer p.wg.Done()
	src, dst := c.client, c.server
	if !up {
		src, dst = c.server, c.client
	}
	if src == nil { // a connection accepted while black-holed: only the client side exists
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.forward(c, up, dst, buf[:n]) {
				c.tainted.Store(true)
			}
		}
		if err != nil {
			// The client went away, or the server side did: in Forward the connection
			// ends as a whole, as a direct one would. In a fault mode the client side
			// is held open (no FIN, no RST) until the mode changes or Close.
			if p.Mode() == Forward || errors.Is(err, io.EOF) && up {
				p.drop(c)
			}
			return
		}
	}
}

// forward writes b to dst unless the mode drops it; it reports whether it was written.
func (p *Proxy) forward(c *conn, up bool, dst net.Conn, b []byte) bool {
	switch p.Mode() {
	case Blackhole, HalfOpen:
		return false
	case DropResponses:
		if !up {
			return false
		}
	}
	if c.tainted.Load() || dst == nil {
		return false
	}
	if d := time.Duration(p.latency.Load()); d > 0 {
		time.Sleep(d)
	}
	if _, err := dst.Write(b); err != nil {
		return false
	}
	return true
}

func (p *Proxy) drop(c *conn) {
	p.mu.Lock()
	if p.conns != nil {
		delete(p.conns, c)
	}
	p.mu.Unlock()
	c.close()
}
