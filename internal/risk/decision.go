package risk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/flashgate/flashgate/internal/claim"
)

// Flags are the risk flags claim.lua returns per claim (its F_* constants): which checks
// tripped, whether shadow mode was on (then none was enforced) and whether the claim
// froze its device or user.
type Flags int64

// The flags, with the same values as claim.lua.
const (
	BlockedDevice  Flags = 1
	BlockedIP      Flags = 2
	BlockedUser    Flags = 4
	FrozenDevice   Flags = 8
	FrozenUser     Flags = 16
	DeviceVelocity Flags = 32
	IPVelocity     Flags = 64
	UserVelocity   Flags = 128
	ShadowMode     Flags = 256
	FrozeDevice    Flags = 512
	FrozeUser      Flags = 1024

	// Blocked is any block or freeze that was in place.
	Blocked = BlockedDevice | BlockedIP | BlockedUser | FrozenDevice | FrozenUser
	// Hits is every check that can reject.
	Hits = Blocked | DeviceVelocity | IPVelocity | UserVelocity
)

// hitNames are the names of the flags in a decision record, in the order the script
// ranks them (the first one that tripped is the reason given).
var hitNames = [...]struct {
	f    Flags
	name string
}{
	{BlockedDevice, "blocked_device"}, {BlockedIP, "blocked_ip"}, {BlockedUser, "blocked_user"},
	{FrozenDevice, "frozen_device"}, {FrozenUser, "frozen_user"},
	{DeviceVelocity, "device_velocity"}, {IPVelocity, "ip_velocity"}, {UserVelocity, "user_velocity"},
}

// Seen is what the risk checks of one claim saw: the counts in each sliding window
// before this claim (-1: that rule was off or the checks did not run) and the flags.
type Seen struct {
	Device, IP, User         int64
	FreezeDevice, FreezeUser int64
	Flags                    Flags
}

// NotEvaluated is a Seen for a decision the risk checks did not reach.
var NotEvaluated = Seen{-1, -1, -1, -1, -1, 0}

// DecisionVersion is the decision record's schema version ("v").
const DecisionVersion = 1

// Decision is one claim decision as recorded on flash.decisions (docs/RISK.md has the
// schema). Times are Redis-clock milliseconds.
type Decision struct {
	TimeMs       int64
	CampaignID   string
	SKU          string
	UserID       string
	DeviceID     string
	IP           string
	RequestID    string
	Code         int
	Replayed     bool
	ClaimID      string
	RetryAfterMs int64
	Seen         Seen
}

// Results of a decision record.
const (
	ResultAccepted = "accepted"
	ResultRejected = "rejected" // a 409, 429 or 403 answer
	ResultRefused  = "refused"  // unknown campaign or SKU, idempotency key reuse
)

// ReasonOf names a script code: "accepted", a CONTRACT.md rejection reason, or a refusal
// (the result-code table, internal/claim).
func ReasonOf(code int) string { return claim.ReasonOf(code) }

// Recordable reports whether a script code is a decision worth recording: accepted,
// rejected or refused. Internal retries (stale route, not warm, in flight) are not.
func Recordable(code int) bool {
	r, ok := claim.ResultOf(code)
	return ok && r.Kind != claim.KindRetry
}

// Result classifies the decision.
func (d *Decision) Result() string {
	switch {
	case d.Code == claim.CodeAccepted:
		return ResultAccepted
	case claim.IsRejection(d.Code):
		return ResultRejected
	}
	return ResultRefused
}

// Accepted reports whether the claim was accepted.
func (d *Decision) Accepted() bool { return d.Code == claim.CodeAccepted }

