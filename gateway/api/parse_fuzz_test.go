package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// FuzzParse holds the hand-written claim parser to encoding/json. On every input:
//
//   - parse never panics;
//   - if parse accepts, encoding/json accepts the same bytes as an object of strings,
//     every key is a known field given once, and the values are identical;
//   - if parse refuses, either encoding/json refuses too, or the input is one of the
//     things we refuse on purpose although JSON allows it: an unknown field, a
//     duplicate key, a non-string value, a top level that is not an object, invalid
//     UTF-8 or an escaped lone surrogate (which encoding/json silently turns into
//     U+FFFD: an id is never allowed to change on its way in).
//
// Run it longer with: go test ./gateway/api -run '^$' -fuzz FuzzParse -fuzztime 60s
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		validBody,
		`{}`, ``, ` `, `[]`, `null`, `"x"`, `{"sku":"a"}`, `{"sku":"a","sku":"b"}`,
		`{"sku":1}`, `{"sku":null}`, `{"sku":{"a":"b"}}`, `{"sku":["a"]}`, `{"x":"y"}`,
		`{"sku":"a"} `, `{"sku":"a"}{}`, `{"sku":"a",}`, `{"sku":"\u0061"}`,
		`{"sku":"\ud83d\ude00"}`, `{"sku":"\ud800"}`, `{"sku":"\udc00x"}`, `{"sku":"\/\b\f\n\r\t\"\\"}`,
		"{\"sku\":\"\xff\"}", "{\"sku\":\"a\x01\"}", "{\"\xc3\":\"a\"}", `{"s\u006bu":"a"}`,
		"\ufeff{}", `{"sku":"a" , "user_id" : "b" }`, `{"sku":"\u00e9"}`, `{"sku":"\uD834\uDD1E"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b claimBody
		err := b.parse(data)
		ref, refErr := reference(data)
		if err == nil {
			if refErr != nil {
				t.Fatalf("parse accepted %q; encoding/json refused: %v", data, refErr)
			}
			if ref.divergent != "" {
				t.Fatalf("parse accepted %q, which has %s", data, ref.divergent)
			}
			got := map[string]string{}
			for name, v := range map[string][]byte{"campaign_id": b.CampaignID, "sku": b.SKU, "user_id": b.UserID,
				"device_id": b.DeviceID, "request_id": b.RequestID} {
				if v != nil {
					got[name] = string(v)
					if !utf8.Valid(v) {
						t.Fatalf("parse accepted %q with invalid UTF-8 in %s", data, name)
					}
				}
			}
			if len(got) != len(ref.values) {
				t.Fatalf("parse(%q) = %v; encoding/json: %v", data, got, ref.values)
			}
			for k, v := range ref.values {
				if got[k] != v {
					t.Fatalf("parse(%q): %s = %q; encoding/json: %q", data, k, got[k], v)
				}
			}
			return
		}
		var pe *parseError
		if !errors.As(err, &pe) || err.Error() == "" {
			t.Fatalf("parse(%q) error %v is not a parseError with a message", data, err)
		}
		if refErr == nil && ref.divergent == "" {
			t.Fatalf("parse refused %q (%v); encoding/json accepts it as %v", data, err, ref.values)
		}
	})
}

type refResult struct {
	values    map[string]string
	divergent string // why we refuse although encoding/json accepts; "" if no such reason
}

// reference decodes data with encoding/json and reports the properties on which the
// claim parser is deliberately stricter.
func reference(data []byte) (refResult, error) {
	var r refResult
	if !json.Valid(data) {
		return r, errors.New("not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return r, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		r.divergent = "a top level that is not an object"
		return r, nil
	}
	r.values = map[string]string{}
	seen := map[string]bool{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return r, err
		}
		key := kt.(string)
		switch key {
		case "campaign_id", "sku", "user_id", "device_id", "request_id":
		default:
			r.divergent = "an unknown field"
		}
		if seen[key] {
			r.divergent = "a duplicate key"
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return r, err
		}
		var s string
		if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			r.divergent = "a non-string value"
			continue
		}
		r.values[key] = s
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return r, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return r, errors.New("trailing data")
	}
	if !utf8.Valid(data) {
		r.divergent = "invalid UTF-8"
	}
	if hasLoneSurrogate(data) {
		r.divergent = "an escaped lone surrogate"
	}
	return r, nil
}

// hasLoneSurrogate reports a \uD800-\uDFFF escape that is not half of a valid pair.
// Escaped backslashes are skipped so that `\\ud800` (a backslash, then text) does not
// count.
func hasLoneSurrogate(data []byte) bool {
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' || i+1 >= len(data) {
			continue
		}
		if data[i+1] != 'u' {
			i++ // skip the escaped character, which may be a backslash
			continue
		}
		r, ok := hex4(data, i+2)
		if !ok {
			continue
		}
		switch {
		case r >= 0xD800 && r < 0xDC00:
			r2, ok2 := rune(0), false
			if i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
				r2, ok2 = hex4(data, i+8)
			}
			if !ok2 || r2 < 0xDC00 || r2 >= 0xE000 {
				return true
			}
			i += 11
		case r >= 0xDC00 && r < 0xE000:
			return true
		default:
			i += 5
		}
	}
	return false
}

// idPattern is CONTRACT.md's id rule, written independently of validID so the fuzz
// targets below check the validator against the contract rather than against itself.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// FuzzDecode drives the whole request validation (decode: content type, size, parser,
// Idempotency-Key header, id rule) with a fuzzed body and header. On every input:
//
//   - decode never panics, and refuses with 400 or 413 and a non-empty message;
//   - it never accepts an id outside [A-Za-z0-9._:-]{1,64} (checked with a regexp, not
//     with validID);
//   - it accepts exactly what the reference accepts: encoding/json decodes the body as
//     an object of the five known string fields, each given once, the request_id comes
//     from the body or the header (equal when both), and every id matches the rule.
//
// Run it longer with: go test ./gateway/api -run '^$' -fuzz '^FuzzDecode$' -fuzztime 60s
func FuzzDecode(f *testing.F) {
	f.Add([]byte(validBody), "")
	f.Add([]byte(validBody), "6f1c2b")
	f.Add([]byte(validBody), "other")
	f.Add([]byte(`{"campaign_id":"c","sku":"s","user_id":"u","device_id":"d"}`), "k:1")
	f.Add([]byte(`{"campaign_id":"c","sku":"s","user_id":"u","device_id":"d"}`), "k*1")
	f.Add([]byte(`{"campaign_id":"c","sku":"s\t","user_id":"u","device_id":"d","request_id":"r"}`), "")
	f.Add([]byte(`{"campaign_id":"{c}","sku":"s","user_id":"u","device_id":"d","request_id":"r"}`), "")
	f.Add([]byte(`{"campaign_id":"c","sku":"s","user_id":"u\u0000","device_id":"d","request_id":"r"}`), "")
	f.Add([]byte(`{"campaign_id":"c","sku":"s","user_id":"`+strings.Repeat("u", 65)+`","device_id":"d","request_id":"r"}`), "")
	f.Add([]byte(`{"campaign_id":"c","sku":"s","user_id":"u","device_id":"d","request_id":"r","request_id":"r"}`), "")
	f.Add([]byte(`{"campaign_id":"c","sku":{"a":{"b":["c"]}},"user_id":"u","device_id":"d","request_id":"r"}`), "")
	f.Add([]byte(`{"campaign_id":"c","sku":"a:b:c","user_id":"u.1","device_id":"d-1","request_id":"r_1"}`), "")
	s := &Server{}
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		var headers []string
		if key != "" {
			headers = []string{"Idempotency-Key", key}
		}
		ctx := request("POST", "application/json", string(body), "192.0.2.7:5555", headers...)
		hdr := string(ctx.Request.Header.Peek("Idempotency-Key")) // what the header holds once set
		var st reqState
		status, msg := s.decode(ctx, &st)
		want, why := referenceDecode(body, hdr)
		if status != 0 {
			if (status != fasthttp.StatusBadRequest && status != fasthttp.StatusRequestEntityTooLarge) || msg == "" {
				t.Fatalf("decode(%q, %q) = %d %q; want 400 or 413 with a message", body, hdr, status, msg)
			}
			if want != nil {
				t.Fatalf("decode(%q, %q) refused (%d %s); the reference accepts %v", body, hdr, status, msg, want)
			}
			return
		}
		got := map[string]string{"campaign_id": st.req.CampaignID, "sku": st.req.SKU, "user_id": st.req.UserID,
			"device_id": st.req.DeviceID, "request_id": st.req.RequestID}
		for name, v := range got {
			if !idPattern.MatchString(v) {
				t.Fatalf("decode(%q, %q) accepted %s = %q, outside [A-Za-z0-9._:-]{1,64}", body, hdr, name, v)
			}
		}
		if want == nil {
			t.Fatalf("decode(%q, %q) accepted %v; the reference refuses: %s", body, hdr, got, why)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("decode(%q, %q) = %v; the reference: %v", body, hdr, got, want)
		}
	})
}

// referenceDecode is decode's rule written with encoding/json and a regexp: the ids a
// claim with this body and Idempotency-Key header must be accepted with, or nil and why not.
func referenceDecode(body []byte, hdr string) (map[string]string, string) {
	if len(body) > MaxBodyBytes {
		return nil, "too large"
	}
	ref, err := reference(body)
	if err != nil {
		return nil, err.Error()
	}
	if ref.divergent != "" {
		return nil, ref.divergent
	}
	v := ref.values
	if rq, ok := v["request_id"]; ok {
		if hdr != "" && hdr != rq {
			return nil, "header differs"
		}
	} else if hdr != "" {
		v["request_id"] = hdr
	}
	for _, name := range []string{"campaign_id", "sku", "user_id", "device_id", "request_id"} {
		if !idPattern.MatchString(v[name]) {
			return nil, name + " missing or invalid"
		}
	}
	return v, ""
}

// FuzzKeyLayout: ids that pass validID can never make two different keys of the
// internal/rkeys layout the same Redis key. A collision would let one campaign's,
// SKU's or request's state be read or written as another's; see validID for why ':'
// is safe and '{', '}' are not.
func FuzzKeyLayout(f *testing.F) {
	f.Add(uint8(0), "c", "x", uint8(1), "c", "x")
	f.Add(uint8(2), "c", "rq:x", uint8(3), "c", "x")
	f.Add(uint8(2), "c:sku", "x", uint8(2), "c", "sku:x")
	f.Add(uint8(3), "risk", "x", uint8(20), "", "x")
	f.Add(uint8(13), "risk", "", uint8(30), "", "")
	f.Fuzz(func(t *testing.T, k1 uint8, c1, x1 string, k2 uint8, c2, x2 string) {
		for _, id := range []string{c1, x1, c2, x2} {
			if !validID([]byte(id)) {
				return
			}
		}
		a, b := layoutKey(k1, c1, x1), layoutKey(k2, c2, x2)
		if a.key == b.key && (a.kind != b.kind || a.c != b.c || a.x != b.x) {
			t.Fatalf("%s(%q, %q) and %s(%q, %q) are both Redis key %q", a.kind, a.c, a.x, b.kind, b.c, b.x, a.key)
		}
	})
}

type laidOut struct{ kind, c, x, key string }

// layoutKey builds key kind k%len of internal/rkeys from a campaign id c and another
// id x, dropping the arguments a kind does not take (so equal inputs compare equal).
func layoutKey(k uint8, c, x string) laidOut {
	kinds := keyKinds()
	kk := kinds[int(k)%len(kinds)]
	if !kk.campaign {
		c = ""
	}
	if !kk.other {
		x = ""
	}
	return laidOut{kind: kk.name, c: c, x: x, key: kk.build(c, x)}
}

type keyKind struct {
	name            string
	campaign, other bool // which arguments the kind takes
	build           func(c, x string) string
}

// keyKinds is every key of internal/rkeys, with the ids each one is built from.
func keyKinds() []keyKind {
	cx := func(name string, fn func(c, x string) string) keyKind { return keyKind{name, true, true, fn} }
	c := func(name string, fn func(c string) string) keyKind {
		return keyKind{name, true, false, func(c, _ string) string { return fn(c) }}
	}
	x := func(name string, fn func(x string) string) keyKind {
		return keyKind{name, false, true, func(_, x string) string { return fn(x) }}
	}
	fixed := func(name, key string) keyKind {
		return keyKind{name, false, false, func(_, _ string) string { return key }}
	}
	return []keyKind{
		c("Meta", rkeys.Meta), c("SKUs", rkeys.SKUs), cx("SKU", rkeys.SKU), cx("Request", rkeys.Request),
		c("Users", rkeys.Users), c("Outbox", rkeys.Outbox), c("Inflight", rkeys.Inflight), c("Rejections", rkeys.Rejections),
		c("RiskRules", rkeys.RiskRules), c("ShadowRejections", rkeys.ShadowRejections), c("Released", rkeys.Released),
		c("UsersRebuild", rkeys.UsersRebuild), c("ReleasedRebuild", rkeys.ReleasedRebuild),
		cx("VelocityDevice", func(c, x string) string { return rkeys.Velocity(c, rkeys.KindDevice, x) }),
		cx("VelocityIP", func(c, x string) string { return rkeys.Velocity(c, rkeys.KindIP, x) }),
		cx("VelocityUser", func(c, x string) string { return rkeys.Velocity(c, rkeys.KindUser, x) }),
		x("BusinessLine", rkeys.BusinessLine), x("Segment", rkeys.Segment), x("RecoveryLock", rkeys.RecoveryLock),
		x("BlockDevice", func(x string) string { return rkeys.Block(rkeys.KindDevice, x) }),
		x("BlockIP", func(x string) string { return rkeys.Block(rkeys.KindIP, x) }),
		x("BlockUser", func(x string) string { return rkeys.Block(rkeys.KindUser, x) }),
		x("FreezeDevice", func(x string) string { return rkeys.Freeze(rkeys.KindDevice, x) }),
		x("FreezeUser", func(x string) string { return rkeys.Freeze(rkeys.KindUser, x) }),
		x("FreezeWindowDevice", func(x string) string { return rkeys.FreezeWindow(rkeys.KindDevice, x) }),
		x("FreezeWindowUser", func(x string) string { return rkeys.FreezeWindow(rkeys.KindUser, x) }),
		fixed("Campaigns", rkeys.Campaigns), fixed("RiskGlobalRules", rkeys.RiskGlobalRules),
		fixed("RiskIndex", rkeys.RiskIndex), fixed("ServerRunID", rkeys.ServerRunID),
	}
}
