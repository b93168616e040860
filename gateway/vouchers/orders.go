package vouchers

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/voucher"
)

// Redeem against an order and its rollback (CONTRACT.md "Issuance and the voucher's
// life"; migration 0011). Like Redeem, each is one short READ COMMITTED transaction
// around the claim's row lock (SELECT ... FOR UPDATE): two calls on one voucher, or a
// call racing the settler's expiry job (which takes the same lock, FOR UPDATE SKIP
// LOCKED, and only expires state = 'settled'), are serialized, and whichever is second
// sees what the first committed. The event (redeemed, rolled_back) is written in the
// same transaction (internal/events), so it exists exactly when the change committed.

type orderRow struct {
	row
	orderID  *string
	minSpend int64
	excluded []string
}

const orderColumns = `cl.claim_id, cl.campaign_id, cl.sku, cl.user_id, cl.state, cl.value, cl.claimed_at,
	cl.expires_at, cl.redeemed_at, cl.expired_at, cl.expires_at <= now() AS past, cl.revoked_at IS NOT NULL AS revoked,
	coalesce(cl.partner_code, '') AS partner_code, cl.order_id, COALESCE(s.min_spend, 0), COALESCE(s.excluded_categories, '{}')`

func (s *Store) lockOrderRow(ctx context.Context, tx pgx.Tx, claimID string) (*orderRow, error) {
	var r orderRow
	err := tx.QueryRow(ctx, `SELECT `+orderColumns+` FROM claims cl
		LEFT JOIN campaign_skus s ON s.campaign_id = cl.campaign_id AND s.sku = cl.sku
		WHERE cl.claim_id = $1 FOR UPDATE OF cl`, claimID).
		Scan(append(r.dest(), &r.orderID, &r.minSpend, &r.excluded)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return &r, err
}

// eventData is the data object of a redeemed or rolled_back event.
type eventData struct {
	ClaimID    string `json:"claim_id"`
	CampaignID string `json:"campaign_id"`
	SKU        string `json:"sku"`
	UserID     string `json:"user_id"`
	Value      int64  `json:"value"`
	OrderID    string `json:"order_id"`
	Amount     int64  `json:"amount,omitempty"`
	Category   string `json:"category,omitempty"`
	Expired    bool   `json:"expired,omitempty"` // rolled_back: the voucher came back past its expiry
}

// RedeemOrder writes a voucher off against an order. The checks, in order: no row →
// RedeemUnknown; another user → RedeemNotOwner; already redeemed on this order →
// RedeemOK with the stored answer (idempotent per order_id); redeemed otherwise (another
// order, or a body-less redeem) → RedeemOtherOrder; revoked → RedeemRevoked; expired →
// RedeemExpired; the amount under the SKU's min_spend → RedeemBelowMin; the category
// excluded → RedeemNotApplicable.
func (s *Store) RedeemOrder(ctx context.Context, claimID, userID string, o voucher.Order) (voucher.Voucher, int, error) {
	tx, err := s.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: %w", claimID, err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	r, err := s.lockOrderRow(ctx, tx, claimID)
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: %w", claimID, err)
	}
	switch {
	case r == nil:
		return voucher.Voucher{}, voucher.RedeemUnknown, nil
	case r.v.UserID != userID:
		return voucher.Voucher{}, voucher.RedeemNotOwner, nil
	case r.v.State == stateRedeemed && r.orderID != nil && *r.orderID == o.ID:
		return r.voucher(), voucher.RedeemOK, nil
	case r.v.State == stateRedeemed:
		return r.voucher(), voucher.RedeemOtherOrder, nil
	case r.revoked:
		return r.voucher(), voucher.RedeemRevoked, nil
	case r.v.State == stateExpired || r.past:
		return r.voucher(), voucher.RedeemExpired, nil
	case o.Amount < r.minSpend:
		return r.voucher(), voucher.RedeemBelowMin, nil
	case slices.Contains(r.excluded, o.Category):
		return r.voucher(), voucher.RedeemNotApplicable, nil
	}
	var out row
	err = tx.QueryRow(ctx, `UPDATE claims SET state = 'redeemed', redeemed_at = now(),
		order_id = $2, order_amount = $3, order_category = $4
		WHERE claim_id = $1 AND state = 'settled' AND revoked_at IS NULL RETURNING `+columns,
		claimID, o.ID, o.Amount, o.Category).Scan(out.dest()...)
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: %w", claimID, err)
	}
	// The same order may come back after its own rollback: the row is reused.
	if _, err := tx.Exec(ctx, `INSERT INTO redemptions (claim_id, order_id, amount, category) VALUES ($1, $2, $3, $4)
		ON CONFLICT (claim_id, order_id) DO UPDATE SET amount = EXCLUDED.amount, category = EXCLUDED.category,
		  redeemed_at = now(), rolled_back_at = NULL`, claimID, o.ID, o.Amount, o.Category); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: record the order: %w", claimID, err)
	}
	v := out.voucher()
	if err := events.Emit(ctx, tx, events.Redeemed, claimID, eventData{ClaimID: claimID, CampaignID: v.CampaignID,
		SKU: v.SKU, UserID: v.UserID, Value: v.Value, OrderID: o.ID, Amount: o.Amount, Category: o.Category}); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: %w", claimID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: commit: %w", claimID, err)
	}
	return v, voucher.RedeemOK, nil
}

