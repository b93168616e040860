package api

import (
	"errors"
	"unicode/utf8"

	"github.com/flashgate/flashgate/internal/claim"
)

// MaxBodyBytes is the largest claim body accepted (CONTRACT.md: at most 4 KiB).
const MaxBodyBytes = 4096

// MaxIDLen is the longest id accepted (internal/claim owns the rule).
const MaxIDLen = claim.MaxIDLen

// claimBody holds the fields of a claim request as slices of the request body (or of
// scratch, when a value had JSON escapes). They die when the handler returns.
type claimBody struct {
	CampaignID, SKU, UserID, DeviceID, RequestID []byte
	seen                                         uint8
	scratch                                      []byte
}

const (
	fCampaign = 1 << iota
	fSKU
	fUser
	fDevice
	fRequest
)

// parseError says which field was wrong and how; it becomes a 400 body.
type parseError struct {
	field string
	msg   string
}

func (e *parseError) Error() string {
	if e.field == "" {
		return e.msg
	}
	return e.field + ": " + e.msg
}

var errNotObject = &parseError{msg: "body must be a JSON object"}

// parse reads a claim body: exactly one JSON object whose members are the known fields,
// each a string, each at most once. It is a small hand-written scanner rather than
// encoding/json because it runs on every claim and must not allocate; it is fuzzed
// against encoding/json (parse_fuzz_test.go). Unknown fields, duplicate keys, non-string
// values, nesting, trailing data and invalid UTF-8 are refused with the field named.
func (b *claimBody) parse(data []byte) error {
	b.CampaignID, b.SKU, b.UserID, b.DeviceID, b.RequestID = nil, nil, nil, nil, nil
	b.seen = 0
	b.scratch = b.scratch[:0]
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return errNotObject
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		i = skipWS(data, i+1)
		if i != len(data) {
			return &parseError{msg: "unexpected data after the JSON object"}
		}
		return nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return &parseError{msg: "expected a field name in double quotes"}
		}
		key, next, err := b.str(data, i)
		if err != nil {
			return &parseError{msg: "field name: " + err.Error()}
		}
		i = skipWS(data, next)
		if i >= len(data) || data[i] != ':' {
			return &parseError{field: string(key), msg: "expected ':' after the field name"}
		}
		i = skipWS(data, i+1)
		dst, bit := b.field(key)
		if dst == nil {
			return &parseError{field: printable(key), msg: "unknown field"}
		}
		if b.seen&bit != 0 {
			return &parseError{field: string(key), msg: "given more than once"}
		}
		b.seen |= bit
		if i >= len(data) || data[i] != '"' {
			return &parseError{field: string(key), msg: "must be a string"}
		}
		val, next, err := b.str(data, i)
		if err != nil {
			return &parseError{field: string(key), msg: err.Error()}
		}
		*dst = val
		i = skipWS(data, next)
		if i >= len(data) {
			return &parseError{msg: "unexpected end of JSON"}
		}
		if data[i] == '}' {
			i = skipWS(data, i+1)
			if i != len(data) {
				return &parseError{msg: "unexpected data after the JSON object"}
			}
			return nil
		}
		if data[i] != ',' {
			return &parseError{msg: "expected ',' or '}' after " + string(key)}
		}
		i = skipWS(data, i+1)
	}
}

func (b *claimBody) field(key []byte) (*[]byte, uint8) {
	switch string(key) { // no allocation: the compiler compares in place
	case "campaign_id":
		return &b.CampaignID, fCampaign
	case "sku":
		return &b.SKU, fSKU
	case "user_id":
		return &b.UserID, fUser
	case "device_id":
		return &b.DeviceID, fDevice
	case "request_id":
		return &b.RequestID, fRequest
	}
	return nil, 0
}

var (
	errUnterminated = errors.New("unterminated string")
	errControl      = errors.New("control character in string")
	errBadEscape    = errors.New("invalid escape sequence")
	errBadUTF8      = errors.New("invalid UTF-8")
)

