package faultproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// echo is a TCP server that echoes what it reads and counts the bytes and the EOFs
// it sees.
type echo struct {
	ln        net.Listener
	got, eofs atomic.Int64
}

func startEcho(t *testing.T) *echo {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					e.got.Add(int64(n))
					if n > 0 {
						c.Write(buf[:n])
					}
					if err != nil {
						if errors.Is(err, io.EOF) {
							e.eofs.Add(1)
						}
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return e
}

func roundTrip(t *testing.T, c net.Conn, msg string, wait time.Duration) (string, error) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

func TestModes(t *testing.T) {
	e := startEcho(t)
	p, err := New(e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	c := dial()
	if got, err := roundTrip(t, c, "hello", time.Second); err != nil || got != "hello" {
		t.Fatalf("forward: %q, %v", got, err)
	}

	// Black hole: writes succeed, reads time out (no EOF, no reset), nothing reaches
	// the server; a new connection is accepted and black-holed too.
	p.Set(Blackhole)
	before := e.got.Load()
	for _, cc := range []net.Conn{c, dial()} {
		if _, err := roundTrip(t, cc, "lost", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blackhole: read error %v, want a timeout (no EOF or RST)", err)
		}
	}
	if e.got.Load() != before {
		t.Fatalf("blackhole: the server received %d bytes", e.got.Load()-before)
	}

	// Back to forward: the connection that lost bytes is closed, a new one works.
	p.Set(Forward)
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 8)); err == nil {
		t.Fatal("a connection that lost bytes in the black hole was kept open")
	}
	c = dial()
	if got, err := roundTrip(t, c, "again", time.Second); err != nil || got != "again" {
		t.Fatalf("after restore: %q, %v", got, err)
	}

	// Latency: a round trip pays it both ways.
	p.SetLatency(100 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(t, c, "slow", 2*time.Second); err != nil || got != "slow" {
		t.Fatalf("latency: %q, %v", got, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("latency 100ms each way: round trip took %s", d)
	}
	p.SetLatency(0)

	// Drop responses: the server gets the request, the client no answer.
	p.Set(DropResponses)
	before = e.got.Load()
	if _, err := roundTrip(t, c, "unacked", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("drop-responses: read error %v, want a timeout", err)
	}
	if got := e.got.Load() - before; got != int64(len("unacked")) {
		t.Fatalf("drop-responses: the server received %d bytes, want %d", got, len("unacked"))
	}
	p.Set(Forward)

	// Half-open: the server side is closed (the server sees EOF), the client side stays
	// open and silent.
	c = dial()
	if _, err := roundTrip(t, c, "x", time.Second); err != nil {
		t.Fatal(err)
	}
	eofs := e.eofs.Load()
	p.Set(HalfOpen)
	deadline := time.Now().Add(2 * time.Second)
	for e.eofs.Load() == eofs && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.eofs.Load() == eofs {
		t.Fatal("half-open: the server side was not closed")
	}
	if _, err := roundTrip(t, c, "y", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half-open: client read error %v, want a timeout (its side held open)", err)
	}
}
