package api

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

func mint(t testing.TB, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newAuth(t testing.TB) *Auth {
	t.Helper()
	a, err := NewAuth(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// b64 is base64url without padding, as JWS uses.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestAuthRefusals: every token the contract calls unauthenticated is refused, the
// first time (the library's verdict) and again (no cache entry was made for it).
func TestAuthRefusals(t *testing.T) {
	a := newAuth(t)
	exp := time.Now().Add(time.Hour).Unix()
	good := mint(t, testSecret, jwt.MapClaims{"sub": "u-1", "exp": exp})
	parts := strings.Split(good, ".")
	for _, tc := range []struct{ name, header string }{
		{"missing", ""},
		{"not bearer", "Basic " + good},
		{"empty bearer", "Bearer "},
		{"malformed", "Bearer not.a.jwt"},
		{"two parts", "Bearer " + parts[0] + "." + parts[1]},
		{"forged payload", "Bearer " + parts[0] + "." + b64(`{"sub":"u-2","exp":`+itoa(exp)+`}`) + "." + parts[2]},
		{"wrong key", "Bearer " + mint(t, []byte("another-secret-of-thirty-two-bytes!!"), jwt.MapClaims{"sub": "u-1", "exp": exp})},
		{"expired", "Bearer " + mint(t, testSecret, jwt.MapClaims{"sub": "u-1", "exp": time.Now().Add(-time.Second).Unix()})},
		{"no exp", "Bearer " + mint(t, testSecret, jwt.MapClaims{"sub": "u-1"})},
		{"no sub", "Bearer " + mint(t, testSecret, jwt.MapClaims{"exp": exp})},
		{"bad sub", "Bearer " + mint(t, testSecret, jwt.MapClaims{"sub": "u 1*", "exp": exp})},
		{"not yet valid", "Bearer " + mint(t, testSecret, jwt.MapClaims{"sub": "u-1", "exp": exp, "nbf": time.Now().Add(time.Hour).Unix()})},
		{"alg none", "Bearer " + b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"u-1","exp":`+itoa(exp)+`}`) + "."},
		{"alg none with signature", "Bearer " + b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"u-1","exp":`+itoa(exp)+`}`) + "." + parts[2]},
		{"alg HS512", "Bearer " + hs512(t, exp)},
	} {
		for round := range 2 {
			ctx := request("POST", "application/json", "{}", "192.0.2.7:5555")
			if tc.header != "" {
				ctx.Request.Header.Set("Authorization", tc.header)
			}
			if sub, ok := a.user(ctx); ok {
				t.Errorf("%s (round %d): accepted as %q", tc.name, round, sub)
			}
		}
	}
	ctx := request("POST", "application/json", "{}", "192.0.2.7:5555", "Authorization", "bearer "+good)
	if sub, ok := a.user(ctx); !ok || string(sub) != "u-1" {
		t.Fatalf("good token: %q %v", sub, ok)
	}
}

func hs512(t testing.TB, exp int64) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"sub": "u-1", "exp": exp}).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A cached token expires on time: the cache re-checks exp on every hit.
func TestAuthCacheHonoursExpiry(t *testing.T) {
	a := newAuth(t)
	now := time.Now()
	a.now = func() time.Time { return now }
	tok := mint(t, testSecret, jwt.MapClaims{"sub": "u-1", "exp": now.Add(10 * time.Second).Unix()})
	ctx := request("POST", "application/json", "{}", "192.0.2.7:5555", "Authorization", "Bearer "+tok)
	if _, ok := a.user(ctx); !ok {
		t.Fatal("fresh token refused")
	}
	if _, ok := a.user(ctx); !ok {
		t.Fatal("cached token refused")
	}
	now = now.Add(11 * time.Second)
	if _, ok := a.user(ctx); ok {
		t.Fatal("cached token accepted after its exp")
	}
	// The same signature with other bytes (a payload swapped under a cached signature)
	// finds the entry but is not it.
	now = now.Add(-11 * time.Second)
	p := strings.Split(tok, ".")
	forged := p[0] + "." + b64(`{"sub":"u-2","exp":9999999999}`) + "." + p[2]
	ctx2 := request("POST", "application/json", "{}", "192.0.2.7:5555", "Authorization", "Bearer "+forged)
	if sub, ok := a.user(ctx2); ok {
		t.Fatalf("payload swapped under a cached signature accepted as %q", sub)
	}
}

// The cache stays within its bound however many valid tokens arrive.
func TestAuthCacheBounded(t *testing.T) {
	a := newAuth(t)
	exp := time.Now().Add(time.Hour).Unix()
	for i := range 3 * 16 * tokenShardCap {
		tok := mint(t, testSecret, jwt.MapClaims{"sub": "u-" + strconv.Itoa(i), "exp": exp})
		if _, ok := a.verify([]byte(tok)); !ok {
			t.Fatal("refused a good token")
		}
	}
	total := 0
	for i := range a.cache.shards {
		s := &a.cache.shards[i]
		if len(s.cur) > tokenShardCap || len(s.old) > tokenShardCap {
			t.Fatalf("shard %d: %d + %d entries, cap %d", i, len(s.cur), len(s.old), tokenShardCap)
		}
		total += len(s.cur) + len(s.old)
	}
	if total > 2*16*tokenShardCap {
		t.Fatalf("%d tokens held, bound %d", total, 2*16*tokenShardCap)
	}
}

