package points

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// The user's-slot half of a points_item claim (DESIGN.md "Points: the cross-slot
// step"). A reservation r is "<campaign>:<request_id>": Reserve holds the price,
// GiveBack releases it (the claim was rejected, voided, or never made), Spend confirms
// it (the claim is in Postgres: a spend ledger row, lots debited oldest first). Each is
// one script call on the user's slot and idempotent by r; a finished r is remembered
// (done:<r>), so a late or repeated call changes nothing.
//
// NOT wired into the claim handler on this branch: the hook in gateway/api, the
// points_item kind in the catalog and the settler's confirm loop are still to do.

// Reserve outcomes.
const (
	Reserved     = "reserved"
	Insufficient = "insufficient_points"
	Blocked      = "blocked"
	// AlreadySpent / AlreadyGivenBack: r was finished before (a retry after the end).
	AlreadySpent     = "spent"
	AlreadyGivenBack = "back"
)

var reserveScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return redis.error_reply('NOT_WARM') end
if redis.call('HEXISTS', KEYS[1], 'rsv:' .. ARGV[1]) == 1 then return 'reserved' end
local done = redis.call('HGET', KEYS[1], 'done:' .. ARGV[1])
if done then return done end
if redis.call('HGET', KEYS[1], 'frz') == '1' then return 'blocked' end
local price = tonumber(ARGV[2])
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if bal - held < price then return 'insufficient_points' end
redis.call('HINCRBY', KEYS[1], 'held', price)
redis.call('HSET', KEYS[1], 'rsv:' .. ARGV[1], price)
return 'reserved'
`)

// finishScript ends reservation ARGV[1]: ARGV[2] 'back' releases it, 'spent' also takes
// the price off the balance. Returns 1 if it ended it now, 0 if it was not held.
var finishScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return redis.error_reply('NOT_WARM') end
local price = redis.call('HGET', KEYS[1], 'rsv:' .. ARGV[1])
if not price then return 0 end
redis.call('HDEL', KEYS[1], 'rsv:' .. ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held', -tonumber(price))
if ARGV[2] == 'spent' then redis.call('HINCRBY', KEYS[1], 'bal', -tonumber(price)) end
redis.call('HSET', KEYS[1], 'done:' .. ARGV[1], ARGV[2])
return 1
`)

func (s *Service) runWarm(ctx context.Context, script *redis.Script, user string, args ...any) *redis.Cmd {
	key := []string{rkeys.Points(user)}
	cmd := script.Run(ctx, s.rdb, key, args...)
	if err := cmd.Err(); err != nil && strings.HasSuffix(err.Error(), "NOT_WARM") {
		if err := s.Rebuild(ctx, user); err != nil {
			c := redis.NewCmd(ctx)
			c.SetErr(err)
			return c
		}
		cmd = script.Run(ctx, s.rdb, key, args...)
	}
	return cmd
}

// Reserve holds price points of user for reservation r (one script call, user's slot).
func (s *Service) Reserve(ctx context.Context, user, r string, price int64) (string, error) {
	if price < 1 || price > MaxAmount {
		return "", fieldErr("points", "must be 1..%d, got %d", MaxAmount, price)
	}
	return s.runWarm(ctx, reserveScript, user, r, price).Text()
}

// GiveBack releases reservation r (the claim was rejected, or never made). True if it
// was held and is released now; false if it was not held (already ended, or never).
func (s *Service) GiveBack(ctx context.Context, user, r string) (bool, error) {
	n, err := s.runWarm(ctx, finishScript, user, r, AlreadyGivenBack).Int()
	return n == 1, err
}

