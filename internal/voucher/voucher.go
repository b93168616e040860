// Package voucher holds the voucher types that the public API (gateway/api, HTTP) and
// its Postgres and Redis adapters (gateway/vouchers) share: a claim as GET
// /v1/claims/{id} reports it (a voucher, or a lottery draw that won nothing), the
// position in a user's list, and the redeem results.
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
	// Delivery is a delivered prize's state (delivering, delivered, failed; "" when
	// its SKU has no webhook): internal/delivery.
	Delivery string
	// Code is the partner code the claim handed out ("" for a SKU without a code pool),
	// shown to the voucher's owner only (DESIGN.md "Partner code pools").
	Code string
}

// Draw is a lottery draw that won nothing, as GET /v1/claims/{draw_id} reports it to
// its owner (DESIGN.md "Lottery"). A won draw is a claim and is reported as a Voucher.
type Draw struct {
	DrawID, CampaignID, UserID string
	// State is "pending" (answered, not yet a draws row: read from Redis) or "settled"
	// (its draws row is in Postgres).
	State   string
	DrawnAt time.Time
}

// Draw states.
const (
	DrawPending = "pending"
	DrawSettled = "settled"
)

// Redeem results.
const (
	RedeemOK = iota
	RedeemUnknown
	RedeemNotOwner
	RedeemExpired
	RedeemRevoked // voided by the risk team (riskctl revoke)
	// Redeem against an order (gateway/vouchers/orders.go).
	RedeemBelowMin      // the order's amount is under the SKU's min_spend
	RedeemNotApplicable // the order's category is excluded by the SKU
	RedeemOtherOrder    // already redeemed on another order
	RollbackNoOrder     // rollback of an order the voucher is not redeemed on
	// Transfer (gateway/vouchers/transfer.go).
	TransferNotAllowed  // the campaign is not transferable, or the hops are used up
	TransferNotUsable   // redeemed, expired or revoked: it cannot move
	TransferSelf        // to the current owner
	TransferRateLimited // the owner moved too many vouchers in the window
)

// Order is what a redeem against an order carries.
type Order struct {
	ID       string
	Amount   int64
	Category string
}

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