// The claim handler with user tokens on: the allocation budget of alloc_test.go holds
// for a client sending its session's token (a cache hit), including the 401 for a
// missing token and the 403 for a body naming another user.
func TestClaimHandlerAllocsWithTokens(t *testing.T) {
	a := newAuth(t)
	tok := mint(t, testSecret, jwt.MapClaims{"sub": "u-1001", "exp": time.Now().Add(time.Hour).Unix()})
	s := &Server{cfg: Config{Auth: a}, metrics: NewMetrics(nil), log: quietLog}
	body := `{"campaign_id":"cny-2027","sku":"rp-50","user_id":"u-1001","device_id":"d-9f2c","request_id":"6f1c2b"}`
	noUser := `{"campaign_id":"cny-2027","sku":"rp-50","device_id":"d-9f2c","request_id":"6f1c2b"}`
	accepted := claimer.Outcome{Code: claim.CodeAccepted, ClaimID: "cny-2027.0123456789abcdefghijklmnop", Value: 50, ExpiresAtMs: 1_800_000_000_000}
	for _, tc := range []struct {
		name, body, auth string
		status           int
	}{
		{"token, body names the user", body, "Bearer " + tok, 200},
		{"token, body without user_id", noUser, "Bearer " + tok, 200},
	} {
		ctx := request("POST", "application/json", tc.body, "192.0.2.7:5555", "Authorization", tc.auth)
		st := &reqState{out: make([]byte, 0, 512)}
		run := func() {
			ctx.Response.Reset()
			st.out = st.out[:0]
			sub, ok := s.caller(ctx)
			if !ok {
				t.Fatal("token refused")
			}
			st.sub = sub
			if status, msg := s.decode(ctx, st); status != 0 {
				t.Fatalf("decode: %d %s", status, msg)
			}
			if st.req.UserID != string(sub) {
				t.Fatal("user mismatch")
			}
			st.req.Outcome = accepted
			s.respond(ctx, st, nil)
		}
		run()
		if ctx.Response.StatusCode() != tc.status || !strings.Contains(string(ctx.Response.Body()), `"user_id":"u-1001"`) {
			t.Fatalf("%s: %d %s", tc.name, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if allocs := testing.AllocsPerRun(500, run); allocs != 0 {
			t.Errorf("%s: the handler's own path allocated %.1f times per claim with a token; want 0", tc.name, allocs)
		}
	}
	// Refusals go through the whole handler (they never reach the claimer).
	other := mint(t, testSecret, jwt.MapClaims{"sub": "u-2002", "exp": time.Now().Add(time.Hour).Unix()})
	for _, tc := range []struct {
		name, auth string
		status     int
		want       string
	}{
		{"no token", "", 401, `{"error":"unauthenticated"}`},
		{"body names another user", "Bearer " + other, 403, `{"error":"user_mismatch"}`},
	} {
		ctx := request("POST", "application/json", body, "192.0.2.7:5555")
		if tc.auth != "" {
			ctx.Request.Header.Set("Authorization", tc.auth)
		}
		run := func() {
			ctx.Response.Reset()
			s.Handler(ctx)
		}
		run()
		if ctx.Response.StatusCode() != tc.status || string(ctx.Response.Body()) != tc.want {
			t.Fatalf("%s: %d %s; want %d %s", tc.name, ctx.Response.StatusCode(), ctx.Response.Body(), tc.status, tc.want)
		}
		if allocs := testing.AllocsPerRun(500, run); allocs > poolAllocs {
			t.Errorf("%s: refused with %.1f allocations; want %d", tc.name, allocs, poolAllocs)
		}
	}
}

// BenchmarkVerifyToken is the CPU verification adds per request (the contract's bound
// is 5 µs): "cached" is a client resending its session's token; "cold" a token seen for
// the first time (a fresh verifier every 4096 tokens, made outside the timer);
// "first-sight" what a flash sale's request pays - one verifier in steady state, every
// token new (more distinct tokens than the cache holds), so each request pays the full
// verification, the cache insert and its share of the generations turning over and of
// the garbage collection; "library" the same tokens through golang-jwt's
// ParseWithClaims as NewAuth used it before auth_jws.go (for comparison).
//
//	go test -run '^$' -bench BenchmarkVerifyToken -benchmem ./gateway/api/
func BenchmarkVerifyToken(b *testing.B) {
	a := newAuth(b)
	exp := time.Now().Add(time.Hour).Unix()
	tok := []byte(mint(b, testSecret, jwt.MapClaims{"sub": "u-1001", "exp": exp}))
	mintN := func(n int) [][]byte {
		toks := make([][]byte, n)
		for i := range toks {
			toks[i] = []byte(mint(b, testSecret, jwt.MapClaims{"sub": "u-" + strconv.Itoa(i), "exp": exp, "iat": exp - 3600}))
		}
		return toks
	}
	b.Run("cached", func(b *testing.B) {
		a.verify(tok)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := a.verify(tok); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		toks := mintN(4096)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			// A fresh verifier every len(toks) tokens, so each one is a miss.
			if i%len(toks) == 0 {
				b.StopTimer()
				a = newAuth(b)
				b.StartTimer()
			}
			if _, ok := a.verify(toks[i%len(toks)]); !ok {
				b.Fatal("refused")
			}
			i++
		}
	})
	// 3 x the cache's bound: a token comes round again only after it has been evicted.
	many := mintN(3 * 2 * 16 * tokenShardCap)
	b.Run("first-sight", func(b *testing.B) {
		a := newAuth(b)
		for _, t := range many { // fill the cache: steady state from the first timed token
			a.verify(t)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := a.verify(many[i%len(many)]); !ok {
				b.Fatal("refused")
			}
			i++
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, _, _, ok := libVerify(many[i%len(many)], time.Now()); !ok {
				b.Fatal("refused")
			}
			i++
		}
	})
}
