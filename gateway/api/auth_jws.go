package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fastjson"
)

// The cold path: a token seen for the first time (auth.go's comment says why this is
// the per-request cost of a flash sale). It decides exactly what golang-jwt/jwt/v5's
// ParseWithClaims into jwt.RegisteredClaims decides with NewAuth's options, except that
// it refuses a few tokens the library would accept (listed below and in docs/SECURITY.md
// "The fast verifier"); FuzzVerifyDifferential holds it to the library on every input.
//
// The signature: HMAC-SHA256 with crypto/hmac, compared with hmac.Equal (constant
// time) - the same primitives, called the same way, as the library's
// jwt.SigningMethodHS256.Verify (hmac.New, Write, hmac.Equal of Sum), except that the
// keyed HMAC is made once per pooled scratch and Reset between tokens instead of being
// rebuilt (hmac.New hashes the key's two blocks and allocates five times on every
// call: a third of the cold path). It runs over the raw "header.payload" bytes after
// the header said HS256 and before the claims are decoded, so a forgery costs one
// base64 decode of a small header, one HMAC and no claims parsing.
// TestMACMatchesLibrary holds it to the library's Verify; FuzzVerifyDifferential holds
// the whole verdict to the library's ParseWithClaims (which runs its Verify).
//
// The JSON is read with github.com/valyala/fastjson (validated first with
// fastjson.Validate, which is strict JSON: no trailing data, no control characters,
// valid escapes and numbers) through a pooled Parser, instead of encoding/json into a
// map and a struct.
//
// Rules, as the library applies them:
//   - three base64url segments without padding; the header an object whose "alg" is a
//     string equal to "HS256" (so "none", HS384/512, RS256... never reach the key);
//   - the claims an object; the registered claims typed as RegisteredClaims types them:
//     iss, jti strings or null; sub a string (here also a valid user id); aud null, a
//     string or an array of strings; exp, nbf, iat JSON numbers that strconv.ParseFloat
//     takes (null: absent), converted as jwt.NumericDate does (whole seconds, truncated
//     to jwt.TimePrecision); other members ignored;
//   - exp required, valid while now is before it; nbf, if present, not after now; no leeway.
//
// Refused on purpose although the library accepts (all need the secret to mint, so none
// is an attack today; each is a place where two JSON readers could disagree):
//   - any byte outside the base64url alphabet (the library's decoder skips CR and LF) and
//     non-canonical trailing bits (the library does not decode strictly): one token, one
//     spelling;
//   - a registered claim given twice, or spelled with other letter case ("SUB", "ſub":
//     encoding/json matches struct fields case-insensitively and the last one wins), and
//     "alg" given twice (the library's map keeps the last);
//   - a "crit" header member (RFC 7515 4.1.11: we understand no extension);
//   - a date as a JSON string ("exp":"1700000000": json.Number takes a numeric string);
//   - exp or nbf whose whole seconds do not fit in an int64 (the library converts with
//     int64(f), whose result Go leaves to the platform);
//   - JSON nested deeper than fastjson.MaxDepth (300) levels.

// jwsScratch is one cold verification's working memory, pooled per Auth (its HMAC is
// keyed with the Auth's secret).
type jwsScratch struct {
	buf      [maxTokenBytes]byte // decoded header, then decoded payload
	sig, sum [sha256Size]byte
	mac      hash.Hash
	p        fastjson.Parser
	c        claimsRead
}

const sha256Size = 32

// claimsRead is what the claims visitor found.
type claimsRead struct {
	seen     uint8 // one bit per registered claim
	bad      bool
	sub      []byte // points into the parser's buffer until copied
	exp, nbf time.Time
	num      []byte // a number's literal text
}

func (a *Auth) initScratch() {
	a.scratch.New = func() any { return &jwsScratch{mac: hmac.New(sha256.New, a.secret)} }
}

// macOK reports whether sig is the HMAC-SHA256 of text under the secret.
func (s *jwsScratch) macOK(text, sig []byte) bool {
	s.mac.Reset()
	s.mac.Write(text)
	return hmac.Equal(sig, s.mac.Sum(s.sum[:0]))
}

// strictB64 decodes JWS segments: no padding, canonical trailing bits. (It still skips
// CR and LF, so segments are checked against the alphabet first.)
var strictB64 = base64.RawURLEncoding.Strict()

// verifyCold verifies tok (length already bounded) and returns its cache entry.
func (a *Auth) verifyCold(tok []byte, now time.Time) (*tokenEntry, bool) {
	d1 := bytes.IndexByte(tok, '.')
	if d1 < 0 {
		return nil, false
	}
	d2 := bytes.IndexByte(tok[d1+1:], '.')
	if d2 < 0 {
		return nil, false
	}
	d2 += d1 + 1
	if bytes.IndexByte(tok[d2+1:], '.') >= 0 {
		return nil, false
	}
	hdr, pay, sig := tok[:d1], tok[d1+1:d2], tok[d2+1:]
	if !b64url(hdr) || !b64url(pay) || !b64url(sig) {
		return nil, false
	}
	s := a.scratch.Get().(*jwsScratch)
	defer a.scratch.Put(s)

	// Header: decoded and checked before the key is used.
	n, err := strictB64.Decode(s.buf[:], hdr)
	if err != nil || !s.headerOK(s.buf[:n]) {
		return nil, false
	}

	// Signature: HMAC-SHA256, compared in constant time. A signature of the wrong length
	// can only fail it; refusing it first saves the HMAC.
	if strictB64.DecodedLen(len(sig)) != sha256Size {
		return nil, false
	}
	if _, err := strictB64.Decode(s.sig[:], sig); err != nil {
		return nil, false
	}
	if !s.macOK(tok[:d2], s.sig[:]) {
		return nil, false
	}

	// Claims.
	n, err = strictB64.Decode(s.buf[:], pay)
	if err != nil || !s.claimsOK(s.buf[:n]) {
		return nil, false
	}
	c := &s.c
	if c.seen&(1<<claimExp) == 0 || !validID(c.sub) || !now.Before(c.exp) || now.Before(c.nbf) {
		return nil, false
	}
	// One allocation for the token and its sub, one for the entry.
	mem := make([]byte, len(tok)+len(c.sub))
	copy(mem, tok)
	copy(mem[len(tok):], c.sub)
	return &tokenEntry{token: mem[:len(tok):len(tok)], sub: mem[len(tok):], exp: c.exp, nbf: c.nbf}, true
}

