package load

import (
	"bytes"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/bench/traffic"
)

// With a user token secret every request carries a valid HS256 token whose sub is the
// request's user, and each user's token is one and the same across its requests.
func TestUserTokensMintedPerUser(t *testing.T) {
	const secret = "bench-user-token-secret-0123456789abcdef"
	var mu sync.Mutex
	byUser := map[string]map[string]bool{}
	bad := 0
	target := serve(t, func(ctx *fasthttp.RequestCtx) {
		h := ctx.Request.Header.Peek("Authorization")
		var claims jwt.RegisteredClaims
		_, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()).
			ParseWithClaims(string(bytes.TrimPrefix(h, []byte("Bearer "))), &claims, func(*jwt.Token) (any, error) { return []byte(secret), nil })
		mu.Lock()
		defer mu.Unlock()
		if err != nil || !bytes.HasPrefix(h, []byte("Bearer ")) {
			bad++
			ctx.SetStatusCode(401)
			return
		}
		if byUser[claims.Subject] == nil {
			byUser[claims.Subject] = map[string]bool{}
		}
		byUser[claims.Subject][string(h)] = true
		accept(ctx, "c-test.0123456789abcdefghijklmnop"+claims.Subject[len(claims.Subject)-1:])
	})
	cfg := baseConfig(target)
	cfg.Traffic.Mix = traffic.Mix{}
	cfg.Rate, cfg.Traffic.Users = 500, 50
	cfg.UserTokenSecret = secret
	runBounded(t, cfg)
	mu.Lock()
	defer mu.Unlock()
	if bad > 0 {
		t.Errorf("%d requests without a valid token", bad)
	}
	if len(byUser) == 0 {
		t.Fatal("no tokens seen")
	}
	for u, toks := range byUser {
		if len(toks) != 1 {
			t.Errorf("user %s sent %d different tokens; want one, reused", u, len(toks))
		}
	}
}
