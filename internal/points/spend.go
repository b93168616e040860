package points

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

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
// The claimer's points step (gateway/claimer/points.go) reserves and gives back; the
// settler confirms (Spend) and sweeps orphaned holds (sweep.go).

// Reserve outcomes.
const (
	Reserved     = "reserved"
	Insufficient = "insufficient_points"
	Blocked      = "blocked"
	// AlreadySpent: r's claim was accepted and its spend confirmed before (a retry of
	// an accepted request: claim.lua replays it).
	AlreadySpent = "spent"
	// AlreadyGivenBack is what a finished, given-back reservation is marked with. A
	// later Reserve of the same r holds anew: the claim it was for was rejected or
	// voided, and claim.lua decides a retry of a voided request anew.
	AlreadyGivenBack = "back"
)

// ErrUncovered: a claim was accepted whose points are no longer there to take (its hold
// was given back by a race DESIGN.md "Points: the cross-slot step" describes, and the
// points were spent since). Nothing was written; the caller counts it for the risk team.
var ErrUncovered = errors.New("points: an accepted claim's points are not covered by the user's lots")

// reserveScript holds ARGV[2] points for reservation ARGV[1] on behalf of attempt
// ARGV[3] (a token unique per attempt). A reservation already held is shared: the
// attempt re-stamps it (tk: the latest attempt, at: its Redis time), so only the latest
// attempt's give-back releases it, and the sweep only one whose last attempt is old.
var reserveScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return redis.error_reply('NOT_WARM') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HEXISTS', KEYS[1], 'rsv:' .. ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'tk:' .. ARGV[1], ARGV[3], 'at:' .. ARGV[1], now)
  return 'reserved'
