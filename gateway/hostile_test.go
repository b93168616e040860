package main

// Hostile clients against a real gateway (run() in-process, the dev stack behind it),
// spoken to over raw TCP where net/http would refuse to send what an attacker sends:
// bodies over the limit (declared, undeclared, chunked), lying Content-Length, header
// floods, slowloris, ids built from Redis key syntax, and too many connections. Each
// gets a bounded refusal, and none changes the campaign's Redis state (takeSnapshot).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// wireAnswer is what a raw client got back: the first response (status 0 if none) and
// whether the server closed the connection after it.
type wireAnswer struct {
	status int
	header http.Header
	body   []byte
	closed bool
}

func (a wireAnswer) String() string {
	return fmt.Sprintf("%d %s (closed %v)", a.status, a.body, a.closed)
}

// exchange writes payload on a fresh connection to addr and reads one response, then
// whether the server closes the connection. Nothing here waits for more than 15 s.
func exchange(t *testing.T, addr string, payload []byte) wireAnswer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("write: %v", err)
	}
	return readAnswer(t, c)
}

func readAnswer(t *testing.T, c net.Conn) wireAnswer {
	t.Helper()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if isTimeout(err) {
			t.Fatalf("no answer within the test's bound: %v", err)
		}
		return wireAnswer{closed: true} // closed without an answer
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	a := wireAnswer{status: resp.StatusCode, header: resp.Header, body: body}
	// After an answer the server either waits for the next request or closes: a short
	// read tells which (a refusal must close, so a lying client cannot go on).
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = br.ReadByte()
	a.closed = err != nil && !isTimeout(err)
	return a
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// rawClaim is an HTTP/1.1 claim request with the given extra header lines and body,
// and Content-Length set to the body's length unless a header line sets it.
func rawClaim(body string, headerLines ...string) []byte {
	var b strings.Builder
	b.WriteString("POST /v1/claims HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n")
	setsLength := false
	for _, h := range headerLines {
		lower := strings.ToLower(h)
		if strings.HasPrefix(lower, "content-length:") || strings.HasPrefix(lower, "transfer-encoding:") || h == "no-length" {
			setsLength = true
		}
		if h != "no-length" {
			b.WriteString(h + "\r\n")
		}
	}
	if !setsLength {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return []byte(b.String())
}

func chunked(chunks ...string) string {
	var b strings.Builder
	for _, c := range chunks {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
	}
	return b.String() + "0\r\n\r\n"
}

func invalidMessage(t *testing.T, a wireAnswer) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil || m["error"] != "invalid_request" {
		t.Fatalf("answer %s is not an invalid_request JSON body", a)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q; want application/json", ct)
	}
	msg, _ := m["message"].(string)
	return msg
}

// TestHostileRequestsChangeNothing: oversized, lying, flooding, malformed and
// key-syntax requests each get their 4xx naming what was wrong; the campaign's Redis
// state is byte-for-byte what it was. Ids with ':' (allowed by the contract) are
// accepted and land on exactly their own keys.
func TestHostileRequestsChangeNothing(t *testing.T) {
	g := startGateway(t, "-read-timeout", "1s")
	addr := strings.TrimPrefix(g.pub, "http://")
	camp, bl, rdb, _ := setupCampaign(t, `[{"sku":"rp-50","stock":100,"value":50}]`)
	skus := []string{"rp-50"}
	waitStart(t, rdb, camp)
	c := newClaimant(t, g)

	// ':' is in the contract's charset. A claim whose ids are full of it is accepted,
	// and its idempotency record is exactly rkeys.Request of its request_id: no other
	// key of the layout is touched (internal/rkeys; FuzzKeyLayout in gateway/api).
	colonUser, colonRq := "u:"+testenv.ID(t, "x")+":sku:rp-50", "rq:"+testenv.ID(t, "y")+":meta"
	if a := c.claimUntilAnswered(camp, "rp-50", colonUser, "d:1:rq:x", colonRq); a.status != 200 {
		t.Fatalf("claim with ':' in its ids: %s", a)
	}
	ctx := t.Context()
	if n, err := rdb.Exists(ctx, rkeys.Request(camp, colonRq)).Result(); err != nil || n != 1 {
		t.Fatalf("idempotency record %q: exists=%d err=%v", rkeys.Request(camp, colonRq), n, err)
	}
	if n, err := rdb.HGet(ctx, rkeys.Users(camp), colonUser).Int(); err != nil || n != 1 {
		t.Fatalf("per-user count of %q: %d, %v", colonUser, n, err)
	}
	if a := c.claim(camp, "rp-50", colonUser, "d:1:rq:x", testenv.ID(t, "rq")); a.status != 409 {
		t.Fatalf("second claim of the ':' user: %s; want 409 user_limit", a)
	}
	before := takeSnapshot(t, rdb, camp, bl, skus)

	valid := func(kv ...string) string {
		m := map[string]string{"campaign_id": camp, "sku": "rp-50", "user_id": testenv.ID(t, "u"), "device_id": "d-h", "request_id": testenv.ID(t, "rq")}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	xff := "X-Forwarded-For: " + c.xff
	big := valid("device_id", strings.Repeat("d", 5000))
	nested := `{"campaign_id":"` + camp + `","sku":` + strings.Repeat("[", 1500) + strings.Repeat("]", 1500) + `}`
	many := make([]string, 0, 2000)
	for i := range 2000 {
		many = append(many, fmt.Sprintf("X-Flood-%d: v", i))
	}
	tests := []struct {
		name    string
		payload []byte
		status  int
		msg     string // the message contains this
	}{
		{"declared length over 4 KiB", rawClaim(big, xff), 413, "larger than 4096"},
		{"declared length over 4 KiB, body never sent", rawClaim("", xff, "Content-Length: 1000000"), 413, "larger than 4096"},
		{"chunked body over 4 KiB", rawClaim(chunked(big[:2000], big[2000:4000], big[4000:]), xff, "Transfer-Encoding: chunked"), 413, "larger than 4096"},
		{"undeclared length: the body is not read", rawClaim(valid(), xff, "no-length"), 400, "body must be a JSON object"},
		{"Content-Length shorter than the body", rawClaim(valid(), xff, "Content-Length: 20"), 400, "unterminated string"},
		{"Content-Length not a number", rawClaim(valid(), xff, "Content-Length: 12x"), 400, "malformed HTTP request"},
		{"two different Content-Lengths", rawClaim(valid(), xff, "Content-Length: 5", "Content-Length: 6"), 400, "malformed HTTP request"},
		{"one huge header", rawClaim(valid(), xff, "X-Pad: "+strings.Repeat("p", 9000)), 431, "headers too large"},
		{"header flood", rawClaim(valid(), append([]string{xff}, many...)...), 431, "headers too large"},
		{"deep nesting", rawClaim(nested, xff), 400, "sku: must be a string"},
		{"nested object", rawClaim(`{"campaign_id":"`+camp+`","sku":{"sku":{"sku":"rp-50"}}}`, xff), 400, "sku: must be a string"},
		{"duplicate key", rawClaim(strings.Replace(valid(), `{`, `{"user_id":"u-dup",`, 1), xff), 400, "user_id: given more than once"},
		{"invalid UTF-8 in a value", rawClaim(strings.Replace(valid(), `"d-h"`, "\"d-\xc3\x28\"", 1), xff), 400, "device_id: invalid UTF-8"},
		{"invalid UTF-8 in a key", rawClaim("{\"sku\xff\":\"a\"}", xff), 400, "field name: invalid UTF-8"},
		{"invalid UTF-8 in Idempotency-Key", rawClaim(valid("request_id", "r-1"), xff, "Idempotency-Key: r-\xff"), 400, "request_id: differs"},
		{"invalid UTF-8 in Idempotency-Key alone", rawClaim(`{"campaign_id":"`+camp+`","sku":"rp-50","user_id":"u","device_id":"d"}`, xff, "Idempotency-Key: r-\xff"), 400, "request_id: must be 1-64"},
		{"invalid UTF-8 in X-Forwarded-For", rawClaim(valid(), "X-Forwarded-For: 198.18.0.\xff"), 400, "X-Forwarded-For"},
	}
	// Every id field refuses key syntax, glob characters and whitespace (sent as JSON
	// escapes where a raw byte would already be refused as a control character), and an
	// id one character too long.
	for _, field := range []string{"campaign_id", "sku", "user_id", "device_id", "request_id"} {
		for _, bad := range []string{"{x}", "x}", "{", "x*", "x?", "[x]", "x y", "x\t", "x\ny", "x\r", strings.Repeat("x", 65)} {
			tests = append(tests, struct {
				name    string
				payload []byte
				status  int
				msg     string
			}{fmt.Sprintf("%s %q", field, bad), rawClaim(valid(field, bad), xff), 400, field + ": must be 1-64 characters of [A-Za-z0-9._:-]"})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := exchange(t, addr, tc.payload)
			if a.status != tc.status {
				t.Fatalf("answer %s; want %d", a, tc.status)
			}
			if msg := invalidMessage(t, a); !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q; want it to contain %q", msg, tc.msg)
			}
			if (tc.status != 400 || tc.msg == "malformed HTTP request") && !a.closed {
				t.Errorf("the connection stayed open after %d", tc.status)
			}
		})
	}

	// A body that never arrives in full: the read timeout (1 s here) ends it with 408.
	t.Run("Content-Length longer than the body", func(t *testing.T) {
		a := exchange(t, addr, rawClaim(`{"sku":`, xff, "Content-Length: 200"))
		if a.status != 408 || !a.closed {
			t.Fatalf("answer %s; want 408 and the connection closed", a)
		}
		if msg := invalidMessage(t, a); !strings.Contains(msg, "not received in time") {
			t.Errorf("message %q", msg)
		}
	})

	after := takeSnapshot(t, rdb, camp, bl, skus)
	for k, d := range before.dumps {
		if after.dumps[k] != d {
			t.Errorf("hostile input changed %s", k)
		}
	}
	for _, l := range []struct {
		name          string
		before, after []string
	}{{"outbox", before.outbox, after.outbox}, {"inflight", before.inflight, after.inflight}, {"request record", before.rqKeys, after.rqKeys}} {
		for _, x := range l.after {
			if !slices.Contains(l.before, x) {
				t.Errorf("hostile input added %s entry %s", l.name, x)
			}
		}
	}
}

