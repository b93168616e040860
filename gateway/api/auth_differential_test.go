package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The differential check of auth_jws.go against golang-jwt/jwt/v5's ParseWithClaims,
// configured exactly as NewAuth configured it before the fast path existed (libVerify).
// On every input:
//
//   - if the fast verifier accepts, the library accepts, with the same sub, exp and nbf;
//   - if the library accepts and the fast verifier refuses, the token is one of the
//     documented refusals (auth_jws.go's list), found here by a separate reading of the
//     token with encoding/json (documentedRefusal);
//   - if the library refuses, the fast verifier refuses.
//
// Run longer with: go test ./gateway/api -run '^$' -fuzz FuzzVerifyDifferential -fuzztime 120s
// (the seeds below and testdata/fuzz/FuzzVerifyDifferential run with plain go test).

// diffNow is the clock of both verifiers in these tests.
var diffNow = time.Unix(1_800_000_000, 0)

var wrongSecret = []byte("another-secret-of-thirty-two-bytes!!")

// libVerify is the verifier as it was: the library's full parse and NewAuth's options.
func libVerify(tok []byte, now time.Time) (sub string, exp, nbf time.Time, ok bool) {
	if len(tok) == 0 || len(tok) > maxTokenBytes {
		return "", exp, nbf, false
	}
	dot := bytes.LastIndexByte(tok, '.')
	if dot < 0 || dot == len(tok)-1 {
		return "", exp, nbf, false
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	var claims jwt.RegisteredClaims
	t, err := p.ParseWithClaims(string(tok), &claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, errors.New("not HMAC")
		}
		return testSecret, nil
	})
	if err != nil || !t.Valid || claims.ExpiresAt == nil || !validID([]byte(claims.Subject)) {
		return "", exp, nbf, false
	}
	if claims.NotBefore != nil {
		nbf = claims.NotBefore.Time
	}
	return claims.Subject, claims.ExpiresAt.Time, nbf, true
}

// fastVerify is the new path without the cache (verify's own checks, then verifyCold).
func fastVerify(a *Auth, tok []byte) (*tokenEntry, bool) {
	if len(tok) == 0 || len(tok) > maxTokenBytes {
		return nil, false
	}
	return a.verifyCold(tok, diffNow)
}

func differential(t *testing.T, a *Auth, tok []byte) {
	t.Helper()
	e, fok := fastVerify(a, tok)
	sub, exp, nbf, lok := libVerify(tok, diffNow)
	switch {
	case fok && !lok:
		t.Fatalf("fast verifier accepted as %q a token the library refuses: %q", e.sub, tok)
	case fok && lok:
		if string(e.sub) != sub || !e.exp.Equal(exp) || !e.nbf.Equal(nbf) {
			t.Fatalf("verifiers disagree on %q: fast sub %q exp %v nbf %v, library sub %q exp %v nbf %v",
				tok, e.sub, e.exp, e.nbf, sub, exp, nbf)
		}
	case !fok && lok:
		if why := documentedRefusal(tok); why == "" {
			t.Fatalf("fast verifier refused a token the library accepts (sub %q), for no documented reason: %q", sub, tok)
		}
	}
}

// documentedRefusal names why a token the library accepts is refused on purpose
// (auth_jws.go's list), read independently of the fast verifier; "" if it is not one.
func documentedRefusal(tok []byte) string {
	parts := strings.Split(string(tok), ".")
	if len(parts) != 3 {
		return ""
	}
	for _, p := range parts {
		if strings.ContainsAny(p, "\r\n") {
			return "a byte outside the base64url alphabet"
		}
		if _, err := base64.RawURLEncoding.Strict().DecodeString(p); err != nil {
			return "non-canonical base64"
		}
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	c, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if jsonDepth(h) > 300 || jsonDepth(c) > 300 {
		return "nested deeper than fastjson.MaxDepth"
	}
	members, ok := topMembers(h)
	if !ok {
		return ""
	}
	algs := 0
	for _, m := range members {
		switch m.key {
		case "alg":
			algs++
		case "crit":
			return "a crit header"
		}
	}
	if algs > 1 {
		return "alg given twice"
	}
	if members, ok = topMembers(c); !ok {
		return ""
	}
	seen := map[string]bool{}
	for _, m := range members {
		for _, name := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"} {
			if !strings.EqualFold(m.key, name) {
				continue
			}
			if m.key != name {
				return "a registered claim spelled with other letter case"
			}
			if seen[name] {
				return "a registered claim given twice"
			}
			seen[name] = true
			if name == "exp" || name == "nbf" || name == "iat" {
				if len(m.raw) > 0 && m.raw[0] == '"' {
					return "a date as a JSON string"
				}
				if name != "iat" {
					if f, err := strconv.ParseFloat(string(m.raw), 64); err == nil {
						if r, _ := math.Modf(f); !(r >= -0x1p63 && r < 0x1p63) {
							return "a date outside int64 seconds"
						}
					}
				}
			}
		}
	}
	return ""
}

