// Package voucher holds the voucher types that the public API (gateway/api, HTTP) and
// its Postgres and Redis adapters (gateway/vouchers) share: a claim as GET
// /v1/claims/{id} reports it, the position in a user's list, and the redeem results.
// They live below both so that the adapters implement the API's interfaces without
// importing the HTTP package, and the API reads them without linking the database
// driver (DESIGN.md "Layers"). Standard library only.
package voucher

import (
	"strconv"
	"time"
)

// Voucher is a claim as GET /v1/claims/{id} reports it.
type Voucher struct {
	ClaimID, CampaignID, SKU, UserID, State string
	Value                                   int64
	ClaimedAt, ExpiresAt                    time.Time
	RedeemedAt, ExpiredAt                   time.Time // zero when not set
}

// Redeem results.
const (
	RedeemOK = iota
	RedeemUnknown
	RedeemNotOwner
	RedeemExpired
	RedeemRevoked // voided by the risk team (riskctl revoke)
)

// Cursor is a position in a user's vouchers: everything claimed strictly before
// (ClaimedAt, ClaimID) in the list's order. The zero Cursor is the start.
type Cursor struct {
	ClaimedAt time.Time
	ClaimID   string
}

// IsZero reports whether c is the start of the list.
func (c Cursor) IsZero() bool { return c.ClaimID == "" }

// String is the cursor's text: "<claimed_at unix µs>~<claim_id>" (claim ids never
// contain '~').
func (c Cursor) String() string {
	return strconv.FormatInt(c.ClaimedAt.UnixMicro(), 10) + "~" + c.ClaimID
}