// TestSlowlorisIsCutOff: many clients dribbling a request byte by byte hold no
// connection past the read timeout, and a normal client is served while they hang.
func TestSlowlorisIsCutOff(t *testing.T) {
	const slow = 60
	g := startGateway(t, "-read-timeout", "1s", "-max-conns-per-ip", "100")
	addr := strings.TrimPrefix(g.pub, "http://")
	camp, _, rdb, _ := setupCampaign(t, `[{"sku":"rp-50","stock":10,"value":50}]`)
	waitStart(t, rdb, camp)

	type result struct {
		status int
		err    error
	}
	results := make(chan result, slow)
	var started sync.WaitGroup
	stop := make(chan struct{})
	defer close(stop)
	for i := range slow {
		started.Add(1)
		go func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			started.Done()
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			// Half dribble their headers; half send the headers at once and dribble a
			// body that would be a valid claim.
			var payload []byte
			if i%2 == 0 {
				payload = []byte("POST /v1/claims HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Slow: " + strings.Repeat("s", 200))
			} else {
				body := `{"campaign_id":"` + camp + `","sku":"rp-50","user_id":"u-slow","device_id":"d","request_id":"r-slow-` + strconv.Itoa(i) + `"}`
				req := rawClaim(body)
				head := len(req) - len(body)
				if _, err := c.Write(req[:head]); err != nil {
					results <- result{err: err}
					return
				}
				payload = req[head:]
			}
			go func() { // one byte every 50 ms until the server closes or the test ends
				for _, b := range payload {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
				}
			}()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- result{err: err}
				return
			}
			resp.Body.Close()
			results <- result{status: resp.StatusCode}
		}()
	}
	started.Wait()
	time.Sleep(200 * time.Millisecond) // they are all mid-request now

	c := newClaimant(t, g)
	if a := c.claimUntilAnswered(camp, "rp-50", testenv.ID(t, "u"), "d-1", testenv.ID(t, "rq")); a.status != 200 {
		t.Fatalf("a normal claim while %d slow clients hang: %s", slow, a)
	}
	answered408 := 0
	for range slow {
		r := <-results
		switch {
		case r.err == nil && r.status == 408:
			answered408++
		case r.err != nil && !isTimeout(r.err) && (errors.Is(r.err, io.EOF) || errors.Is(r.err, io.ErrUnexpectedEOF) ||
			errors.Is(r.err, syscall.ECONNRESET) || errors.Is(r.err, os.ErrClosed)):
			// Closed: the server may reset a connection whose bytes it did not read.
		default:
			t.Errorf("slow client: status %d err %v; want 408 or the connection closed", r.status, r.err)
		}
	}
	if answered408 == 0 {
		t.Errorf("no slow client was told 408")
	}
	// Nothing of the slow clients reached Redis.
	if n, err := rdb.HExists(t.Context(), rkeys.Users(camp), "u-slow").Result(); err != nil || n {
		t.Errorf("a slow client's claim reached Redis (%v, %v)", n, err)
	}
}

