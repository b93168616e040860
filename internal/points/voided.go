package points

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// A void after confirmation (DESIGN.md "Points: a void after confirmation"): riskctl
// revoke marks a settled claim revoked; for a points_item claim, whose points were
// already spent (a spend ledger row, its lots debited), the settler's holds pass gives
// the points back exactly once:
//
//  1. Postgres, one transaction under the user's lock: the lots the spend took from
//     (points_debits) get back what it took, except lots that expired since (those
//     points would have expired anyway); a give_back ledger row (UNIQUE per
//     reservation) of that amount, a points_given_back event, and the give-back's row
//     (points_give_backs, hot_done false). A repeat finds the row and writes nothing.
//  2. Redis, one script on the user's slot: the hot balance gets the amount back once
//     (done:<r> goes from spent to refunded); then hot_done. A crash between 1 and 2
//     leaves hot_done false and the next pass repeats 2; a Redis rebuilt from Postgres
//     meanwhile has the amount in its balance and the reservation marked refunded, so
//     step 2 adds nothing.
//
// A reservation marked refunded is not held again: a retry of the revoked request
// replays its accepted answer (claim.lua) and takes no points.

// errNotSpent: the revoked claim's spend is not in the ledger yet (the settler confirms
// it after the row commits, or the sweep does); the give-back waits for it.
var errNotSpent = errors.New("points: spend not confirmed yet")

// giveBackScript gives reservation ARGV[1]'s ARGV[2] points back to the hot balance once.
// Returns 1 given back now, 0 already (refunded, or the balance was rebuilt with it),
// -1 the spend's own hot step has not happened yet (done:<r> is not spent): later.
var giveBackScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return redis.error_reply('NOT_WARM') end
local d = redis.call('HGET', KEYS[1], 'done:' .. ARGV[1])
if d == 'refunded' then return 0 end
if d ~= 'spent' then return -1 end
redis.call('HINCRBY', KEYS[1], 'bal', tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'done:' .. ARGV[1], 'refunded')
return 1
`)

// GiveBackSpent gives back the points reservation r (a revoked claim claimID of user)
// spent, once; it returns the points given back by this call (0 when an earlier call
// did). It returns errNotSpent while the spend is not in the ledger.
func (s *Service) GiveBackSpent(ctx context.Context, user, r, claimID string) (int64, error) {
	amount, fresh, err := s.giveBackRecord(ctx, user, r, claimID)
	if err != nil {
		return 0, err
	}
	res, err := s.runWarm(ctx, giveBackScript, user, r, amount).Int64()
	if err != nil {
		return 0, fmt.Errorf("give back %s: recorded, hot balance not yet given back: %w", r, err)
	}
	if res < 0 {
		return 0, fmt.Errorf("give back %s: recorded, the spend's hot step is still pending: %w", r, errNotSpent)
	}
	if _, err := s.pg.Exec(ctx, `UPDATE points_give_backs SET hot_done = true WHERE source_id = $1`, r); err != nil {
		return 0, fmt.Errorf("give back %s: done, not yet marked (the next pass repeats it harmlessly): %w", r, err)
	}
	if !fresh {
		return 0, nil
	}
	return amount, nil
}

// giveBackRecord is step 1: it returns the give-back's amount and whether this call
// recorded it.
func (s *Service) giveBackRecord(ctx context.Context, user, r, claimID string) (int64, bool, error) {
	tx, err := s.pg.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("give back %s: %w", r, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, userLock, user); err != nil {
		return 0, false, fmt.Errorf("give back %s: %w", r, err)
	}
	var amount int64
	err = tx.QueryRow(ctx, `SELECT points FROM points_give_backs WHERE source_id = $1`, r).Scan(&amount)
	if err == nil {
		return amount, false, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("give back %s: %w", r, err)
	}
	var owner string
	switch err := tx.QueryRow(ctx, `SELECT user_id FROM points_ledger WHERE source_id = $1 AND kind = 'spend'`, r).Scan(&owner); {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, false, errNotSpent
	case err != nil:
		return 0, false, fmt.Errorf("give back %s: %w", r, err)
	case owner != user:
		return 0, false, fmt.Errorf("give back %s: spent by %s, not %s", r, owner, user)
	}
	// What the spend took from lots still alive (not expired, no expire row) goes back
	// to them; the rest had expired with its lot.
	if err := tx.QueryRow(ctx, `WITH back AS (
			UPDATE points_lots l SET remaining = l.remaining + d.taken
			FROM points_debits d
			WHERE d.source_id = $1 AND l.grant_id = d.grant_id AND l.expires_at > now()
			  AND NOT EXISTS (SELECT 1 FROM points_ledger e WHERE e.source_id = l.grant_id AND e.kind = 'expire')
			RETURNING d.taken)
		SELECT coalesce(sum(taken), 0) FROM back`, r).Scan(&amount); err != nil {
		return 0, false, fmt.Errorf("give back %s lots: %w", r, err)
	}
	if amount > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO points_ledger (user_id, kind, source_id, delta) VALUES ($1, 'give_back', $2, $3)`,
			user, r, amount); err != nil {
			return 0, false, fmt.Errorf("give back %s: %w", r, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO points_give_backs (source_id, user_id, claim_id, points) VALUES ($1, $2, $3, $4)`,
		r, user, claimID, amount); err != nil {
		return 0, false, fmt.Errorf("give back %s: %w", r, err)
	}
	if err := events.Emit(ctx, tx, events.PointsGivenBack, user, map[string]any{"user_id": user,
		"claim_id": claimID, "reservation": r, "points": amount, "reason": "revoked"}); err != nil {
		return 0, false, fmt.Errorf("give back %s: %w", r, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, fmt.Errorf("give back %s: %w", r, err)
	}
	return amount, true, nil
}

// GiveBackVoided is the holds pass's give-back step: every revoked points_item claim
// whose give-back is not done yet, up to limit. It returns the points given back.
func (h *Holds) GiveBackVoided(ctx context.Context, limit int) (int64, error) {
	rows, err := h.svc.pg.Query(ctx, `SELECT cl.claim_id, cl.campaign_id, cl.request_id, cl.user_id
		FROM claims cl JOIN campaigns c ON c.id = cl.campaign_id
		WHERE cl.revoked_at IS NOT NULL AND c.kind = 'points_item'
		  AND NOT EXISTS (SELECT 1 FROM points_give_backs g
		                  WHERE g.source_id = cl.campaign_id || ':' || cl.request_id AND g.hot_done)
		ORDER BY cl.revoked_at LIMIT $1`, limit)
	if err != nil {
		return 0, fmt.Errorf("points give-back: %w", err)
	}
	type voided struct{ claim, campaign, req, user string }
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (voided, error) {
		var v voided
		return v, r.Scan(&v.claim, &v.campaign, &v.req, &v.user)
	})
	if err != nil {
		return 0, fmt.Errorf("points give-back: %w", err)
	}
	var total int64
	for _, v := range vs {
		n, err := h.svc.GiveBackSpent(ctx, v.user, rkeys.PointsReservation(v.campaign, v.req), v.claim)
		switch {
		case errors.Is(err, errNotSpent):
			continue // its spend first; a later pass
		case err != nil:
			return total, err
		}
		total += n
		h.refunded.Add(float64(n))
	}
	return total, nil
}