// b64url reports whether seg is only base64url alphabet characters.
func b64url(seg []byte) bool {
	for _, c := range seg {
		if !b64Char[c] {
			return false
		}
	}
	return true
}

var b64Char = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

var (
	nameAlg  = []byte("alg")
	nameCrit = []byte("crit")
	valHS256 = []byte("HS256")
)

// headerOK: an object with exactly one "alg", the string "HS256", and no "crit".
func (s *jwsScratch) headerOK(js []byte) bool {
	if fastjson.ValidateBytes(js) != nil {
		return false
	}
	v, err := s.p.ParseBytes(js)
	if err != nil || v.Type() != fastjson.TypeObject {
		return false
	}
	algs, hs256, crit := 0, false, false
	v.GetObject().Visit(func(k []byte, v *fastjson.Value) {
		switch {
		case bytes.Equal(k, nameAlg):
			algs++
			b, err := v.StringBytes()
			hs256 = err == nil && bytes.Equal(b, valHS256)
		case bytes.Equal(k, nameCrit):
			crit = true
		}
	})
	return algs == 1 && hs256 && !crit
}

// The registered claims, as jwt.RegisteredClaims names them.
const (
	claimIss = iota
	claimSub
	claimAud
	claimExp
	claimNbf
	claimIat
	claimJti
	numClaims
)

var claimNames = [numClaims][]byte{
	[]byte("iss"), []byte("sub"), []byte("aud"), []byte("exp"), []byte("nbf"), []byte("iat"), []byte("jti"),
}

// claimIndex returns which registered claim k names as encoding/json would match it
// (bytes.EqualFold, which is what its field lookup folds by), and whether k is that
// name exactly; -1 for any other member.
func claimIndex(k []byte) (int, bool) {
	// Three runes of at most 3 bytes each (the Kelvin sign folds to k).
	if len(k) < 3 || len(k) > 9 {
		return -1, false
	}
	for i, name := range claimNames {
		if bytes.Equal(k, name) {
			return i, true
		}
	}
	for i, name := range claimNames {
		if bytes.EqualFold(k, name) {
			return i, false
		}
	}
	return -1, false
}

// claimsOK reads the claims object into s.c; false if the library would refuse it or
// it is one of the refusals listed at the top of this file.
func (s *jwsScratch) claimsOK(js []byte) bool {
	if fastjson.ValidateBytes(js) != nil {
		return false
	}
	v, err := s.p.ParseBytes(js)
	if err != nil || v.Type() != fastjson.TypeObject {
		return false
	}
	s.c = claimsRead{num: s.c.num[:0]}
	v.GetObject().Visit(s.c.member)
	return !s.c.bad
}

func (c *claimsRead) member(k []byte, v *fastjson.Value) {
	i, exact := claimIndex(k)
	if i < 0 || c.bad {
		return
	}
	if !exact || c.seen&(1<<i) != 0 {
		c.bad = true
		return
	}
	c.seen |= 1 << i
	t := v.Type()
	switch i {
	case claimIss, claimJti:
		c.bad = t != fastjson.TypeString && t != fastjson.TypeNull
	case claimSub:
		if t != fastjson.TypeString {
			c.bad = true // null leaves the library's Subject empty: not a valid id either
			return
		}
		c.sub, _ = v.StringBytes()
	case claimAud:
		switch t {
		case fastjson.TypeNull, fastjson.TypeString:
		case fastjson.TypeArray:
			for _, e := range v.GetArray() {
				if e.Type() != fastjson.TypeString {
					c.bad = true
				}
			}
		default:
			c.bad = true
		}
	case claimExp, claimNbf, claimIat:
		if t == fastjson.TypeNull {
			if i == claimExp {
				c.bad = true // the library: a nil ExpiresAt, and exp is required
			}
			return // as if absent (the library's nil *NumericDate); a repeat is still refused
		}
		if t != fastjson.TypeNumber {
			c.bad = true
			return
		}
		c.num = v.MarshalTo(c.num[:0]) // a number marshals as its literal text
		at, ok := numericDate(c.num, i != claimIat)
		if !ok {
			c.bad = true
			return
		}
		switch i {
		case claimExp:
			c.exp = at
		case claimNbf:
			c.nbf = at
		}
	}
}

// numericDate converts a JSON number as jwt.NumericDate's UnmarshalJSON does
// (json.Number.Float64, then whole seconds and nanoseconds, truncated to
// jwt.TimePrecision). compared: the date is compared with now, so its whole seconds
// must fit in an int64 (the library's int64(f) is platform-defined beyond).
func numericDate(lit []byte, compared bool) (time.Time, bool) {
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		return time.Time{}, false
	}
	round, frac := math.Modf(f)
	if compared && !(round >= -0x1p63 && round < 0x1p63) {
		return time.Time{}, false
	}
	return time.Unix(int64(round), int64(frac*1e9)).Truncate(jwt.TimePrecision), true
}
