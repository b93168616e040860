// Package claim owns the accepted-claim record as it travels on the flash.claims topic
// and through the Redis outbox: its schema version, its JSON encoding and its decoding.
//
// The encoder is append-style and allocation-free so the gateway can build a record
// into a pooled buffer on the hot path; the decoder is strict about what it needs and
// tolerant of fields added by later minor versions. This package imports only the
// standard library (a test fences that), because every binary links it.
package claim

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Version is the schema version written into every record ("v"). A consumer refuses a
// record whose version is newer than the one it knows, rather than guess at its meaning.
const Version = 1

// Record is one accepted claim. Amounts are integers in the business line's accounting
// unit; times are Unix milliseconds taken from the Redis server clock by the claim script,
// so every gateway agrees on them.
type Record struct {
	Version      int    `json:"v"`
	ClaimID      string `json:"claim_id"`
	RequestID    string `json:"request_id"`
	CampaignID   string `json:"campaign_id"`
	BusinessLine string `json:"business_line"`
	SKU          string `json:"sku"`
	UserID       string `json:"user_id"`
	DeviceID     string `json:"device_id"`
	IP           string `json:"ip"`
	Value        int64  `json:"value"`
	ClaimedAtMs  int64  `json:"claimed_at_ms"`
	ExpiresAtMs  int64  `json:"expires_at_ms"`
	// OutboxID is the Redis stream entry id of the outbox copy; the settler deletes that
	// entry once the claim is committed in Postgres.
	OutboxID string `json:"outbox_id"`
	// Channel is where the claim came from: "app", "partner:<id>" or "push:<id>" ("" is
	// written as "app"). An optional field of version 1: a record without it - any record
	// from before channels - decodes as "app", and older consumers ignore it.
	Channel string `json:"channel,omitempty"`
	// Code is the partner code the claim handed out, for a SKU with a code pool (DESIGN.md
	// "Partner code pools"; "" otherwise, and then not written). An optional field of
	// version 1, like Channel; it goes to claims.partner_code and is shown to the owner
	// only.
	Code string `json:"code,omitempty"`
	// Draw is a lottery draw's inputs, "<odds version>:<r>:<pick>" (draw.go), "" for a
	// claim of another kind. An optional field of version 1. A draw that won nothing has
	// no SKU and value 0 (NoPrize); a won draw is a claim like any other plus its draw.
	Draw string `json:"draw,omitempty"`
}

// MaxCodeLen is the longest partner code (the admin import refuses longer lines).
const MaxCodeLen = 128

// ChannelApp is the channel of a claim made through the public API for an end user.
const ChannelApp = "app"

// ValidChannel reports whether ch is "app", "partner:<id>" or "push:<id>" with id
// 1-64 characters of [A-Za-z0-9._-].
func ValidChannel(ch string) bool {
	if ch == ChannelApp {
		return true
	}
	var id string
	switch {
	case len(ch) > 8 && ch[:8] == "partner:":
		id = ch[8:]
	case len(ch) > 5 && ch[:5] == "push:":
		id = ch[5:]
	default:
		return false
	}
	if len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Errors returned by Decode. They are wrapped with the offending field.
var (
	ErrMalformed   = errors.New("claim record: malformed")
	ErrVersion     = errors.New("claim record: unsupported version")
	ErrMissingData = errors.New("claim record: missing field")
)

// ClaimedAt is the claim time as a time.Time in UTC.
func (r *Record) ClaimedAt() time.Time { return time.UnixMilli(r.ClaimedAtMs).UTC() }

// ExpiresAt is when the voucher expires unless redeemed.
func (r *Record) ExpiresAt() time.Time { return time.UnixMilli(r.ExpiresAtMs).UTC() }

// AppendJSON appends the record's JSON encoding to dst. It writes Version as given,
// so callers set it (NewRecord-style helpers are deliberately absent: the gateway fills
// a pooled Record in place).
func (r *Record) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(r.Version), 10)
	dst = appendField(dst, "claim_id", r.ClaimID)
	dst = appendField(dst, "request_id", r.RequestID)
	dst = appendField(dst, "campaign_id", r.CampaignID)
	dst = appendField(dst, "business_line", r.BusinessLine)
	dst = appendField(dst, "sku", r.SKU)
	dst = appendField(dst, "user_id", r.UserID)
	dst = appendField(dst, "device_id", r.DeviceID)
	dst = appendField(dst, "ip", r.IP)
	dst = append(dst, `,"value":`...)
	dst = strconv.AppendInt(dst, r.Value, 10)
	dst = append(dst, `,"claimed_at_ms":`...)
	dst = strconv.AppendInt(dst, r.ClaimedAtMs, 10)
	dst = append(dst, `,"expires_at_ms":`...)
	dst = strconv.AppendInt(dst, r.ExpiresAtMs, 10)
	dst = appendField(dst, "outbox_id", r.OutboxID)
	ch := r.Channel
	if ch == "" {
		ch = ChannelApp
	}
	dst = appendField(dst, "channel", ch)
	if r.Code != "" {
		dst = appendField(dst, "code", r.Code)
	}
	if r.Draw != "" {
		dst = appendField(dst, "draw", r.Draw)
	}
	return append(dst, '}')
}

