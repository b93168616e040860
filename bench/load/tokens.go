package load

import (
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokens mints the end-user tokens a gateway with FLASH_USER_TOKEN_SECRET requires
// (CONTRACT.md "Verified identity"): HS256, sub = the user, exp a day ahead. One token
// per user, minted on the user's first request and reused, as an app reuses its
// session's token - so the generator signs about once per user, not per request, and
// the gateway's verified-token cache sees what production traffic gives it.
type tokens struct {
	secret []byte
	exp    int64
	m      sync.Map // user -> "Bearer <jwt>"
}

func newTokens(secret string) *tokens {
	if secret == "" {
		return nil
	}
	return &tokens{secret: []byte(secret), exp: time.Now().Add(24 * time.Hour).Unix()}
}

// header returns the Authorization value for user.
func (t *tokens) header(user string) string {
	if v, ok := t.m.Load(user); ok {
		return v.(string)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "exp": t.exp}).SignedString(t.secret)
	if err != nil {
		return "" // HS256 with a []byte key does not fail
	}
	v, _ := t.m.LoadOrStore(user, "Bearer "+s)
	return v.(string)
}