// str reads the JSON string starting at data[i] == '"'. Without escapes it returns a
// slice of data; with escapes it decodes into b.scratch.
func (b *claimBody) str(data []byte, i int) ([]byte, int, error) {
	start := i + 1
	for j := start; j < len(data); j++ {
		c := data[j]
		switch {
		case c == '"':
			if !utf8.Valid(data[start:j]) {
				return nil, 0, errBadUTF8
			}
			return data[start:j], j + 1, nil
		case c == '\\':
			return b.strEscaped(data, start, j)
		case c < 0x20:
			return nil, 0, errControl
		}
	}
	return nil, 0, errUnterminated
}

func (b *claimBody) strEscaped(data []byte, start, j int) ([]byte, int, error) {
	from := len(b.scratch)
	b.scratch = append(b.scratch, data[start:j]...)
	for j < len(data) {
		c := data[j]
		switch {
		case c == '"':
			out := b.scratch[from:]
			if !utf8.Valid(out) {
				return nil, 0, errBadUTF8
			}
			return out, j + 1, nil
		case c < 0x20:
			return nil, 0, errControl
		case c != '\\':
			b.scratch = append(b.scratch, c)
			j++
			continue
		}
		if j+1 >= len(data) {
			return nil, 0, errUnterminated
		}
		switch e := data[j+1]; e {
		case '"', '\\', '/':
			b.scratch = append(b.scratch, e)
			j += 2
		case 'b':
			b.scratch = append(b.scratch, '\b')
			j += 2
		case 'f':
			b.scratch = append(b.scratch, '\f')
			j += 2
		case 'n':
			b.scratch = append(b.scratch, '\n')
			j += 2
		case 'r':
			b.scratch = append(b.scratch, '\r')
			j += 2
		case 't':
			b.scratch = append(b.scratch, '\t')
			j += 2
		case 'u':
			r, ok := hex4(data, j+2)
			if !ok {
				return nil, 0, errBadEscape
			}
			j += 6
			if r >= 0xD800 && r < 0xDC00 { // a surrogate pair
				r2, ok2 := rune(0), false
				if j+1 < len(data) && data[j] == '\\' && data[j+1] == 'u' {
					r2, ok2 = hex4(data, j+2)
				}
				if !ok2 || r2 < 0xDC00 || r2 >= 0xE000 {
					return nil, 0, errBadEscape
				}
				j += 6
				r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
			} else if r >= 0xDC00 && r < 0xE000 {
				return nil, 0, errBadEscape
			}
			b.scratch = utf8.AppendRune(b.scratch, r)
		default:
			return nil, 0, errBadEscape
		}
	}
	return nil, 0, errUnterminated
}

func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// validID reports whether id is 1-64 characters of [A-Za-z0-9._:-] (CONTRACT.md).
//
// Every id ends up inside Redis key names (internal/rkeys), Lua-built records and log
// lines, so the charset is also what keeps it from meaning anything there:
//   - '{' and '}' are refused: a campaign id is a hash tag ("fg:{c}:meta"), and a brace
//     in it would move keys to another slot and let one key alias another (campaign
//     "c}:sku:x" would own "fg:{c}:sku:x}:meta", SKU "x}:meta" of campaign "c");
//   - '*', '?', '[', ']' and '\' are refused: they are glob syntax in KEYS/SCAN/MATCH;
//   - whitespace and control characters are refused: the idempotency record and the
//     freeze-window members are tab-separated ("sku\tuser\tdevice",
//     "campaign\trequest"), so a tab would let two different requests share one;
//   - ':' is allowed and safe: every key's kind is fixed by the constant prefix before
//     the first id byte ("fg:{c}:rq:", "fg:{c}:sku:", "fg:bl:{"), never found by
//     splitting on ':', and a campaign id cannot close its tag, so no id can make two
//     different keys equal. TestIDsCannotAliasKeys and FuzzKeyLayout check this.
func validID(id []byte) bool { return claim.ValidIDBytes(id) }

// printable quotes at most 64 bytes of a hostile field name for an error message.
func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			c = '?'
		}
		out = append(out, c)
	}
	return string(out)
}
