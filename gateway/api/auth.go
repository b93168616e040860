package api

import (
	"bytes"
	"errors"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// End-user tokens (CONTRACT.md "Verified identity"): with a secret set, every public
// call made for a user carries Authorization: Bearer <JWT>, HS256 with that secret, and
// the token's sub is the user. This file holds every decision about who the caller is;
// the handlers only ask Auth.user.
//
// Verification (auth_jws.go): golang-jwt/jwt/v5's ParseWithClaims (encoding/json into
// a map and a struct, hmac.New per call: ~46 allocations, ~11 µs) costs more than the
// 5 µs issue 14 allows a first-seen token, and in a flash sale a million users each tap
// once, so the first sight IS the per-request cost. auth_jws.go applies the library's
// rules as NewAuth configured it - alg exactly HS256 before any key use, the signature
// by HMAC-SHA256 in constant time (crypto/hmac, as the library's Verify, keyed once
// per pooled scratch), exp required, nbf honoured, no leeway - reading header and
// claims with a strict, pooled fastjson reader, and refuses, besides, a few spellings
// the library would accept (duplicate or case-folded registered claims, "crit",
// numeric strings, non-canonical base64: listed there). FuzzVerifyDifferential
// (auth_differential_test.go) holds it to the library's ParseWithClaims - same
// verdict, sub, exp and nbf - on every input; docs/SECURITY.md "The fast verifier".
//
// The claim handler allocates nothing per request (alloc_test.go), so a verified token
// is also remembered in a small bounded cache (tokenCache) and a client that sends the
// same token again - an app sends one token for its whole session - is answered from
// the cache without allocating or hashing.

// Auth verifies end-user tokens. Safe for concurrent use.
type Auth struct {
	secret  []byte
	cache   tokenCache
	scratch sync.Pool // of *jwsScratch (auth_jws.go)
	now     func() time.Time
}

// maxTokenBytes bounds the token a request may carry (a sign-in service's HS256 token
// with a user id is a few hundred bytes); longer is refused before it is parsed.
const maxTokenBytes = 2048

// NewAuth builds the verifier for HS256 tokens signed with secret (at least 32 bytes:
// HS256's key should be as long as its output).
func NewAuth(secret []byte) (*Auth, error) {
	if len(secret) < 32 {
		return nil, errors.New("user token secret (FLASH_USER_TOKEN_SECRET): at least 32 bytes are required")
	}
	a := &Auth{secret: bytes.Clone(secret), now: time.Now}
	a.initScratch()
	a.cache.init()
	return a, nil
}

var (
	hdrAuthorization    = []byte("Authorization")
	hdrWWWAuthenticate  = []byte("WWW-Authenticate")
	valBearerRealm      = []byte(`Bearer realm="flashgate"`)
	bodyUnauthenticated = []byte(`{"error":"unauthenticated"}`)
	bodyUserMismatch    = []byte(`{"error":"user_mismatch"}`)
)

// user returns the verified user (the token's sub) of a request, or ok false when the
// Authorization header is missing, not "Bearer <token>", or the token is malformed,
// badly signed, signed with another algorithm (alg none included), expired, not yet
// valid, or has no sub or one that is not a valid user id. The returned bytes are the
// cache's and must not be modified; they stay valid after the request.
func (a *Auth) user(ctx *fasthttp.RequestCtx) ([]byte, bool) {
	h := ctx.Request.Header.PeekBytes(hdrAuthorization)
	if len(h) <= len(bearer) || !bytes.EqualFold(h[:len(bearer)], bearer) {
		return nil, false
	}
	tok := bytes.TrimSpace(h[len(bearer):])
	return a.verify(tok)
}

var bearer = []byte("Bearer ")

// verify checks one compact JWS.
func (a *Auth) verify(tok []byte) ([]byte, bool) {
	if len(tok) == 0 || len(tok) > maxTokenBytes {
		return nil, false
	}
	dot := bytes.LastIndexByte(tok, '.')
	if dot < 0 || dot == len(tok)-1 {
		return nil, false
	}
	sig := tok[dot+1:]
	now := a.now()
	if e := a.cache.get(sig, tok); e != nil {
		if !now.Before(e.exp) || now.Before(e.nbf) {
			return nil, false
		}
		return e.sub, true
	}
	e, ok := a.verifyCold(tok, now)
	if !ok {
		return nil, false
	}
	a.cache.put(e)
	return e.sub, true
}

// tokenCache remembers tokens that verified, keyed by their signature.
//
// Why this is safe: an entry is only ever added after the whole token verified with the
// secret (verifyCold), and a hit requires the request's token to be byte-for-byte
// the stored one (the signature only finds the entry). HS256 is deterministic, so the
// same bytes verify the same way every time; what changes with time - exp and nbf - is
// checked again on every hit. A forged token never enters the cache (it fails
// verification) and cannot evict anything; only valid tokens can, and they cost an
// attacker a user account each. Signatures are HMAC outputs, so they spread evenly
// over the shards.
//
// The bound: 16 shards of two generations of at most tokenShardCap entries; when a
// shard's current generation is full it becomes the old one and the previous old one is
// dropped, so at most 2 x 16 x tokenShardCap tokens (64 Ki, about 25 MB at 400 bytes a
// token) are held, and a token used within the last generation stays. A token that
// fell out is just verified again (a few microseconds).
type tokenCache struct {
	shards [16]tokenShard
}

const tokenShardCap = 2048

type tokenShard struct {
	mu       sync.Mutex
	cur, old map[string]*tokenEntry
}

type tokenEntry struct {
	token, sub []byte
	exp, nbf   time.Time
}

func (c *tokenCache) init() {
	for i := range c.shards {
		c.shards[i].cur = make(map[string]*tokenEntry, tokenShardCap)
	}
}

func (c *tokenCache) shard(sig []byte) *tokenShard { return &c.shards[sig[0]&15] }

func (c *tokenCache) get(sig, tok []byte) *tokenEntry {
	s := c.shard(sig)
	s.mu.Lock()
	e := s.cur[string(sig)]
	if e == nil && s.old != nil {
		if e = s.old[string(sig)]; e != nil {
			s.insert(string(sig[:len(sig):len(sig)]), e) // still in use: keep it
		}
	}
	s.mu.Unlock()
	if e == nil || !bytes.Equal(e.token, tok) {
		return nil
	}
	return e
}

func (c *tokenCache) put(e *tokenEntry) {
	sig := e.token[bytes.LastIndexByte(e.token, '.')+1:]
	s := c.shard(sig)
	s.mu.Lock()
	s.insert(string(sig), e)
	s.mu.Unlock()
}

// insert adds e under key, turning the generations over when the current one is full.
func (s *tokenShard) insert(key string, e *tokenEntry) {
	if len(s.cur) >= tokenShardCap {
		s.old, s.cur = s.cur, make(map[string]*tokenEntry, tokenShardCap)
	}
	s.cur[key] = e
}

// caller answers who a request is for: the verified sub when user tokens are on
// (writing 401 and returning ok false when there is no valid token), else nil - the
// caller then names the user in the request (body, or ?user_id= on a GET), which is
// believed (FLASH_TRUST_BODY_USER, or a loopback-only dev gateway).
func (s *Server) caller(ctx *fasthttp.RequestCtx) (sub []byte, ok bool) {
	if s.cfg.Auth == nil {
		return nil, true
	}
	sub, ok = s.cfg.Auth.user(ctx)
	if !ok {
		s.metrics.unauthenticated.Inc()
		ctx.Response.Header.SetBytesKV(hdrWWWAuthenticate, valBearerRealm)
		writeJSON(ctx, fasthttp.StatusUnauthorized, bodyUnauthenticated)
	}
	return sub, ok
}

// mismatch answers 403 user_mismatch: a token for one user, a body naming another.
func (s *Server) mismatch(ctx *fasthttp.RequestCtx) {
	s.metrics.mismatch.Inc()
	writeJSON(ctx, fasthttp.StatusForbidden, bodyUserMismatch)
}
