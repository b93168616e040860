package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"unicode/utf8"
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
