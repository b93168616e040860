package main

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// limitListener enforces -max-conns and -max-conns-per-ip on the public listener before
// fasthttp sees a connection, so that a refusal is the contract's JSON like every other
// answer (fasthttp's own limits write a plain-text body and cannot be told otherwise),
// and so that IPv6 peers are limited too (fasthttp's per-IP limit counts IPv4 only).
//
// A connection over a limit is answered at once, before any request is read, and
// closed: 429 {"result":"rejected","reason":"too_many_connections","retry_after_ms":1000}
// for the per-peer limit, 503 {"error":"unavailable"} for the total. A connection's place
// is freed when it is closed (by the server, or by the client and then the server).
type limitListener struct {
	net.Listener
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

func newLimitListener(ln net.Listener, max, perIP int) *limitListener {
	return &limitListener{Listener: ln, max: max, perIP: perIP, byIP: make(map[netip.Addr]int)}
}

// The refusals, whole HTTP/1.1 responses. Retry-After is whole seconds; retry_after_ms
// says the same in the claim API's unit.
var (
	refusePerIP = refusal(429, "Too Many Requests", `{"result":"rejected","reason":"too_many_connections","retry_after_ms":1000}`)
	refuseTotal = refusal(503, "Service Unavailable", `{"error":"unavailable"}`)
)

func refusal(status int, text, body string) []byte {
	return []byte("HTTP/1.1 " + strconv.Itoa(status) + " " + text + "\r\n" +
		"Server: flashgate\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerAddr(c)
		l.mu.Lock()
		var refuse []byte
		switch {
		case l.perIP > 0 && l.byIP[ip] >= l.perIP:
			refuse = refusePerIP
		case l.total >= l.max:
			refuse = refuseTotal
		default:
			l.total++
			l.byIP[ip]++
		}
		l.mu.Unlock()
		if refuse != nil {
			// On the accept loop, like fasthttp's own refusal: a fresh connection's send
			// buffer is empty, so the short answer is copied at once (the deadline only
			// guards the impossible), and a flood of refused connections costs no
			// goroutine each.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(refuse)
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	l.total--
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip)
	}
	l.mu.Unlock()
}

// peerAddr is the connection's peer IP (IPv4-mapped IPv6 as IPv4), or the zero address
// for a listener that is not TCP (all such peers then share one place count).
func peerAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// limitedConn gives its place back once, on its first Close.
type limitedConn struct {
	net.Conn
	l    *limitListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
