package api

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/rkeys"
)

const validBody = `{"campaign_id":"cny-2027","sku":"rp-50","user_id":"u-1001","device_id":"d-9f2c","request_id":"6f1c2b"}`

func TestParse(t *testing.T) {
	type fields struct{ campaign, sku, user, device, request string }
	tests := []struct {
		name    string
		body    string
		want    fields
		wantErr string // "" = accepted
	}{
		{name: "valid", body: validBody,
			want: fields{"cny-2027", "rp-50", "u-1001", "d-9f2c", "6f1c2b"}},
		{name: "whitespace everywhere", body: " \t\r\n{ \"sku\" :\n\"a\" , \"user_id\"\t:\"b\" }\n ",
			want: fields{sku: "a", user: "b"}},
		{name: "empty object", body: `{}`},
		{name: "escaped letters", body: `{"sku":"r\u0070-\u00350"}`, want: fields{sku: "rp-50"}},
		{name: "escaped key", body: `{"s\u006bu":"a"}`, want: fields{sku: "a"}},
		{name: "simple escapes", body: `{"sku":"a\/b\\c\"d\te\nf\rg\bh\fi"}`, want: fields{sku: "a/b\\c\"d\te\nf\rg\bh\fi"}},
		{name: "surrogate pair", body: `{"sku":"\ud83d\ude00"}`, want: fields{sku: "😀"}},
		{name: "raw unicode", body: `{"sku":"红包"}`, want: fields{sku: "红包"}},
		{name: "two escaped values share scratch", body: `{"sku":"\u0061","user_id":"\u0062"}`, want: fields{sku: "a", user: "b"}},

		{name: "empty body", body: ``, wantErr: "body must be a JSON object"},
		{name: "only whitespace", body: "  \n", wantErr: "body must be a JSON object"},
		{name: "array", body: `[]`, wantErr: "body must be a JSON object"},
		{name: "string", body: `"x"`, wantErr: "body must be a JSON object"},
		{name: "not JSON", body: `campaign_id=c&sku=s`, wantErr: "body must be a JSON object"},
		{name: "BOM", body: "\xef\xbb\xbf{}", wantErr: "body must be a JSON object"},
		{name: "unknown field", body: `{"coupon":"x"}`, wantErr: "coupon: unknown field"},
		{name: "unknown field, hostile name", body: "{\"a\\u0000\\\"b\":\"x\"}", wantErr: "a??b: unknown field"},
		{name: "case matters", body: `{"SKU":"x"}`, wantErr: "SKU: unknown field"},
		{name: "duplicate key", body: `{"sku":"a","sku":"b"}`, wantErr: "sku: given more than once"},
		{name: "duplicate via escape", body: `{"sku":"a","\u0073ku":"b"}`, wantErr: "sku: given more than once"},
		{name: "number", body: `{"sku":1}`, wantErr: "sku: must be a string"},
		{name: "null", body: `{"sku":null}`, wantErr: "sku: must be a string"},
		{name: "bool", body: `{"sku":true}`, wantErr: "sku: must be a string"},
		{name: "nested object", body: `{"sku":{"a":"b"}}`, wantErr: "sku: must be a string"},
		{name: "array value", body: `{"sku":["a"]}`, wantErr: "sku: must be a string"},
		{name: "trailing object", body: `{"sku":"a"}{}`, wantErr: "unexpected data after the JSON object"},
		{name: "trailing garbage", body: `{} x`, wantErr: "unexpected data after the JSON object"},
		{name: "truncated", body: `{"sku":"a"`, wantErr: "unexpected end of JSON"},
		{name: "trailing comma", body: `{"sku":"a",}`, wantErr: "expected a field name in double quotes"},
		{name: "unquoted key", body: `{sku:"a"}`, wantErr: "expected a field name in double quotes"},
		{name: "single quotes", body: `{'sku':'a'}`, wantErr: "expected a field name in double quotes"},
		{name: "missing colon", body: `{"sku" "a"}`, wantErr: "sku: expected ':' after the field name"},
		{name: "missing comma", body: `{"sku":"a" "user_id":"b"}`, wantErr: "expected ',' or '}' after sku"},
		{name: "unterminated value", body: `{"sku":"abc`, wantErr: "sku: unterminated string"},
		{name: "unterminated escape", body: `{"sku":"abc\`, wantErr: "sku: unterminated string"},
		{name: "unterminated key", body: `{"sku`, wantErr: "field name: unterminated string"},
		{name: "invalid UTF-8 value", body: "{\"sku\":\"a\xffb\"}", wantErr: "sku: invalid UTF-8"},
		{name: "invalid UTF-8 after escape", body: "{\"sku\":\"\\n\xc3\"}", wantErr: "sku: invalid UTF-8"},
		{name: "invalid UTF-8 key", body: "{\"\xff\":\"a\"}", wantErr: "field name: invalid UTF-8"},
		{name: "raw control character", body: "{\"sku\":\"a\nb\"}", wantErr: "sku: control character in string"},
		{name: "unknown escape", body: `{"sku":"\x41"}`, wantErr: "sku: invalid escape sequence"},
		{name: "short unicode escape", body: `{"sku":"\u12"}`, wantErr: "sku: invalid escape sequence"},
		{name: "non-hex unicode escape", body: `{"sku":"\u12g4"}`, wantErr: "sku: invalid escape sequence"},
		{name: "lone high surrogate", body: `{"sku":"\ud800"}`, wantErr: "sku: invalid escape sequence"},
		{name: "lone low surrogate", body: `{"sku":"\udc00"}`, wantErr: "sku: invalid escape sequence"},
		{name: "high surrogate then letter", body: `{"sku":"\ud800\u0041"}`, wantErr: "sku: invalid escape sequence"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b claimBody
			err := b.parse([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("parse(%q) error = %v; want %q", tc.body, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q) = %v; want accepted", tc.body, err)
			}
			got := fields{string(b.CampaignID), string(b.SKU), string(b.UserID), string(b.DeviceID), string(b.RequestID)}
			if got != tc.want {
				t.Errorf("parse(%q) = %+v; want %+v", tc.body, got, tc.want)
			}
		})
	}
}

// TestParseReuse checks a pooled claimBody forgets the previous request entirely.
func TestParseReuse(t *testing.T) {
	var b claimBody
	if err := b.parse([]byte(`{"sku":"\u0061","user_id":"u","device_id":"d","request_id":"r","campaign_id":"c"}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.parse([]byte(`{"sku":"b"}`)); err != nil {
		t.Fatal(err)
	}
	if string(b.SKU) != "b" || b.UserID != nil || b.DeviceID != nil || b.RequestID != nil || b.CampaignID != nil || b.seen != fSKU {
		t.Errorf("after reuse: %+v; want only sku=b", b)
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"cny-2027", true},
		{"A.b_c:d-9", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a b", false},
		{"a*", false},
		{"{a}", false},
		{"a/b", false},
		{"红包", false},
		{"a\x00", false},
		{"a\"", false},
	}
	for _, tc := range tests {
		if got := validID([]byte(tc.id)); got != tc.want {
			t.Errorf("validID(%q) = %v; want %v", tc.id, got, tc.want)
		}
	}
}

// request builds a RequestCtx as the server would hand it to the handler.
func request(method, contentType, body string, remote string, headers ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI("/v1/claims")
	if contentType != "" {
		req.Header.SetContentType(contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	req.SetBodyString(body)
	ctx := &fasthttp.RequestCtx{}
	addr, err := net.ResolveTCPAddr("tcp", remote)
	if err != nil {
		panic(err)
	}
	ctx.Init(&req, addr, nil)
	return ctx
}

// TestDecode covers what decode adds to the parser: content type, size, the rules on
// ids, the Idempotency-Key header and the client IP.
func TestDecode(t *testing.T) {
	body := func(kv ...string) string {
		m := map[string]string{"campaign_id": "c-1", "sku": "rp-50", "user_id": "u-1", "device_id": "d-1", "request_id": "r-1"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<absent>" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	idRule := ": must be 1-64 characters of [A-Za-z0-9._:-]"
	tests := []struct {
		name, ct, body string
		headers        []string
		remote         string
		proxies        string
		wantStatus     int
		wantMsg        string
		wantRequest    string
		wantIP         string
	}{
		{name: "valid", ct: "application/json", body: body(), wantRequest: "r-1", wantIP: "192.0.2.7"},
		{name: "content type with charset", ct: "application/json; charset=utf-8", body: body(), wantRequest: "r-1", wantIP: "192.0.2.7"},
		{name: "content type in capitals", ct: "Application/JSON", body: body(), wantRequest: "r-1", wantIP: "192.0.2.7"},
		{name: "Idempotency-Key instead of request_id", ct: "application/json", body: body("request_id", "<absent>"),
			headers: []string{"Idempotency-Key", "hdr-9"}, wantRequest: "hdr-9", wantIP: "192.0.2.7"},
		{name: "header equal to body", ct: "application/json", body: body(),
			headers: []string{"Idempotency-Key", "r-1"}, wantRequest: "r-1", wantIP: "192.0.2.7"},
		{name: "64-character ids", ct: "application/json", body: body("user_id", strings.Repeat("u", 64)), wantRequest: "r-1", wantIP: "192.0.2.7"},

		{name: "no content type", body: body(), wantStatus: 415, wantMsg: "Content-Type must be application/json"},
		{name: "form content type", ct: "application/x-www-form-urlencoded", body: body(), wantStatus: 415, wantMsg: "Content-Type must be application/json"},
		{name: "text/json", ct: "text/json", body: body(), wantStatus: 415, wantMsg: "Content-Type must be application/json"},
		{name: "body too large", ct: "application/json", body: body("sku", strings.Repeat("x", 4100)), wantStatus: 413, wantMsg: "body larger than 4096 bytes"},
		{name: "missing device_id", ct: "application/json", body: body("device_id", "<absent>"), wantStatus: 400, wantMsg: "device_id: required"},
		{name: "missing campaign_id", ct: "application/json", body: body("campaign_id", "<absent>"), wantStatus: 400, wantMsg: "campaign_id: required"},
		{name: "missing sku", ct: "application/json", body: body("sku", "<absent>"), wantStatus: 400, wantMsg: "sku: required"},
		{name: "missing user_id", ct: "application/json", body: body("user_id", "<absent>"), wantStatus: 400, wantMsg: "user_id: required"},
		{name: "missing request_id", ct: "application/json", body: body("request_id", "<absent>"), wantStatus: 400,
			wantMsg: "request_id: required (in the body or the Idempotency-Key header)"},
		{name: "header and body differ", ct: "application/json", body: body(), headers: []string{"Idempotency-Key", "r-2"},
			wantStatus: 400, wantMsg: "request_id: differs from the Idempotency-Key header"},
		{name: "bad Idempotency-Key", ct: "application/json", body: body("request_id", "<absent>"), headers: []string{"Idempotency-Key", "a b"},
			wantStatus: 400, wantMsg: "request_id" + idRule},
		{name: "empty id", ct: "application/json", body: body("sku", ""), wantStatus: 400, wantMsg: "sku" + idRule},
		{name: "id too long", ct: "application/json", body: body("user_id", strings.Repeat("u", 65)), wantStatus: 400, wantMsg: "user_id" + idRule},
		{name: "star", ct: "application/json", body: body("device_id", "d*"), wantStatus: 400, wantMsg: "device_id" + idRule},
		{name: "brace (hash tag)", ct: "application/json", body: body("campaign_id", "{c}"), wantStatus: 400, wantMsg: "campaign_id" + idRule},
		{name: "space", ct: "application/json", body: body("request_id", "r 1"), wantStatus: 400, wantMsg: "request_id" + idRule},
		{name: "unicode", ct: "application/json", body: body("user_id", "用户"), wantStatus: 400, wantMsg: "user_id" + idRule},
		{name: "parser refusal passes through", ct: "application/json", body: `{"sku":1}`, wantStatus: 400, wantMsg: "sku: must be a string"},

		{name: "XFF ignored from an untrusted peer", ct: "application/json", body: body(), headers: []string{"X-Forwarded-For", "203.0.113.9"},
			wantRequest: "r-1", wantIP: "192.0.2.7"},
		{name: "XFF from a trusted proxy", ct: "application/json", body: body(), proxies: "192.0.2.0/24",
			headers: []string{"X-Forwarded-For", "198.51.100.1, 203.0.113.9"}, wantRequest: "r-1", wantIP: "203.0.113.9"},
		{name: "XFF skips trusted hops", ct: "application/json", body: body(), proxies: "192.0.2.0/24,10.0.0.0/8",
			headers: []string{"X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3"}, wantRequest: "r-1", wantIP: "203.0.113.9"},
		{name: "XFF over two headers", ct: "application/json", body: body(), proxies: "192.0.2.0/24,10.0.0.0/8",
			headers: []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-For", "10.1.2.3"}, wantRequest: "r-1", wantIP: "203.0.113.9"},
		{name: "XFF all trusted", ct: "application/json", body: body(), proxies: "192.0.2.0/24,10.0.0.0/8",
			headers: []string{"X-Forwarded-For", "10.1.2.3"}, wantRequest: "r-1", wantIP: "10.1.2.3"},
		{name: "XFF garbage", ct: "application/json", body: body(), proxies: "192.0.2.0/24",
			headers: []string{"X-Forwarded-For", "not-an-ip"}, wantStatus: 400, wantMsg: "X-Forwarded-For: not a list of IP addresses"},
		{name: "IPv6 peer", ct: "application/json", body: body(), remote: "[2001:db8::1]:4000", wantRequest: "r-1", wantIP: "2001:db8::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			for _, p := range strings.Split(tc.proxies, ",") {
				if p != "" {
					cfg.TrustedProxies = append(cfg.TrustedProxies, netip.MustParsePrefix(p))
				}
			}
			s := &Server{cfg: cfg}
			remote := tc.remote
			if remote == "" {
				remote = "192.0.2.7:5555"
			}
			ctx := request("POST", tc.ct, tc.body, remote, tc.headers...)
			var st reqState
			status, msg := s.decode(ctx, &st)
			if status != tc.wantStatus || msg != tc.wantMsg {
				t.Fatalf("decode = %d %q; want %d %q", status, msg, tc.wantStatus, tc.wantMsg)
			}
			if status != 0 {
				return
			}
			if st.req.RequestID != tc.wantRequest || st.req.IP != tc.wantIP {
				t.Errorf("request_id %q ip %q; want %q %q", st.req.RequestID, st.req.IP, tc.wantRequest, tc.wantIP)
			}
		})
	}
}

// TestHotPathAllocs holds the allocation budget of the claim hot path: parsing,
// validating and encoding the answer of a valid claim allocate nothing.
func TestHotPathAllocs(t *testing.T) {
	body := []byte(`{"campaign_id":"cny-2027","sku":"rp-50","user_id":"u-1001","device_id":"d-9f2c","request_id":"6f\u0031c2b"}`)
	st := &reqState{out: make([]byte, 0, 512)}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := st.body.parse(body); err != nil {
			t.Fatal(err)
		}
		b := &st.body
		for _, v := range [][]byte{b.CampaignID, b.SKU, b.UserID, b.DeviceID, b.RequestID} {
			if !validID(v) {
				t.Fatalf("invalid %q", v)
			}
		}
		st.out = appendAccepted(st.out[:0], "cny-2027.0123456789abcdefghijklmnop", str(b.CampaignID),
			str(b.SKU), str(b.UserID), 50, 1_800_000_000_000)
	})
	if allocs != 0 {
		t.Errorf("parse+validate+encode allocated %.1f times per claim; want 0", allocs)
	}
	if !json.Valid(st.out) {
		t.Errorf("encoded answer is not JSON: %s", st.out)
	}

	// The same through decode, which also reads the headers and resolves the client IP.
	s := &Server{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}}
	ctx := request("POST", "application/json", string(body), "192.0.2.7:5555", "X-Forwarded-For", "203.0.113.9")
	allocs = testing.AllocsPerRun(1000, func() {
		if status, msg := s.decode(ctx, st); status != 0 {
			t.Fatalf("decode: %d %s", status, msg)
		}
		st.out = appendAccepted(st.out[:0], "cny-2027.0123456789abcdefghijklmnop", st.req.CampaignID,
			st.req.SKU, st.req.UserID, 50, 1_800_000_000_000)
	})
	if allocs != 0 {
		t.Errorf("decode+encode allocated %.1f times per claim; want 0", allocs)
	}
	if st.req.IP != "203.0.113.9" {
		t.Errorf("ip = %q", st.req.IP)
	}
	want := `{"result":"accepted","claim_id":"cny-2027.0123456789abcdefghijklmnop","campaign_id":"cny-2027","sku":"rp-50","user_id":"u-1001","value":50,"expires_at":"2027-01-15T08:00:00.000Z"}`
	if !bytes.Equal(st.out, []byte(want)) {
		t.Errorf("answer\n got %s\nwant %s", st.out, want)
	}
}

// TestIDsCannotAliasKeys is FuzzKeyLayout over a fixed set of ids chosen to look like
// the layout's own separators and kind prefixes: every key built from them is distinct.
// ':' is in the contract's charset and is safe: the kind of a key is fixed by the
// prefix before the first user-controlled byte, never by splitting on ':'. '{' and '}'
// are not: the control below shows a brace in a campaign id would alias another key.
func TestIDsCannotAliasKeys(t *testing.T) {
	ids := []string{"c", "risk", ":", "::", "c:sku", "sku:x", "rq:x", "x:rq:y", "meta", "skus", "a:b:c", "bl:x",
		"vd:x", "rej", "rebuild:uc", "fg:c", "fg:{c}:meta"[3:6]} // the last is "{c}", which must be refused
	owner := map[string]laidOut{}
	n := 0
	for k := range keyKinds() {
		for _, c := range ids {
			for _, x := range ids {
				if !validID([]byte(c)) || !validID([]byte(x)) {
					continue
				}
				l := layoutKey(uint8(k), c, x)
				if prev, ok := owner[l.key]; ok && prev != l {
					t.Errorf("%s(%q, %q) and %s(%q, %q) are both Redis key %q", prev.kind, prev.c, prev.x, l.kind, l.c, l.x, l.key)
				}
				owner[l.key] = l
				n++
			}
		}
	}
	if n == 0 || len(owner) < 100 {
		t.Fatalf("only %d keys built from %d combinations", len(owner), n)
	}

	// The control: if ids could hold '}', campaign "c}:sku:x" would share its meta hash
	// with SKU "x}:meta" of campaign "c" (and leave its own hash-tag slot).
	if rkeys.Meta("c}:sku:x") != rkeys.SKU("c", "x}:meta") {
		t.Fatalf("the control collision no longer collides: %q vs %q", rkeys.Meta("c}:sku:x"), rkeys.SKU("c", "x}:meta"))
	}
	for _, id := range []string{"c}:sku:x", "x}:meta", "{c}"} {
		if validID([]byte(id)) {
			t.Errorf("validID(%q) = true; a brace in an id can alias keys", id)
		}
	}
	// Hash-tag braces, glob characters (KEYS/SCAN patterns), whitespace and the tab that
	// separates the idempotency record's fields are refused wherever they appear.
	for _, c := range "{}*?[]\\ \t\n\r\x00/\"'," {
		for _, id := range []string{string(c), "a" + string(c), string(c) + "a", "a" + string(c) + "b"} {
			if validID([]byte(id)) {
				t.Errorf("validID(%q) = true", id)
			}
		}
	}
}