type member struct {
	key string
	raw json.RawMessage
}

// topMembers lists an object's members in order, duplicates included.
func topMembers(js []byte) ([]member, bool) {
	d := json.NewDecoder(bytes.NewReader(js))
	if tk, err := d.Token(); err != nil || tk != json.Delim('{') {
		return nil, false
	}
	var ms []member
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return nil, false
		}
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return nil, false
		}
		ms = append(ms, member{k.(string), raw})
	}
	if _, err := d.Token(); err != nil {
		return nil, false
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, false
	}
	return ms, true
}

// jsonDepth is the deepest nesting of arrays and objects in js (strings skipped).
func jsonDepth(js []byte) int {
	depth, deepest, inStr := 0, 0, false
	for i := 0; i < len(js); i++ {
		switch c := js[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '{' || c == '['):
			depth++
			deepest = max(deepest, depth)
		case !inStr && (c == '}' || c == ']'):
			depth--
		}
	}
	return deepest
}

// Build flags for the fuzz target: how a token is made from a header and claims.
const (
	bWrongKey    = 1 << iota // sign with another secret
	bPadded                  // header and claims segments with '=' padding
	bNewline                 // a LF inside the claims segment (signed as sent)
	bHdrNonCanon             // non-canonical trailing bits on the header segment
	bSigNonCanon             // non-canonical trailing bits on the signature
	bMutate                  // flip one byte of the finished token (at pos)
	bRaw                     // the header argument is the whole token
	bNoSig                   // an empty signature segment
)

func buildToken(hdr, claims string, flags uint8, pos uint16) []byte {
	if flags&bRaw != 0 {
		return []byte(hdr)
	}
	enc := base64.RawURLEncoding
	if flags&bPadded != 0 {
		enc = base64.URLEncoding
	}
	hs, cs := enc.EncodeToString([]byte(hdr)), enc.EncodeToString([]byte(claims))
	if flags&bNewline != 0 && len(cs) > 2 {
		cs = cs[:2] + "\n" + cs[2:]
	}
	if flags&bHdrNonCanon != 0 {
		hs = nonCanonical(hs, len(hdr))
	}
	text := hs + "." + cs
	key := testSecret
	if flags&bWrongKey != 0 {
		key = wrongSecret
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(text))
	ss := base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	if flags&bSigNonCanon != 0 {
		ss = nonCanonical(ss, sha256.Size)
	}
	if flags&bNoSig != 0 {
		ss = ""
	}
	tok := []byte(text + "." + ss)
	if flags&bMutate != 0 && len(tok) > 0 {
		i := int(pos) % len(tok)
		tok[i] ^= byte(pos>>8) | 1
	}
	return tok
}