// holdConn opens a connection from the local address ip and completes one request on
// it (so the server has surely accepted and counted it), then keeps it open.
func holdConn(t *testing.T, addr, ip string) (net.Conn, wireAnswer) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	// A request that reaches the handler and changes nothing: GET is not allowed.
	if _, err := c.Write([]byte("GET /v1/claims HTTP/1.1\r\nHost: gw\r\n\r\n")); err != nil {
		return c, wireAnswer{closed: true}
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return c, wireAnswer{closed: true}
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return c, wireAnswer{status: resp.StatusCode, header: resp.Header, body: body}
}

// refusedConn dials from ip without sending anything and reads what the server says:
// a connection over a limit is answered at once and closed.
func refusedConn(t *testing.T, addr, ip string) wireAnswer {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return wireAnswer{closed: !isTimeout(err)} // status 0: nothing said (timeout: still open)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return wireAnswer{status: resp.StatusCode, header: resp.Header, body: body, closed: true}
}

// TestConnectionLimits: -max-conns-per-ip refuses a TCP peer's connection beyond the
// limit with 429 and closes it; -max-conns refuses one beyond the total with 503; a
// connection closed frees its place. Other loopback addresses (127.0.0.2, .3) stand
// for other clients.
func TestConnectionLimits(t *testing.T) {
	const perIP, total = 6, 9
	g := startGateway(t, "-max-conns-per-ip", strconv.Itoa(perIP), "-max-conns", strconv.Itoa(total))
	addr := strings.TrimPrefix(g.pub, "http://")

	var held []net.Conn
	for i := range perIP {
		c, a := holdConn(t, addr, "127.0.0.1")
		if a.status != 405 {
			t.Fatalf("connection %d of %d from 127.0.0.1: %s; want it served (405)", i+1, perIP, a)
		}
		held = append(held, c)
	}
	// Refusals are the contract's JSON (a 429 shaped like the claim API's, with its own
	// reason), before any request is read, and the connection is closed.
	a := refusedConn(t, addr, "127.0.0.1")
	if a.status != 429 || !a.closed || a.header.Get("Content-Type") != "application/json" || a.header.Get("Retry-After") != "1" ||
		string(a.body) != `{"result":"rejected","reason":"too_many_connections","retry_after_ms":1000}` {
		t.Fatalf("connection %d from 127.0.0.1: %s; want 429 too_many_connections and closed", perIP+1, a)
	}
	// Another address is not limited by 127.0.0.1's connections...
	for i := range total - perIP {
		if _, a := holdConn(t, addr, "127.0.0.2"); a.status != 405 {
			t.Fatalf("connection %d from 127.0.0.2: %s; want it served", i+1, a)
		}
	}
	// ...but the total is reached now.
	if a := refusedConn(t, addr, "127.0.0.3"); a.status != 503 || !a.closed || a.header.Get("Content-Type") != "application/json" ||
		string(a.body) != `{"error":"unavailable"}` {
		t.Fatalf("connection %d overall: %s; want 503 unavailable and closed", total+1, a)
	}
	// Closing one of 127.0.0.1's frees its place (once the server has seen the close).
	held[0].Close()
	testenv.Eventually(t, 10*time.Second, "a freed place is served", func() bool {
		c, a := holdConn(t, addr, "127.0.0.1")
		if a.status != 405 {
			c.Close()
			return false
		}
		return true
	})
}
