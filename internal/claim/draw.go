package claim

import (
	"strconv"
	"strings"
)

// A lottery draw's inputs as they travel with its record (DESIGN.md "Lottery"): the
// outbox entry's field "l" (written by claim.lua) and the flash.claims record's "draw",
//
//	<odds version>:<r>:<pick>
//
// r is the uniform integer in [0, total weight) the gateway drew with crypto/rand, pick
// the prize SKU r points at under the configured weights ("" for the no-prize band),
// before stock and budget. The outcome is the record itself: a won draw is a claim of
// SKU pick; a draw that won nothing has no SKU and value 0.
type Draw struct {
	OddsVersion string
	R           int64
	Pick        string
}

// String is the encoded form.
func (d Draw) String() string {
	return d.OddsVersion + ":" + strconv.FormatInt(d.R, 10) + ":" + d.Pick
}

// ParseDraw decodes a draw; false when it is not one.
func ParseDraw(s string) (Draw, bool) {
	ver, rest, ok := strings.Cut(s, ":")
	if !ok || ver == "" {
		return Draw{}, false
	}
	rs, pick, ok := strings.Cut(rest, ":")
	if !ok {
		return Draw{}, false
	}
	r, err := strconv.ParseInt(rs, 10, 64)
	if err != nil || r < 0 {
		return Draw{}, false
	}
	return Draw{OddsVersion: ver, R: r, Pick: pick}, true
}

// NoPrize reports whether r is a lottery draw that won nothing.
func (r *Record) NoPrize() bool { return r.Draw != "" && r.SKU == "" }
