package h5

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/api"
)

func reqCtx(method, uri string, headers ...string) *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		ctx.Request.Header.Set(headers[i], headers[i+1])
	}
	return ctx
}

// CORS answers only the configured origins; without any configured, no response
// carries Access-Control-Allow-Origin and a preflight is refused.
func TestCORS(t *testing.T) {
	next := func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(200); ctx.SetBodyString(`{}`) }
	for _, tc := range []struct {
		name, method, origin string
		configured           []string
		status               int
		allow                string
	}{
		{"none configured, GET", "GET", "https://evil.example", nil, 200, ""},
		{"none configured, preflight", "OPTIONS", "https://evil.example", nil, 403, ""},
		{"allowed GET", "GET", "https://app.example.com", []string{"https://app.example.com"}, 200, "https://app.example.com"},
		{"allowed preflight", "OPTIONS", "https://app.example.com", []string{"https://app.example.com"}, 204, "https://app.example.com"},
		{"other origin", "POST", "https://evil.example", []string{"https://app.example.com"}, 200, ""},
		{"other origin preflight", "OPTIONS", "https://evil.example", []string{"https://app.example.com"}, 403, ""},
		{"suffix is not the origin", "GET", "https://app.example.com.evil.example", []string{"https://app.example.com"}, 200, ""},
	} {
		s := &Server{origins: map[string]bool{}, metrics: api.NewMetrics(nil)}
		for _, o := range tc.configured {
			s.origins[o] = true
		}
		ctx := reqCtx(tc.method, "/v1/claims", "Origin", tc.origin, "Access-Control-Request-Method", "POST")
		s.Public(next)(ctx)
		if ctx.Response.StatusCode() != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, ctx.Response.StatusCode(), tc.status)
		}
		if got := string(ctx.Response.Header.Peek("Access-Control-Allow-Origin")); got != tc.allow {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", tc.name, got, tc.allow)
		}
		if tc.status == 204 && string(ctx.Response.Header.Peek("Access-Control-Allow-Headers")) == "" {
			t.Errorf("%s: preflight without Allow-Headers", tc.name)
		}
	}
}

// GET /v1/time is the server's clock in ms; only GET.
func TestTime(t *testing.T) {
	s := &Server{origins: map[string]bool{}, metrics: api.NewMetrics(nil)}
	ctx := reqCtx("GET", "/v1/time")
	s.Public(nil)(ctx)
	var v struct {
		Now int64 `json:"now_ms"`
	}
	if err := json.Unmarshal(ctx.Response.Body(), &v); err != nil || v.Now < 1_700_000_000_000 {
		t.Fatalf("%d %s: %v", ctx.Response.StatusCode(), ctx.Response.Body(), err)
	}
	ctx = reqCtx("POST", "/v1/time")
	s.Public(nil)(ctx)
	if ctx.Response.StatusCode() != 405 {
		t.Errorf("POST /v1/time: %d, want 405", ctx.Response.StatusCode())
	}
}

// The fault knob replaces only the first n accepted claims' answers.
func TestFaultClaim503(t *testing.T) {
	s := &Server{origins: map[string]bool{}, metrics: api.NewMetrics(nil), cfg: Config{FaultClaim503: 1}}
	s.faults.Store(1)
	next := func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(200) }
	var got []int
	for range 3 {
		ctx := reqCtx("POST", "/v1/claims")
		s.Public(next)(ctx)
		got = append(got, ctx.Response.StatusCode())
	}
	if got[0] != 503 || got[1] != 200 || got[2] != 200 {
		t.Errorf("statuses %v, want [503 200 200]", got)
	}
}
