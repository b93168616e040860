package expire

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/flashgate/flashgate/internal/events"
)

// expiredData is the data object of an expired event on flash.events.
type expiredData struct {
	ClaimID    string `json:"claim_id"`
	CampaignID string `json:"campaign_id"`
	SKU        string `json:"sku"`
	UserID     string `json:"user_id"`
	Value      int64  `json:"value"`
	Revoked    bool   `json:"revoked,omitempty"` // voided by riskctl revoke, not run out
}

// markExpired marks the claims expired and writes one expired event per claim it
// changed, in the batch's transaction (the rows are locked FOR UPDATE since the
// batch's SELECT): the event exists exactly when the expiry committed, and a redeem
// racing it either committed first (the row is no longer 'settled': no change, no
// event) or waits for this commit and then sees it expired.
func markExpired(ctx context.Context, tx pgx.Tx, ids []string) (int, error) {
	rows, err := tx.Query(ctx, `UPDATE claims SET state = 'expired', expired_at = now()
		WHERE claim_id = ANY($1) AND state = 'settled'
		RETURNING claim_id, campaign_id, sku, user_id, value, revoked_at IS NOT NULL`, ids)
	if err != nil {
		return 0, fmt.Errorf("expire: mark expired: %w", err)
	}
	var done []expiredData
	for rows.Next() {
		var d expiredData
		if err := rows.Scan(&d.ClaimID, &d.CampaignID, &d.SKU, &d.UserID, &d.Value, &d.Revoked); err != nil {
			rows.Close()
			return 0, fmt.Errorf("expire: mark expired: %w", err)
		}
		done = append(done, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("expire: mark expired: %w", err)
	}
	for _, d := range done {
		if err := events.Emit(ctx, tx, events.Expired, d.ClaimID, d); err != nil {
			return 0, fmt.Errorf("expire: %w", err)
		}
	}
	return len(done), nil
}