end
local done = redis.call('HGET', KEYS[1], 'done:' .. ARGV[1])
if done == 'spent' or done == 'refunded' then return 'spent' end
if redis.call('HGET', KEYS[1], 'frz') == '1' then return 'blocked' end
local price = tonumber(ARGV[2])
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if bal - held < price then return 'insufficient_points' end
if done then redis.call('HDEL', KEYS[1], 'done:' .. ARGV[1]) end
redis.call('HINCRBY', KEYS[1], 'held', price)
redis.call('HSET', KEYS[1], 'rsv:' .. ARGV[1], price, 'tk:' .. ARGV[1], ARGV[3], 'at:' .. ARGV[1], now)
return 'reserved'
`)

// finishScript ends reservation ARGV[1]. ARGV[2] 'back' releases it: only if ARGV[3]
// is its latest attempt's token, or (ARGV[3] = ”) if its latest attempt is at least
// ARGV[4] ms old by the Redis clock (the sweep). 'spent' takes the price ARGV[5] off the
// balance: the hold's, or - the spend is in the ledger but the hold was given back - the
// price itself, once (done:<r> = spent). Returns 1 ended now, 2 spent without a hold, 0
// nothing to do (already ended, not held, or not this attempt's / too recent).
var finishScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return redis.error_reply('NOT_WARM') end
local r = ARGV[1]
local price = redis.call('HGET', KEYS[1], 'rsv:' .. r)
if not price then
  local d = redis.call('HGET', KEYS[1], 'done:' .. r)
  if ARGV[2] == 'spent' and d ~= 'spent' and d ~= 'refunded' then
    redis.call('HINCRBY', KEYS[1], 'bal', -tonumber(ARGV[5]))
    redis.call('HSET', KEYS[1], 'done:' .. r, 'spent')
    return 2
  end
  return 0
end
if ARGV[2] == 'back' then
  if ARGV[3] ~= '' then
    if redis.call('HGET', KEYS[1], 'tk:' .. r) ~= ARGV[3] then return 0 end
  else
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local at = tonumber(redis.call('HGET', KEYS[1], 'at:' .. r) or '0')
    if now - at < tonumber(ARGV[4]) then return 0 end
  end
end
redis.call('HDEL', KEYS[1], 'rsv:' .. r, 'tk:' .. r, 'at:' .. r)
redis.call('HINCRBY', KEYS[1], 'held', -tonumber(price))
if ARGV[2] == 'spent' then redis.call('HINCRBY', KEYS[1], 'bal', -tonumber(price)) end
redis.call('HSET', KEYS[1], 'done:' .. r, ARGV[2])
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

// Reserve holds price points of user for reservation r on behalf of attempt token (one
// script call, user's slot). A reservation already held is shared by the attempt (and
// re-stamped with its token); a given-back one is held anew.
func (s *Service) Reserve(ctx context.Context, user, r, token string, price int64) (string, error) {
	if price < 1 || price > MaxAmount {
		return "", fieldErr("points", "must be 1..%d, got %d", MaxAmount, price)
	}
	if token == "" {
		return "", fieldErr("token", "required")
	}
	return s.runWarm(ctx, reserveScript, user, r, price, token).Text()
}

// GiveBack releases reservation r if attempt token is its latest (the claim was
// rejected, or voided). True if it was held and is released now; false if not held
// (already ended, or never) or a later attempt shares it (that attempt decides).
func (s *Service) GiveBack(ctx context.Context, user, r, token string) (bool, error) {
	if token == "" {
		return false, fieldErr("token", "required")
	}
	n, err := s.runWarm(ctx, finishScript, user, r, AlreadyGivenBack, token, 0, 0).Int()
	return n == 1, err
}

// SweepGiveBack releases reservation r if its latest attempt is at least grace old by
// the Redis clock (the settler's sweep of orphaned holds). True if released now.
func (s *Service) SweepGiveBack(ctx context.Context, user, r string, grace time.Duration) (bool, error) {
	n, err := s.runWarm(ctx, finishScript, user, r, AlreadyGivenBack, "", grace.Milliseconds(), 0).Int()
	return n == 1, err
}

// Held reports whether reservation r of user is held (for tests and the sweep's logs).
func (s *Service) Held(ctx context.Context, user, r string) (bool, error) {
	return s.rdb.HExists(ctx, rkeys.Points(user), "rsv:"+r).Result()
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
		left, err := debitOldest(ctx, tx, user, r, price)
		if err != nil {
			return fmt.Errorf("spend %s lots: %w", r, err)
		}
		if left != 0 {
			return fmt.Errorf("spend %s: lots of %s short by %d points: %w", r, user, left, ErrUncovered)
		}
		if err := events.Emit(ctx, tx, events.PointsSpent, user, map[string]any{"user_id": user,
			"claim_id": claimID, "reservation": r, "points": price}); err != nil {
			return fmt.Errorf("spend %s: %w", r, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("spend %s: %w", r, err)
	}
	if err := s.runWarm(ctx, finishScript, user, r, AlreadySpent, "", 0, price).Err(); err != nil {
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
	id, err := setFrozenTx(ctx, tx, user, frozen, reason, actor)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	fz := "0"
	if frozen {
		fz = "1"
	}
	if err := s.rdb.HSet(ctx, rkeys.Points(user), "frz", fz).Err(); err != nil {
		return id, fmt.Errorf("freeze %s: recorded (audit #%d), Redis not updated (repeat it): %w", user, id, err)
	}
	return id, nil
}

// setFrozenTx writes a freeze or unfreeze in tx: the account row, its audit row (actor)
// and a points_frozen/points_unfrozen event, under the user's lock. It returns the
// audit row's id.
func setFrozenTx(ctx context.Context, tx pgx.Tx, user string, frozen bool, reason, actor string) (int64, error) {
	if _, err := tx.Exec(ctx, userLock, user); err != nil {
		return 0, fmt.Errorf("freeze %s: %w", user, err)
	}
	var was bool
	var wasReason string
	err := tx.QueryRow(ctx, `SELECT frozen, reason FROM points_accounts WHERE user_id = $1`, user).Scan(&was, &wasReason)
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
	return row.ID, nil
}

// debitOldest takes price points off user's lots, soonest expiry first, and remembers
// what it took from each for reservation r (points_debits: a void after confirmation
// puts them back there); it returns what the lots could not cover (0 when the ledger and
// the lots agree).
func debitOldest(ctx context.Context, tx pgx.Tx, user, r string, price int64) (int64, error) {
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
		if _, err := tx.Exec(ctx, `INSERT INTO points_debits (source_id, grant_id, taken) VALUES ($1, $2, $3)`, r, l.id, take); err != nil {
			return price, err
		}
		price -= take
	}
	return price, nil
}
