package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// The per-peer limit counts IPv6 peers too (fasthttp's own counted IPv4 only), an
// IPv4-mapped peer counts as its IPv4 address, and a closed connection frees its place
// exactly once however often it is closed.
func TestLimitListenerIPv6AndRelease(t *testing.T) {
	raw, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatalf("an IPv6 listener on this machine: %v", err)
	}
	ln := newLimitListener(raw, 10, 1)
	t.Cleanup(func() { ln.Close() })
	port := raw.Addr().(*net.TCPAddr).Port
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(host string) net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", host, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	refused := func(c net.Conn) int {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no refusal read: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}

	dial("::1")
	first := next()
	if code := refused(dial("::1")); code != 429 {
		t.Fatalf("second connection from ::1: %d, want 429", code)
	}
	dial("127.0.0.1") // another peer: its own place
	v4 := next()
	if code := refused(dial("::ffff:127.0.0.1")); code != 429 {
		t.Fatalf("IPv4-mapped 127.0.0.1 while 127.0.0.1 holds its place: %d, want 429", code)
	}
	first.Close()
	first.Close() // a second close must not free a second place
	ln.mu.Lock()
	total, byIP := ln.total, len(ln.byIP)
	v4n := ln.byIP[peerAddr(v4)]
	ln.mu.Unlock()
	if total != 1 || v4n != 1 || byIP != 1 {
		t.Fatalf("after closing ::1's connection twice: total %d, %d peers, 127.0.0.1 holds %d; want only 127.0.0.1's one", total, byIP, v4n)
	}
	dial("::1")
	next()
}
