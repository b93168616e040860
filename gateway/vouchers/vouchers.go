// Package vouchers owns the gateway's reads and writes of settled claims in Postgres:
// GET /v1/claims/{id} (a claim the settler has written) and the redeem write-off. It
// implements api.Vouchers (checked in api_test.go) without importing the HTTP package,
// and the public API package never imports the database driver (the STYLE fence: the claim hot path does not import pgx).
package vouchers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/internal/voucher"
)

// Store reads and redeems vouchers. Safe for concurrent use.
type Store struct {
	pg *pgxpool.Pool
	// TransferMax transfers per TransferWindow per owner (transfer.go; 0: the defaults).
	TransferMax    int
	TransferWindow time.Duration
}

// New builds a Store on a pool.
func New(pg *pgxpool.Pool) (*Store, error) {
	if pg == nil {
		return nil, errors.New("vouchers: a Postgres pool is required")
	}
	return &Store{pg: pg}, nil
}

// The columns every query returns, in scan order. "past" is computed by Postgres so that
// every gateway judges expiry on one clock, the same one the settler's expiry job uses.
const columns = `claim_id, campaign_id, sku, user_id, state, value, claimed_at, expires_at,
	redeemed_at, expired_at, expires_at <= now() AS past, revoked_at IS NOT NULL AS revoked,
	coalesce(partner_code, '') AS partner_code`

type row struct {
	v                     voucher.Voucher
	redeemedAt, expiredAt *time.Time
	past, revoked         bool
}

func (r *row) dest() []any {
	return []any{&r.v.ClaimID, &r.v.CampaignID, &r.v.SKU, &r.v.UserID, &r.v.State, &r.v.Value,
		&r.v.ClaimedAt, &r.v.ExpiresAt, &r.redeemedAt, &r.expiredAt, &r.past, &r.revoked, &r.v.Code}
}

// voucher finishes a scanned row. A settled voucher past its expiry is reported as
// expired even before the settler's expiry job has recovered its budget (and set
// expired_at): the client must see the same answer from GET as from redeem.
func (r *row) voucher() voucher.Voucher {
	v := r.v
	v.ClaimedAt, v.ExpiresAt = v.ClaimedAt.UTC(), v.ExpiresAt.UTC()
	if r.redeemedAt != nil {
		v.RedeemedAt = r.redeemedAt.UTC()
	}
	if r.expiredAt != nil {
		v.ExpiredAt = r.expiredAt.UTC()
	}
	switch {
	case r.revoked && v.State != stateRedeemed:
		// Voided by riskctl revoke (its value is given back by the expirer, which marks
		// it expired): shown as revoked throughout. A voucher redeemed before the
		// revocation stays redeemed - that money is spent.
		v.State = stateRevoked
		v.ExpiredAt = time.Time{}
	case v.State == stateSettled && r.past:
		v.State = stateExpired
	}
	return v
}

const (
	stateSettled  = "settled"
	stateRedeemed = "redeemed"
	stateExpired  = "expired"
	stateRevoked  = "revoked"
)

// Voucher reads one claim's row. ok is false when the settler has not written it (it
// may still be pending in Redis, which the API asks separately).
func (s *Store) Voucher(ctx context.Context, claimID string) (voucher.Voucher, bool, error) {
	var r row
	var dl *string // the prize's delivery (internal/delivery), NULL for none
	err := s.pg.QueryRow(ctx, `SELECT `+columns+`, (SELECT d.state FROM deliveries d WHERE d.claim_id = $1)
		FROM claims WHERE claim_id = $1`, claimID).Scan(append(r.dest(), &dl)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return voucher.Voucher{}, false, nil
	}
	if err != nil {
		return voucher.Voucher{}, false, fmt.Errorf("read claim %s: %w", claimID, err)
	}
	v := r.voucher()
	if dl != nil {
		v.Delivery = *dl
	}
	return v, true, nil
}

// Redeem writes a voucher off for its owner. It is idempotent: redeeming a redeemed
// voucher again answers RedeemOK with the same body (the stored redeemed_at).
//
// It is a short transaction around a row lock, and the lock is what makes it race-safe.
// Two redeems of one voucher: A locks the row, sees settled, updates it to redeemed and
// commits; B's SELECT ... FOR UPDATE waited on A's lock and, under READ COMMITTED,
// re-reads the committed row, sees redeemed and answers OK with A's redeemed_at. A
// redeem racing the settler's expiry job: whichever locks first wins and the other sees
// the outcome - a voucher is never both redeemed and expired (the expiry job's UPDATE is
// guarded by state = 'settled').
//
// The checks run in this order: no row → RedeemUnknown; another user → RedeemNotOwner
// (before anything about its state, which is not theirs to learn); already redeemed →
// RedeemOK; expired (by state or by expires_at on the database clock) → RedeemExpired.
func (s *Store) Redeem(ctx context.Context, claimID, userID string) (voucher.Voucher, int, error) {
	tx, err := s.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: %w", claimID, err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	var r row
	err = tx.QueryRow(ctx, `SELECT `+columns+` FROM claims WHERE claim_id = $1 FOR UPDATE`, claimID).Scan(r.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return voucher.Voucher{}, voucher.RedeemUnknown, nil
	}
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: %w", claimID, err)
	}
	switch {
	case r.v.UserID != userID:
		return voucher.Voucher{}, voucher.RedeemNotOwner, nil
	case r.v.State == stateRedeemed:
		return r.voucher(), voucher.RedeemOK, nil
	case r.revoked:
		return r.voucher(), voucher.RedeemRevoked, nil
	case r.v.State == stateExpired || r.past:
		return r.voucher(), voucher.RedeemExpired, nil
	}
	err = tx.QueryRow(ctx, `UPDATE claims SET state = 'redeemed', redeemed_at = now()
		WHERE claim_id = $1 AND state = 'settled' AND revoked_at IS NULL RETURNING `+columns, claimID).Scan(r.dest()...)
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: %w", claimID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("redeem %s: commit: %w", claimID, err)
	}
	return r.voucher(), voucher.RedeemOK, nil
}

// Mine lists a user's settled vouchers newest first: claimed before the cursor's
// (claimed_at, claim_id), at most limit. The index claims_user_claimed (migration
// 0005) serves it as one range scan.
func (s *Store) Mine(ctx context.Context, userID string, before voucher.Cursor, limit int) ([]voucher.Voucher, error) {
	var rows pgx.Rows
	var err error
	if before.IsZero() {
		rows, err = s.pg.Query(ctx, `SELECT `+columns+` FROM claims WHERE user_id = $1
			ORDER BY claimed_at DESC, claim_id DESC LIMIT $2`, userID, limit)
	} else {
		rows, err = s.pg.Query(ctx, `SELECT `+columns+` FROM claims WHERE user_id = $1
			AND (claimed_at, claim_id) < ($2, $3)
			ORDER BY claimed_at DESC, claim_id DESC LIMIT $4`, userID, before.ClaimedAt, before.ClaimID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list claims of a user: %w", err)
	}
	defer rows.Close()
	out := make([]voucher.Voucher, 0, limit)
	for rows.Next() {
		var r row
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, fmt.Errorf("list claims of a user: %w", err)
		}
		out = append(out, r.voucher())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list claims of a user: %w", err)
	}
	return out, nil
}
