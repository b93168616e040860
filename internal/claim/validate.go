package claim

import "fmt"

// MaxIDLen is the longest id CONTRACT.md allows (user, device, request, campaign,
// business line, SKU).
const MaxIDLen = 64

// ClaimIDRandLen is the length of the random part of a claim id
// ("<campaign_id>.<26 characters of 0-9a-v>", the gateway's claimer).
const ClaimIDRandLen = 26

// ValidID reports whether id is 1-64 characters of [A-Za-z0-9._:-] (CONTRACT.md).
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idChar[id[i]] {
			return false
		}
	}
	return true
}

// ValidIDBytes is ValidID for bytes, allocating nothing (the claim path's parser).
func ValidIDBytes(id []byte) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for _, c := range id {
		if !idChar[c] {
			return false
		}
	}
	return true
}

var idChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "._:-" {
		t[c] = true
	}
	return t
}()

// ValidClaimID reports whether id has the shape the gateway gives claim ids of
// campaign: the campaign id, a dot, and 26 characters of the lower-case base32
// alphabet 0-9a-v.
func ValidClaimID(id, campaign string) bool {
	if len(id) != len(campaign)+1+ClaimIDRandLen || id[:len(campaign)] != campaign || id[len(campaign)] != '.' {
		return false
	}
	for i := len(campaign) + 1; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}

// CheckIDs reports the first field of r that breaks the contract's id rules: every id
// 1-64 characters of [A-Za-z0-9._:-], the claim id shaped as the gateway makes it for
// r's campaign, the ip at most 64 printable ASCII characters and the outbox id a Redis
// stream id. A record that Decode accepted and CheckIDs passes names nothing that a
// gateway could not have named. The error is "field: what is wrong".
func (r *Record) CheckIDs() error {
	for _, f := range [...]struct{ name, v string }{
		{"campaign_id", r.CampaignID}, {"request_id", r.RequestID}, {"business_line", r.BusinessLine},
		{"sku", r.SKU}, {"user_id", r.UserID}, {"device_id", r.DeviceID},
	} {
		if f.name == "sku" && r.NoPrize() {
			continue // a draw that won nothing has no SKU
		}
		if !ValidID(f.v) {
			return fmt.Errorf("%s: must be 1-%d characters of [A-Za-z0-9._:-] (got %d bytes)", f.name, MaxIDLen, len(f.v))
		}
	}
	if !ValidClaimID(r.ClaimID, r.CampaignID) {
		return fmt.Errorf("claim_id: must be the campaign_id, '.' and %d characters of 0-9a-v (got %d bytes)", ClaimIDRandLen, len(r.ClaimID))
	}
	if len(r.IP) > MaxIDLen {
		return fmt.Errorf("ip: at most %d characters (got %d)", MaxIDLen, len(r.IP))
	}
	for i := 0; i < len(r.IP); i++ {
		if c := r.IP[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("ip: printable ASCII only (byte %d is 0x%02x)", i, c)
		}
	}
	if r.OutboxID != "" && !validStreamID(r.OutboxID) {
		return fmt.Errorf("outbox_id: must be a stream id <ms>-<seq> (got %d bytes)", len(r.OutboxID))
	}
	return nil
}

// validStreamID: "<1-20 digits>-<1-20 digits>".
func validStreamID(s string) bool {
	dash := -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '-' && dash < 0:
			dash = i
		case c < '0' || c > '9':
			return false
		}
	}
	return dash > 0 && dash <= 20 && len(s)-dash-1 >= 1 && len(s)-dash-1 <= 20
}