// Rollback undoes the redeem of a refunded order: the voucher is settled again, usable
// until its expiry. One already past its expiry comes back expired (answered RedeemOK
// with state "expired"): the settler's expiry job then gives its value back to the
// budget, as for any voucher that expired unused. Idempotent: a rollback of an order
// already rolled back answers RedeemOK with the voucher as it is now. The checks: no
// row → RedeemUnknown; another user → RedeemNotOwner; not redeemed on that order (and
// never rolled back from it) → RollbackNoOrder.
func (s *Store) Rollback(ctx context.Context, claimID, userID, orderID string) (voucher.Voucher, int, error) {
	tx, err := s.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("rollback %s: %w", claimID, err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	r, err := s.lockOrderRow(ctx, tx, claimID)
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("rollback %s: %w", claimID, err)
	}
	switch {
	case r == nil:
		return voucher.Voucher{}, voucher.RedeemUnknown, nil
	case r.v.UserID != userID:
		return voucher.Voucher{}, voucher.RedeemNotOwner, nil
	case r.v.State != stateRedeemed || r.orderID == nil || *r.orderID != orderID:
		var done bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM redemptions WHERE claim_id = $1 AND order_id = $2
			AND rolled_back_at IS NOT NULL)`, claimID, orderID).Scan(&done); err != nil {
			return voucher.Voucher{}, 0, fmt.Errorf("rollback %s: %w", claimID, err)
		}
		if done {
			return r.voucher(), voucher.RedeemOK, nil
		}
		return r.voucher(), voucher.RollbackNoOrder, nil
	}
	var out row
	err = tx.QueryRow(ctx, `UPDATE claims SET state = 'settled', redeemed_at = NULL,
		order_id = NULL, order_amount = NULL, order_category = NULL
		WHERE claim_id = $1 AND state = 'redeemed' RETURNING `+columns, claimID).Scan(out.dest()...)
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("rollback %s: %w", claimID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE redemptions SET rolled_back_at = now() WHERE claim_id = $1 AND order_id = $2`,
		claimID, orderID); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("rollback %s: %w", claimID, err)
	}
	v := out.voucher()
	if err := events.Emit(ctx, tx, events.RolledBack, claimID, eventData{ClaimID: claimID, CampaignID: v.CampaignID,
		SKU: v.SKU, UserID: v.UserID, Value: v.Value, OrderID: orderID, Expired: out.past}); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("rollback %s: %w", claimID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("rollback %s: commit: %w", claimID, err)
	}
	return v, voucher.RedeemOK, nil
}