// nonCanonical sets an unused trailing bit of a raw base64url segment of n bytes.
func nonCanonical(seg string, n int) string {
	if n%3 == 0 || seg == "" {
		return seg
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	if last < 0 {
		return seg
	}
	return seg[:len(seg)-1] + string(alphabet[last^1])
}

const (
	hsHdr   = `{"alg":"HS256","typ":"JWT"}`
	goodExp = `1800003600`
)

// diffSeeds: (header, claims, flags, pos). Each names a case the brief or a reading of
// the library's code called out.
var diffSeeds = []struct {
	hdr, claims string
	flags       uint8
	pos         uint16
}{
	{hsHdr, `{"sub":"u-1","exp":` + goodExp + `}`, 0, 0},
	{`{"alg":"HS256"}`, `{"sub":"u-1","exp":1800003600,"nbf":1799999999,"iat":1799999999,"iss":"signin","aud":["app"],"jti":"j1","x":{"y":[1,2]}}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1799999999}`, 0, 0},                  // expired
	{hsHdr, `{"sub":"u-1","exp":1800000000}`, 0, 0},                  // exp == now: expired
	{hsHdr, `{"sub":"u-1","exp":1800000000.5}`, 0, 0},                // truncated to the second
	{hsHdr, `{"sub":"u-1","exp":1800003600,"nbf":1800000000}`, 0, 0}, // nbf == now: valid
	{hsHdr, `{"sub":"u-1","exp":1800003600,"nbf":1800000001}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"nbf":1800000000.9}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"nbf":null}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":null}`, 0, 0},
	{hsHdr, `{"sub":"u-1"}`, 0, 0},
	{hsHdr, `{"exp":1800003600}`, 0, 0},
	{hsHdr, `{"sub":null,"exp":1800003600}`, 0, 0},
	{hsHdr, `{"sub":"u 1*","exp":1800003600}`, 0, 0},
	{hsHdr, `{"sub":"","exp":1800003600}`, 0, 0},
	{hsHdr, `{"sub":"\u0075-1","exp":1800003600}`, 0, 0},
	{hsHdr, `{"sub":"u-\ud800","exp":1800003600}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":"1800003600"}`, 0, 0}, // numeric string: library accepts
	{hsHdr, `{"sub":"u-1","exp":1800003600,"nbf":"1"}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"iat":"x"}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1.8000036e9}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":18000036E-1}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1e300}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":-1e300}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1e999}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"nbf":-1e300}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":9.3e18}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":9223372036854775807}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"iat":1e999}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"iat":1e300}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":true}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":{"n":1}}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":[1800003600]}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":01800003600}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"sub":"admin"}`, 0, 0}, // duplicate: library takes the last
	{hsHdr, `{"sub":"u-1","exp":1800003600,"SUB":"admin"}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"ſub":"admin"}`, 0, 0},
	{hsHdr, `{"Sub":"u-1","exp":1800003600}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"EXP":1}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"exp":1}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"ıss":5}`, 0, 0}, // dotless i does not fold to i
	{hsHdr, `{"sub":"u-1","exp":1800003600,"iss":5}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"aud":"a"}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"aud":["a",1]}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"aud":["a",null]}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"aud":{}}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"jti":1}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"x":1,"x":2}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}  `, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}{}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,}`, 0, 0},
	{hsHdr, "{\"sub\":\"u-1\",\"exp\":1800003600,\"x\":\"a\x01\"}", 0, 0},
	{hsHdr, "{\"sub\":\"u-1\",\"exp\":1800003600,\"x\":\"\xff\"}", 0, 0},
	{hsHdr, "\ufeff{\"sub\":\"u-1\",\"exp\":1800003600}", 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"x":` + strings.Repeat("[", 301) + strings.Repeat("]", 301) + `}`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600,"x":` + strings.Repeat("[", 299) + strings.Repeat("]", 299) + `}`, 0, 0},
	{hsHdr, `null`, 0, 0},
	{hsHdr, `[]`, 0, 0},
	{hsHdr, `"x"`, 0, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bWrongKey, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bPadded, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bNewline, 0},
	{`{"alg":"HS256"}`, `{"sub":"u-1","exp":1800003600}`, bHdrNonCanon, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bSigNonCanon, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bNoSig, 0},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bMutate, 0x0105},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bMutate, 0x2040},
	{hsHdr, `{"sub":"u-1","exp":1800003600}`, bMutate, 0x0190},
	{`{"alg":"none"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS384"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS512"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"RS256"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"hs256"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS256 "}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS\u0032\u0035\u0036"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":["HS256"]}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":null}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"typ":"JWT"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"none","alg":"HS256"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS256","alg":"none"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"ALG":"none","alg":"HS256"}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS256","crit":["exp"]}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS256","b64":false,"crit":["b64"]}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS256","kid":{"a":[1,{"b":null}]}}`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`null`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`[]`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{``, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{`{"alg":"HS256"`, `{"sub":"u-1","exp":1800003600}`, 0, 0},
	{"", "", bRaw, 0},
	{"a.b.c", "", bRaw, 0},
	{"..", "", bRaw, 0},
	{"a.b.c.d", "", bRaw, 0},
	{"eyJhbGciOiJIUzI1NiJ9.e30.", "", bRaw, 0},
	{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1LTEiLCJleHAiOjE4MDAwMDM2MDB9.", "", bRaw, 0},
}

func FuzzVerifyDifferential(f *testing.F) {
	for _, s := range diffSeeds {
		f.Add(s.hdr, s.claims, s.flags, s.pos)
	}
	a := newAuth(f)
	f.Fuzz(func(t *testing.T, hdr, claims string, flags uint8, pos uint16) {
		differential(t, a, buildToken(hdr, claims, flags, pos))
	})
}

// The seeds must exercise each side: accepted tokens, refusals by both, and each kind
// of documented refusal (so the classifier is not vacuous).
func TestVerifyDifferentialSeedsCoverBothSides(t *testing.T) {
	a := newAuth(t)
	accepted, refused := 0, 0
	documented := map[string]bool{}
	for _, s := range diffSeeds {
		tok := buildToken(s.hdr, s.claims, s.flags, s.pos)
		differential(t, a, tok)
		_, fok := fastVerify(a, tok)
		_, _, _, lok := libVerify(tok, diffNow)
		if fok {
			accepted++
		} else {
			refused++
		}
		if lok && !fok {
			documented[documentedRefusal(tok)] = true
		}
	}
	if accepted < 8 || refused < 40 {
		t.Fatalf("seeds: %d accepted, %d refused", accepted, refused)
	}
	for _, why := range []string{
		"a byte outside the base64url alphabet", "non-canonical base64", "nested deeper than fastjson.MaxDepth",
		"a crit header", "alg given twice", "a registered claim spelled with other letter case",
		"a registered claim given twice", "a date as a JSON string", "a date outside int64 seconds",
	} {
		if !documented[why] {
			t.Errorf("no seed the library accepts is refused for %q", why)
		}
	}
}

// Random claim sets, signed: the two verifiers agree on every one.
func TestVerifyDifferentialRandomClaims(t *testing.T) {
	a := newAuth(t)
	r := rand.New(rand.NewPCG(14, 5))
	keys := []string{"sub", "exp", "nbf", "iat", "iss", "aud", "jti", "x", "SUB", "Exp", "ſub", "nbF", "crit"}
	vals := []string{
		`"u-1"`, `"u-` + strconv.Itoa(r.IntN(1000)) + `"`, `"bad id!"`, `""`, `null`, `true`, `0`, `-1`,
		`1800003600`, `1799999999`, `1800000000`, `1800000001`, `1800000000.25`, `1.8e9`, `1.9e9`,
		`1e300`, `-1e300`, `1e999`, `"1800003600"`, `["a"]`, `["a",2]`, `[]`, `{}`, `{"a":{"b":[null]}}`,
		`"\u0075-2"`, `9223372036854775807`, `-9223372036854775808`, `1E2`, `0.5e-400`,
	}
	hdrs := []string{hsHdr, `{"alg":"HS256"}`, `{"alg":"HS256","crit":["x"]}`, `{"alg":"HS512"}`, `{"alg":"none"}`, `{"alg":"HS256","alg":"HS256"}`}
	accepted := 0
	for range 4000 {
		var b strings.Builder
		b.WriteString(`{"sub":"u-1","exp":1800003600`)
		if r.IntN(4) == 0 {
			b.Reset()
			b.WriteString(`{"q":0`)
		}
		for range r.IntN(5) {
			b.WriteString(`,"` + keys[r.IntN(len(keys))] + `":` + vals[r.IntN(len(vals))])
		}
		b.WriteString("}")
		hdr := hsHdr
		if r.IntN(5) == 0 {
			hdr = hdrs[r.IntN(len(hdrs))]
		}
		var flags uint8
		if r.IntN(8) == 0 {
			flags = uint8(r.IntN(256)) & (bWrongKey | bPadded | bNewline | bHdrNonCanon | bSigNonCanon)
		}
		tok := buildToken(hdr, b.String(), flags, 0)
		differential(t, a, tok)
		if _, ok := fastVerify(a, tok); ok {
			accepted++
		}
	}
	if accepted < 500 {
		t.Fatalf("only %d of 4000 random tokens accepted: the generator is not exercising acceptance", accepted)
	}
}

// The pooled, pre-keyed HMAC decides exactly as the library's
// jwt.SigningMethodHS256.Verify: right signatures, one flipped bit, random bytes, a
// truncated or extended signature, another key's signature, one scratch reused across
// all of them (Reset must bring back the keyed state).
func TestMACMatchesLibrary(t *testing.T) {
	a := newAuth(t)
	s := a.scratch.Get().(*jwsScratch)
	r := rand.New(rand.NewPCG(14, 6))
	agree, accepted := 0, 0
	for i := range 3000 {
		text := make([]byte, r.IntN(300))
		for j := range text {
			text[j] = byte(r.IntN(256))
		}
		m := hmac.New(sha256.New, testSecret)
		if i%7 == 0 {
			m = hmac.New(sha256.New, wrongSecret)
		}
		m.Write(text)
		sig := m.Sum(nil)
		switch i % 5 {
		case 1:
			sig[r.IntN(len(sig))] ^= 1 << r.IntN(8)
		case 2:
			for j := range sig {
				sig[j] = byte(r.IntN(256))
			}
		case 3:
			sig = sig[:r.IntN(len(sig))]
		case 4:
			sig = append(sig, 0)
		}
		got := s.macOK(text, sig)
		want := jwt.SigningMethodHS256.Verify(string(text), sig, testSecret) == nil
		if got != want {
			t.Fatalf("case %d: pooled HMAC says %v, the library's Verify %v (text %x, sig %x)", i, got, want, text, sig)
		}
		agree++
		if got {
			accepted++
		}
	}
	if accepted < 300 || accepted == agree {
		t.Fatalf("%d of %d signatures accepted: the cases do not exercise both answers", accepted, agree)
	}
}