func appendField(dst []byte, name, value string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return AppendString(dst, value)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string literal. Ids are validated upstream, but the
// encoder does not rely on that: control characters, quotes, backslashes and invalid
// UTF-8 are escaped the way encoding/json does, so the output is always valid JSON.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x80 {
			i++
			continue
		}
		if c < 0x80 {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Decode parses a record. It requires every identifying field and a known version, and
// ignores fields it does not know (a later minor version may add some).
func Decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r.Version < 1 || r.Version > Version {
		return Record{}, fmt.Errorf("%w: v=%d (this build knows 1..%d)", ErrVersion, r.Version, Version)
	}
	var d Draw
	if r.Draw != "" {
		var ok bool
		if d, ok = ParseDraw(r.Draw); !ok {
			return Record{}, fmt.Errorf("%w: draw %q (want <odds version>:<r>:<pick>)", ErrMalformed, r.Draw)
		}
	}
	noPrize := r.Draw != "" && r.SKU == ""
	for _, f := range [...]struct {
		name, value string
	}{
		{"claim_id", r.ClaimID}, {"request_id", r.RequestID}, {"campaign_id", r.CampaignID},
		{"business_line", r.BusinessLine}, {"sku", r.SKU}, {"user_id", r.UserID}, {"device_id", r.DeviceID},
	} {
		if f.value == "" && !(noPrize && f.name == "sku") {
			return Record{}, fmt.Errorf("%w: %s", ErrMissingData, f.name)
		}
	}
	switch {
	case noPrize && r.Value != 0:
		return Record{}, fmt.Errorf("%w: a draw that won nothing has value 0, got %d", ErrMalformed, r.Value)
	case !noPrize && r.Value <= 0:
		return Record{}, fmt.Errorf("%w: value must be positive, got %d", ErrMalformed, r.Value)
	case r.Draw != "" && !noPrize && d.Pick != r.SKU:
		return Record{}, fmt.Errorf("%w: a won draw's prize %q is not its pick %q", ErrMalformed, r.SKU, d.Pick)
	}
	if r.Channel == "" {
		r.Channel = ChannelApp
	}
	if !ValidChannel(r.Channel) {
		return Record{}, fmt.Errorf("%w: channel %q (want app, partner:<id> or push:<id>)", ErrMalformed, r.Channel)
	}
	if len(r.Code) > MaxCodeLen {
		return Record{}, fmt.Errorf("%w: code longer than %d bytes", ErrMalformed, MaxCodeLen)
	}
	if r.ClaimedAtMs <= 0 || r.ExpiresAtMs < r.ClaimedAtMs {
		return Record{}, fmt.Errorf("%w: claimed_at_ms=%d expires_at_ms=%d", ErrMalformed, r.ClaimedAtMs, r.ExpiresAtMs)
	}
	return r, nil
}