// Spend confirms reservation r once its claim claimID is in Postgres: the spend ledger
// row (once per claim), the lots debited oldest expiry first, a points_spent event, then
// the hot balance. Idempotent: a repeat writes nothing and confirms nothing twice.
func (s *Service) Spend(ctx context.Context, user, r, claimID string, price int64) error {
	tx, err := s.pg.Begin(ctx)
	if err != nil {
		return fmt.Errorf("spend %s: %w", r, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, userLock, user); err != nil {
		return fmt.Errorf("spend %s: %w", r, err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO points_ledger (user_id, kind, source_id, delta) VALUES ($1, 'spend', $2, $3)
		ON CONFLICT (source_id, kind) DO NOTHING`, user, r, -price)
	if err != nil {
		return fmt.Errorf("spend %s: %w", r, err)
	}
	if tag.RowsAffected() == 0 {
		var owner string
		if err := tx.QueryRow(ctx, `SELECT user_id FROM points_ledger WHERE source_id = $1 AND kind = 'spend'`, r).Scan(&owner); err != nil {
			return fmt.Errorf("spend %s: %w", r, err)
		}
		if owner != user {
			return fmt.Errorf("spend %s: reservation id already spent by another user (%s)", r, owner)
		}
	}
	if tag.RowsAffected() == 1 {
		left, err := debitOldest(ctx, tx, user, price)
		if err != nil {
			return fmt.Errorf("spend %s lots: %w", r, err)
		}
		if left != 0 {
			return fmt.Errorf("spend %s: lots of %s short by %d points (ledger and lots disagree)", r, user, left)
		}
		if err := events.Emit(ctx, tx, events.PointsSpent, user, map[string]any{"user_id": user,
			"claim_id": claimID, "reservation": r, "points": price}); err != nil {
			return fmt.Errorf("spend %s: %w", r, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("spend %s: %w", r, err)
	}
	if err := s.runWarm(ctx, finishScript, user, r, AlreadySpent).Err(); err != nil {
		return fmt.Errorf("spend %s: recorded, hot balance not yet confirmed: %w", r, err)
	}
	return nil
}

// SetFrozen freezes or unfreezes a user's account (the record, then the hot copy the
// reserve script reads). A frozen account's reservations answer blocked.
func (s *Service) SetFrozen(ctx context.Context, user string, frozen bool, reason string) error {
	if !ValidID(user) {
		return fieldErr("user_id", idRule)
	}
	if len(reason) > 500 {
		return fieldErr("reason", "at most 500 characters")
	}
	tx, err := s.pg.Begin(ctx)
	if err != nil {
		return fmt.Errorf("freeze %s: %w", user, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO points_accounts (user_id, frozen, reason) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET frozen = $2, reason = $3, updated_at = now()`, user, frozen, reason); err != nil {
		return fmt.Errorf("freeze %s: %w", user, err)
	}
	typ := events.PointsFrozen
	if !frozen {
		typ = events.PointsUnfrozen
	}
	if err := events.Emit(ctx, tx, typ, user, map[string]any{"user_id": user, "reason": reason}); err != nil {
		return fmt.Errorf("freeze %s: %w", user, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("freeze %s: %w", user, err)
	}
	fz := "0"
	if frozen {
		fz = "1"
	}
	// Only a built hash is updated; an unbuilt one reads the record when it is built.
	err = s.rdb.Eval(ctx, runIDLua+`if redis.call('HGET', KEYS[1], 'ok') == run then redis.call('HSET', KEYS[1], 'frz', ARGV[1]) end return 1`,
		[]string{rkeys.Points(user)}, fz).Err()
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("freeze %s: recorded, Redis not updated (repeat it): %w", user, err)
	}
	return nil
}

// debitOldest takes price points off user's lots, soonest expiry first; it returns what
// the lots could not cover (0 when the ledger and the lots agree).
func debitOldest(ctx context.Context, tx pgx.Tx, user string, price int64) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT grant_id, remaining FROM points_lots WHERE user_id = $1 AND remaining > 0
		ORDER BY expires_at, grant_id FOR UPDATE`, user)
	if err != nil {
		return price, err
	}
	type lot struct {
		id   string
		left int64
	}
	lots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (lot, error) {
		var l lot
		return l, r.Scan(&l.id, &l.left)
	})
	if err != nil {
		return price, err
	}
	for _, l := range lots {
		if price == 0 {
			break
		}
		take := min(l.left, price)
		if _, err := tx.Exec(ctx, `UPDATE points_lots SET remaining = remaining - $2 WHERE grant_id = $1`, l.id, take); err != nil {
			return price, err
		}
		price -= take
	}
	return price, nil
}
