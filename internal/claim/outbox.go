package claim

import "strconv"

// The outbox entry: one field-value stream entry per accepted claim in fg:{c}:outbox,
// written by claim.lua's XADD and read by the relay, reconcile, recovery and the test
// kits. This is its one Go parser. Fields: c claim_id, r request_id, s sku, u user,
// d device, i ip, v value, t claimed_ms, e expires_ms, b business line, h channel, k the
// partner code handed out ("" or absent: none), l a lottery draw (draw.go; absent for
// other kinds).
//
// FromOutbox builds the claim record of the entry with stream id id in campaign's
// outbox; values is the entry's fields as go-redis returns them (XMessage.Values).
func FromOutbox(campaign, id string, values map[string]any) Record {
	s := func(k string) string { v, _ := values[k].(string); return v }
	n := func(k string) int64 { v, _ := strconv.ParseInt(s(k), 10, 64); return v }
	return Record{
		Version: Version, ClaimID: s("c"), RequestID: s("r"), CampaignID: campaign,
		BusinessLine: s("b"), SKU: s("s"), UserID: s("u"), DeviceID: s("d"), IP: s("i"),
		Value: n("v"), ClaimedAtMs: n("t"), ExpiresAtMs: n("e"), OutboxID: id, Channel: s("h"),
		Code: s("k"), Draw: s("l"),
	}
}