// AppendJSON appends the decision's JSON encoding to dst without reflection; the
// gateway calls it per claim.
func (d *Decision) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, DecisionVersion, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, d.TimeMs, 10)
	dst = appendStr(dst, "campaign_id", d.CampaignID)
	dst = appendStr(dst, "sku", d.SKU)
	dst = appendStr(dst, "user_id", d.UserID)
	dst = appendStr(dst, "device_id", d.DeviceID)
	dst = appendStr(dst, "ip", d.IP)
	dst = appendStr(dst, "request_id", d.RequestID)
	dst = appendStr(dst, "result", d.Result())
	if d.Code != claim.CodeAccepted {
		dst = appendStr(dst, "reason", ReasonOf(d.Code))
	}
	dst = append(dst, `,"code":`...)
	dst = strconv.AppendInt(dst, int64(d.Code), 10)
	if d.ClaimID != "" {
		dst = appendStr(dst, "claim_id", d.ClaimID)
	}
	if d.Replayed {
		dst = append(dst, `,"replayed":true`...)
	}
	if d.RetryAfterMs > 0 {
		dst = append(dst, `,"retry_after_ms":`...)
		dst = strconv.AppendInt(dst, d.RetryAfterMs, 10)
	}
	s := &d.Seen
	if s.Device >= 0 || s.IP >= 0 || s.User >= 0 || s.FreezeDevice >= 0 || s.FreezeUser >= 0 {
		dst = append(dst, `,"seen":{`...)
		first := true
		for _, c := range [...]struct {
			name string
			v    int64
		}{{"device", s.Device}, {"ip", s.IP}, {"user", s.User}, {"freeze_device", s.FreezeDevice}, {"freeze_user", s.FreezeUser}} {
			if c.v < 0 {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, '"')
			dst = append(dst, c.name...)
			dst = append(dst, `":`...)
			dst = strconv.AppendInt(dst, c.v, 10)
		}
		dst = append(dst, '}')
	}
	if s.Flags&Hits != 0 {
		dst = append(dst, `,"hits":[`...)
		first := true
		for _, h := range hitNames {
			if s.Flags&h.f == 0 {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, '"')
			dst = append(dst, h.name...)
			dst = append(dst, '"')
		}
		dst = append(dst, ']')
	}
	if s.Flags&ShadowMode != 0 {
		dst = append(dst, `,"shadow":true`...)
	}
	if s.Flags&(FrozeDevice|FrozeUser) != 0 {
		dst = append(dst, `,"froze":[`...)
		if s.Flags&FrozeDevice != 0 {
			dst = append(dst, `"device"`...)
		}
		if s.Flags&FrozeUser != 0 {
			if s.Flags&FrozeDevice != 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `"user"`...)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

func appendStr(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return claim.AppendString(dst, v)
}

type wireDecision struct {
	V            *int             `json:"v"`
	T            *int64           `json:"t"`
	CampaignID   string           `json:"campaign_id"`
	SKU          string           `json:"sku"`
	UserID       string           `json:"user_id"`
	DeviceID     string           `json:"device_id"`
	IP           string           `json:"ip"`
	RequestID    string           `json:"request_id"`
	Result       string           `json:"result"`
	Reason       string           `json:"reason"`
	Code         *int             `json:"code"`
	ClaimID      string           `json:"claim_id"`
	Replayed     bool             `json:"replayed"`
	RetryAfterMs int64            `json:"retry_after_ms"`
	Seen         map[string]int64 `json:"seen"`
	Hits         []string         `json:"hits"`
	Shadow       bool             `json:"shadow"`
	Froze        []string         `json:"froze"`
}

// ErrDecision is wrapped by every decode error.
var ErrDecision = errors.New("decision record")

// DecodeDecision decodes a decision record strictly: an unknown field, a newer version
// or a missing required field is an error (riskctl must not guess what a record meant).
func DecodeDecision(b []byte) (Decision, error) {
	var w wireDecision
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Decision{}, fmt.Errorf("%w: %v", ErrDecision, err)
	}
	if dec.More() {
		return Decision{}, fmt.Errorf("%w: trailing data", ErrDecision)
	}
	switch {
	case w.V == nil:
		return Decision{}, fmt.Errorf("%w: v: missing", ErrDecision)
	case *w.V != DecisionVersion:
		return Decision{}, fmt.Errorf("%w: v: version %d, this riskctl reads %d", ErrDecision, *w.V, DecisionVersion)
	case w.T == nil:
		return Decision{}, fmt.Errorf("%w: t: missing", ErrDecision)
	case w.Code == nil:
		return Decision{}, fmt.Errorf("%w: code: missing", ErrDecision)
	case w.CampaignID == "":
		return Decision{}, fmt.Errorf("%w: campaign_id: missing", ErrDecision)
	}
	if w.RetryAfterMs < 0 {
		return Decision{}, fmt.Errorf("%w: retry_after_ms: negative", ErrDecision)
	}
	if w.Reason != "" && w.Reason != ReasonOf(*w.Code) {
		return Decision{}, fmt.Errorf("%w: reason %q does not match code %d", ErrDecision, w.Reason, *w.Code)
	}
	d := Decision{
		TimeMs: *w.T, CampaignID: w.CampaignID, SKU: w.SKU, UserID: w.UserID, DeviceID: w.DeviceID,
		IP: w.IP, RequestID: w.RequestID, Code: *w.Code, Replayed: w.Replayed, ClaimID: w.ClaimID,
		RetryAfterMs: w.RetryAfterMs, Seen: NotEvaluated,
	}
	for k, v := range w.Seen {
		if v < 0 {
			return Decision{}, fmt.Errorf("%w: seen: %s: negative", ErrDecision, k)
		}
		switch k {
		case "device":
			d.Seen.Device = v
		case "ip":
			d.Seen.IP = v
		case "user":
			d.Seen.User = v
		case "freeze_device":
			d.Seen.FreezeDevice = v
		case "freeze_user":
			d.Seen.FreezeUser = v
		default:
			return Decision{}, fmt.Errorf("%w: seen: unknown counter %q", ErrDecision, k)
		}
	}
	for _, h := range w.Hits {
		f, ok := hitFlag(h)
		if !ok {
			return Decision{}, fmt.Errorf("%w: hits: unknown %q", ErrDecision, h)
		}
		d.Seen.Flags |= f
	}
	if w.Shadow {
		d.Seen.Flags |= ShadowMode
	}
	for _, f := range w.Froze {
		switch f {
		case "device":
			d.Seen.Flags |= FrozeDevice
		case "user":
			d.Seen.Flags |= FrozeUser
		default:
			return Decision{}, fmt.Errorf("%w: froze: unknown %q", ErrDecision, f)
		}
	}
	if d.Result() != w.Result {
		return Decision{}, fmt.Errorf("%w: result %q does not match code %d", ErrDecision, w.Result, d.Code)
	}
	return d, nil
}

func hitFlag(name string) (Flags, bool) {
	for _, h := range hitNames {
		if h.name == name {
			return h.f, true
		}
	}
	return 0, false
}

// HitNames lists the names of the checks that tripped.
func (f Flags) HitNames() []string {
	var out []string
	for _, h := range hitNames {
		if f&h.f != 0 {
			out = append(out, h.name)
		}
	}
	return out
}
