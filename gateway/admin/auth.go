package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// Who may use the admin listener (docs/SECURITY.md). Every decision about an admin
// caller is here: named bearer tokens, the cross-site refusal and which operational
// endpoints need a token.

// NamedToken is one admin token and the name its changes are audited under.
type NamedToken struct {
	Name, Token string
}

// MinTokenChars is the shortest admin token FLASH_ADMIN_TOKENS accepts.
const MinTokenChars = 32

// ParseTokens reads FLASH_ADMIN_TOKENS: "name:token,name:token". Each name is 1-64
// characters of [A-Za-z0-9._-], unique, and each token at least MinTokenChars long and
// unique; an error names the entry (by its name or position, never the token).
func ParseTokens(v string) ([]NamedToken, error) {
	var out []NamedToken
	names, toks := map[string]bool{}, map[string]bool{}
	for i, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		name, tok, ok := strings.Cut(e, ":")
		name, tok = strings.TrimSpace(name), strings.TrimSpace(tok)
		switch {
		case !ok || name == "":
			return nil, fmt.Errorf("FLASH_ADMIN_TOKENS entry %d: want name:token", i+1)
		case !validName(name):
			return nil, fmt.Errorf("FLASH_ADMIN_TOKENS entry %d: name %q: want 1-64 characters of [A-Za-z0-9._-]", i+1, name)
		case len(tok) < MinTokenChars:
			return nil, fmt.Errorf("FLASH_ADMIN_TOKENS entry %q: the token has %d characters, at least %d are required", name, len(tok), MinTokenChars)
		case names[name]:
			return nil, fmt.Errorf("FLASH_ADMIN_TOKENS entry %q: the name is given twice", name)
		case toks[tok]:
			return nil, fmt.Errorf("FLASH_ADMIN_TOKENS entry %q: the same token as an earlier entry", name)
		}
		names[name], toks[tok] = true, true
		out = append(out, NamedToken{Name: name, Token: tok})
	}
	return out, nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

type tokenDigest struct {
	name   string
	digest [sha256.Size]byte
}

// setTokens prepares the tokens' digests: Config.Tokens, and the deprecated
// Config.Token as one named "admin".
func (s *Server) setTokens() error {
	toks := append([]NamedToken(nil), s.cfg.Tokens...)
	if s.cfg.Token != "" {
		for _, t := range toks {
			if t.Name == "admin" {
				return fmt.Errorf("admin config: FLASH_ADMIN_TOKEN is the token named \"admin\", and FLASH_ADMIN_TOKENS names one \"admin\" too")
			}
		}
		toks = append(toks, NamedToken{Name: "admin", Token: s.cfg.Token})
	}
	for _, t := range toks {
		if t.Token == "" || t.Name == "" {
			return fmt.Errorf("admin config: a token needs a name and a value")
		}
		s.tokens = append(s.tokens, tokenDigest{name: t.Name, digest: sha256.Sum256([]byte(t.Token))})
	}
	return nil
}

// hasTokens reports whether the admin API is token-protected.
func (s *Server) hasTokens() bool { return len(s.tokens) > 0 }

// actor authenticates a request: the name of the admin token it carries in
// Authorization: Bearer, or "local" on a loopback admin listener without tokens. ok is
// false otherwise. Only admin tokens are looked at: a partner key (X-Partner-Key), an
// end-user JWT or anything else is not an admin credential, whatever header it is in.
func (s *Server) actor(ctx *fasthttp.RequestCtx) (string, bool) {
	if !s.hasTokens() {
		return "local", true // loopback only: checked in New
	}
	h := ctx.Request.Header.Peek("Authorization")
	if len(h) < len(bearer) || !bytes.EqualFold(h[:len(bearer)], bearer) {
		return "", false
	}
	// Comparing digests keeps the comparison constant-time in the token's length, and
	// every token is compared, so the time says nothing about which one matched.
	got := sha256.Sum256(bytes.TrimSpace(h[len(bearer):]))
	name := ""
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(got[:], t.digest[:]) == 1 {
			name = t.name
		}
	}
	return name, name != ""
}

var bearer = []byte("Bearer ")

func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	_, ok := s.actor(ctx)
	return ok
}

func (s *Server) unauthorized(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="flashgate-admin"`)
	writeJSON(ctx, fasthttp.StatusUnauthorized, bodyUnauthorized)
}

// operational reports whether /metrics may be served to this request: always on a
// loopback listener, else only with an admin token (what the metrics say about
// traffic and internals is not for the world).
func (s *Server) operational(ctx *fasthttp.RequestCtx) bool {
	if s.loopback {
		return true
	}
	return s.authorized(ctx)
}

var bodyCrossSite = []byte(`{"error":"cross_site","message":"state-changing admin calls are refused from a web page of another origin"}`)

// crossSite reports whether a state-changing request comes from a browser page of
// another origin (CSRF, or DNS rebinding against a loopback admin listener without
// tokens): an Origin header that is "null" or whose host:port is not the request's
// Host, or Sec-Fetch-Site cross-site/same-site. Non-browser clients (curl, riskctl,
// scripts) send neither header and pass. Reads (GET, HEAD) are not refused: they change
// nothing, and a browser does not let another origin read the answer.
func crossSite(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsGet() || ctx.IsHead() || ctx.IsOptions() {
		return false
	}
	switch string(ctx.Request.Header.Peek("Sec-Fetch-Site")) {
	case "cross-site", "same-site":
		return true
	}
	origin := ctx.Request.Header.Peek("Origin")
	if len(origin) == 0 {
		return false
	}
	u, err := url.Parse(string(origin))
	if err != nil || u.Host == "" {
		return true // "null" (sandboxed frames, file://) or garbage
	}
	return !strings.EqualFold(u.Host, string(ctx.Host()))
}
