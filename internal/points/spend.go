package points

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/risk/audit"
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

// Audit actions of a freeze (0010's CHECK).
const (
	ActionFreeze   = "points.freeze"
	ActionUnfreeze = "points.unfreeze"
)

// SetFrozen freezes or unfreezes a user's account: the record, its audit row (actor)
// and a points_frozen/points_unfrozen event in one transaction, then the hot copy the
// reserve script reads (one HSET: an unbuilt hash is NOT_WARM and reads the record when
// it is built). A frozen account's reservations answer blocked. It returns the audit
// row's id.
func (s *Service) SetFrozen(ctx context.Context, user string, frozen bool, reason, actor string) (int64, error) {
	if !ValidID(user) {
		return 0, fieldErr("user_id", idRule)
	}
	if strings.TrimSpace(reason) == "" || len(reason) > 500 {
		return 0, fieldErr("reason", "required, at most 500 characters")
	}
	tx, err := s.pg.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, userLock, user); err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	var was bool
	var wasReason string
	err = tx.QueryRow(ctx, `SELECT frozen, reason FROM points_accounts WHERE user_id = $1`, user).Scan(&was, &wasReason)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO points_accounts (user_id, frozen, reason) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET frozen = $2, reason = $3, updated_at = now()`, user, frozen, reason); err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	typ, action := events.PointsFrozen, ActionFreeze
	if !frozen {
		typ, action = events.PointsUnfrozen, ActionUnfreeze
	}
	if err := events.Emit(ctx, tx, typ, user, map[string]any{"user_id": user, "reason": reason, "actor": actor}); err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	row, err := audit.Record(ctx, tx, actor, action, "points:"+user,
		audit.State{"frozen": strconv.FormatBool(was), "reason": wasReason},
		audit.State{"frozen": strconv.FormatBool(frozen), "reason": reason}, reason)
	if err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	fz := "0"
	if frozen {
		fz = "1"
	}
	if err := s.rdb.HSet(ctx, rkeys.Points(user), "frz", fz).Err(); err != nil {
		return row.ID, fmt.Errorf("freeze %s: recorded (audit #%d), Redis not updated (repeat it): %w", user, row.ID, err)
	}
	return row.ID, nil
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
