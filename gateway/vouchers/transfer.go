package vouchers

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/voucher"
)

// Transfer velocity: an owner moves at most TransferMax vouchers per TransferWindow
// (counted from the audited chain, the transfers table). Two transfers of different
// vouchers by one user at the same instant may both pass the count: the limit is a
// brake on abuse, not a ledger.
const (
	DefaultTransferMax    = 10
	DefaultTransferWindow = time.Hour
)

type transferData struct {
	ClaimID    string `json:"claim_id"`
	CampaignID string `json:"campaign_id"`
	SKU        string `json:"sku"`
	From       string `json:"from_user_id"`
	To         string `json:"to_user_id"`
	Hop        int    `json:"hop"`
}

// Transfer moves a settled voucher from its owner to another user (CONTRACT.md
// "Issuance and the voucher's life"). Budget and stock are untouched: the voucher keeps
// its value, expiry and reservation; only its owner changes, and the move is audited
// (transfers: hop, from, to, at) with a transferred event in the same transaction.
//
// One transaction around the claim's row lock: two transfers of one voucher at once are
// serialized, and the second, re-reading the committed row, finds another owner and
// answers RedeemNotOwner - exactly one wins. The checks: no row → RedeemUnknown; not the
// owner → RedeemNotOwner; to the owner → TransferSelf; redeemed, expired or revoked →
// TransferNotUsable; campaign not transferable or hops used up → TransferNotAllowed;
// over the owner's velocity → TransferRateLimited.
func (s *Store) Transfer(ctx context.Context, claimID, fromUser, toUser string) (voucher.Voucher, int, error) {
	max, window := s.TransferMax, s.TransferWindow
	if max == 0 {
		max = DefaultTransferMax
	}
	if window == 0 {
		window = DefaultTransferWindow
	}
	tx, err := s.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("transfer %s: %w", claimID, err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	var r row
	var hops, maxHops int
	var transferable bool
	err = tx.QueryRow(ctx, `SELECT `+columns+`, cl.hops, COALESCE(c.transferable, false), COALESCE(c.max_transfers, 0)
		FROM claims cl LEFT JOIN campaigns c ON c.id = cl.campaign_id
		WHERE cl.claim_id = $1 FOR UPDATE OF cl`, claimID).Scan(append(r.dest(), &hops, &transferable, &maxHops)...)
	if err == pgx.ErrNoRows {
		return voucher.Voucher{}, voucher.RedeemUnknown, nil
	}
	if err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("transfer %s: %w", claimID, err)
	}
	switch {
	case r.v.UserID != fromUser:
		return voucher.Voucher{}, voucher.RedeemNotOwner, nil
	case toUser == fromUser:
		return r.voucher(), voucher.TransferSelf, nil
	case r.v.State != stateSettled || r.revoked || r.past:
		return r.voucher(), voucher.TransferNotUsable, nil
	case !transferable || hops >= maxHops:
		return r.voucher(), voucher.TransferNotAllowed, nil
	}
	var recent int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM transfers WHERE from_user = $1 AND at > now() - $2::interval`,
		fromUser, window.String()).Scan(&recent); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("transfer %s: velocity: %w", claimID, err)
	}
	if recent >= max {
		return r.voucher(), voucher.TransferRateLimited, nil
	}
	var out row
	if err := tx.QueryRow(ctx, `UPDATE claims cl SET user_id = $2, hops = hops + 1
		WHERE claim_id = $1 RETURNING `+columns, claimID, toUser).Scan(out.dest()...); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("transfer %s: %w", claimID, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO transfers (claim_id, hop, from_user, to_user) VALUES ($1, $2, $3, $4)`,
		claimID, hops+1, fromUser, toUser); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("transfer %s: audit: %w", claimID, err)
	}
	v := out.voucher()
	if err := events.Emit(ctx, tx, events.Transferred, claimID, transferData{ClaimID: claimID,
		CampaignID: v.CampaignID, SKU: v.SKU, From: fromUser, To: toUser, Hop: hops + 1}); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("transfer %s: %w", claimID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return voucher.Voucher{}, 0, fmt.Errorf("transfer %s: commit: %w", claimID, err)
	}
	return v, voucher.RedeemOK, nil
}
