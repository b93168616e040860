package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
)

// The allocation budget of the claim handler's own code (STYLE "an allocation budget on
// the hot path"): in steady state, taking the request state from the pool, decoding and
// validating the request, resolving the client IP, counting the outcome and encoding
// every kind of answer into fasthttp's response allocate nothing. What the claimer and
// its client libraries allocate per claim is counted separately, against real servers,
// in gateway/claimer/alloc_test.go.
func TestClaimHandlerAllocs(t *testing.T) {
	body := `{"campaign_id":"cny-2027","sku":"rp-50","user_id":"u-1001","device_id":"d-9f2c","request_id":"6f1c2b"}`
	outcomes := []struct {
		name string
		out  claimer.Outcome
		err  error
	}{
		{"accepted", claimer.Outcome{Code: claim.CodeAccepted, ClaimID: "cny-2027.0123456789abcdefghijklmnop", Value: 50, ExpiresAtMs: 1_800_000_000_000}, nil},
		{"replayed", claimer.Outcome{Code: claim.CodeAccepted, Replayed: true, ClaimID: "cny-2027.0123456789abcdefghijklmnop", Value: 50, ExpiresAtMs: 1_800_000_000_000}, nil},
		{"sold out", claimer.Outcome{Code: claim.CodeSoldOut}, nil},
		{"rejection replayed", claimer.Outcome{Code: claim.CodeNotStarted, Replayed: true}, nil},
		{"velocity", claimer.Outcome{Code: claim.CodeDeviceVelocity, RetryAfterMs: 1500}, nil},
		{"blocked", claimer.Outcome{Code: claim.CodeBlocked}, nil},
		{"unknown sku", claimer.Outcome{Code: claim.CodeUnknownSKU}, nil},
		{"key reuse", claimer.Outcome{Code: claim.CodeKeyReuse}, nil},
		{"unavailable", claimer.Outcome{}, claimer.ErrUnavailable},
	}
	for _, proxies := range []string{"", "192.0.2.0/24"} {
		cfg := Config{}
		if proxies != "" {
			cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(proxies)}
		}
		s := &Server{cfg: cfg, metrics: NewMetrics(nil), log: quietLog}
		ctx := request("POST", "application/json", body, "192.0.2.7:5555", "X-Forwarded-For", "203.0.113.9")
		for _, o := range outcomes {
			// The request state comes from statePool in the handler; here it is held, since
			// the race detector makes sync.Pool drop items on purpose.
			st := &reqState{out: make([]byte, 0, 512)}
			run := func() {
				ctx.Response.Reset()
				st.out = st.out[:0]
				if status, msg := s.decode(ctx, st); status != 0 {
					t.Fatalf("decode: %d %s", status, msg)
				}
				st.req.Outcome = o.out
				s.respond(ctx, st, o.err)
			}
			run() // warm the pool and fasthttp's buffers
			if !json.Valid(ctx.Response.Body()) {
				t.Fatalf("%s: answer is not JSON: %s", o.name, ctx.Response.Body())
			}
			if allocs := testing.AllocsPerRun(500, run); allocs != 0 {
				t.Errorf("%s (trusted proxies %q): the handler's own path allocated %.1f times per claim; want 0",
					o.name, proxies, allocs)
			}
		}
	}
}

// Refused requests - the cheapest thing a bot farm can send - go through the whole
// handler and are answered without allocating (they never reach the claimer). A body
// the parser rejects is not held to it: its error is built per request (parse.go).
func TestRefusedRequestAllocs(t *testing.T) {
	s := &Server{metrics: NewMetrics(nil), log: quietLog}
	for _, tc := range []struct{ name, ct, body string }{
		{"missing field", "application/json", `{"campaign_id":"c","sku":"s","user_id":"u","request_id":"r"}`},
		{"bad id", "application/json", `{"campaign_id":"c","sku":"s","user_id":"u","device_id":"d*","request_id":"r"}`},
		{"wrong content type", "text/plain", `{}`},
	} {
		ctx := request("POST", tc.ct, tc.body, "192.0.2.7:5555")
		run := func() {
			ctx.Response.Reset()
			s.Handler(ctx)
		}
		run()
		if code := ctx.Response.StatusCode(); code < 400 || code >= 500 {
			t.Fatalf("%s: status %d, want a 4xx", tc.name, code)
		}
		// Under -race sync.Pool drops items on purpose, so the handler's pooled request
		// state is allocated again now and then.
		if allocs := testing.AllocsPerRun(500, run); allocs > poolAllocs {
			t.Errorf("%s: a refused request allocated %.1f times; want %d (answer %s)", tc.name, allocs, poolAllocs, ctx.Response.Body())
		}
	}
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))
