package claim

import (
	"strconv"
	"strings"
)

// The idempotency record: the value of fg:{c}:rq:<request_id>, written by claim.lua
// (A and R), durable.lua (A -> D), confirm.lua (-> S), void.lua (-> V) and recovery (S),
// and read by the claimer's pending lookup, the relay and recovery. This file is its one
// Go owner; each script that writes or matches it points here.
//
//	<state>\t<claim_id>\t<value>\t<claimed_ms>\t<expires_ms>\t<outbox_id>\t<sku>\t<user>\t<device>
//
// For a rejection (R) the claim_id field holds the code and value..outbox_id are empty.
// The trailing sku/user/device is the request's fingerprint: the same request_id with
// another fingerprint is a key reuse.
type Idem struct {
	State                    byte // one of the Idem* states
	ClaimID                  string
	Value                    int64
	ClaimedAtMs, ExpiresAtMs int64
	OutboxID                 string
	SKU, UserID, DeviceID    string
}

// Idempotency record states.
const (
	IdemAccepted = 'A' // accepted, produce not yet acknowledged
	IdemDurable  = 'D' // the broker acknowledged it
	IdemSettled  = 'S' // the settler confirmed it
	IdemVoided   = 'V' // given back by compensation
	IdemRejected = 'R' // rejected; ClaimID holds the code
)

// idemFields is the number of tab-separated fields.
const idemFields = 9

// AppendIdem appends r's encoding to dst.
func AppendIdem(dst []byte, r *Idem) []byte {
	dst = append(dst, r.State, '\t')
	dst = append(dst, r.ClaimID...)
	dst = append(dst, '\t')
	if r.State != IdemRejected {
		dst = strconv.AppendInt(dst, r.Value, 10)
		dst = append(dst, '\t')
		dst = strconv.AppendInt(dst, r.ClaimedAtMs, 10)
		dst = append(dst, '\t')
		dst = strconv.AppendInt(dst, r.ExpiresAtMs, 10)
		dst = append(dst, '\t')
	} else {
		dst = append(dst, "\t\t\t"...)
	}
	dst = append(dst, r.OutboxID...)
	dst = append(dst, '\t')
	dst = append(dst, r.SKU...)
	dst = append(dst, '\t')
	dst = append(dst, r.UserID...)
	dst = append(dst, '\t')
	return append(dst, r.DeviceID...)
}

// AppendRejection appends the record claim.lua stores for a remembered rejection.
func AppendRejection(dst []byte, code int, sku, user, device string) []byte {
	return AppendIdem(dst, &Idem{State: IdemRejected, ClaimID: strconv.Itoa(code), SKU: sku, UserID: user, DeviceID: device})
}

// ParseIdem decodes an idempotency record; false when it is not one.
func ParseIdem(s string) (Idem, bool) {
	var f [idemFields]string
	for i := 0; i < idemFields-1; i++ {
		j := strings.IndexByte(s, '\t')
		if j < 0 {
			return Idem{}, false
		}
		f[i], s = s[:j], s[j+1:]
	}
	if strings.IndexByte(s, '\t') >= 0 {
		return Idem{}, false
	}
	f[idemFields-1] = s
	if len(f[0]) != 1 {
		return Idem{}, false
	}
	r := Idem{State: f[0][0], ClaimID: f[1], OutboxID: f[5], SKU: f[6], UserID: f[7], DeviceID: f[8]}
	r.Value, _ = strconv.ParseInt(f[2], 10, 64)
	r.ClaimedAtMs, _ = strconv.ParseInt(f[3], 10, 64)
	r.ExpiresAtMs, _ = strconv.ParseInt(f[4], 10, 64)
	return r, true
}

// IdemState returns the state letter and claim id of an idempotency record without
// decoding the rest (0, "" when it is not one).
func IdemState(s string) (byte, string) {
	if len(s) < 2 || s[1] != '\t' {
		return 0, ""
	}
	rest := s[2:]
	if i := strings.IndexByte(rest, '\t'); i >= 0 {
		rest = rest[:i]
	}
	return s[0], rest
}
