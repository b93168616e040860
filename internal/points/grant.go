package points

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// GrantReq is the body of POST /v1/points/grants.
type GrantReq struct {
	UserID  string `json:"user_id"`
	Task    string `json:"task"`
	Amount  int64  `json:"amount"`
	GrantID string `json:"grant_id"`
}

// GrantResult is the answer to an accepted grant; a repeat of the same body gets the
// same one (Replayed set).
type GrantResult struct {
	GrantID   string    `json:"grant_id"`
	UserID    string    `json:"user_id"`
	Task      string    `json:"task"`
	Amount    int64     `json:"amount"`
	Day       string    `json:"day"`
	GrantedAt time.Time `json:"granted_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Replayed  bool      `json:"-"`
}

func (r *GrantReq) validate() error {
	switch {
	case !ValidID(r.UserID):
		return fieldErr("user_id", idRule)
	case !ValidID(r.Task):
		return fieldErr("task", idRule)
	case !ValidID(r.GrantID):
		return fieldErr("grant_id", idRule)
	case r.Amount < 1 || r.Amount > MaxAmount:
		return fieldErr("amount", "must be 1..%d, got %d", MaxAmount, r.Amount)
	}
	return nil
}

func (r *GrantReq) digest() []byte {
	d := sha256.Sum256([]byte(r.UserID + "\x00" + r.Task + "\x00" + strconv.FormatInt(r.Amount, 10)))
	return d[:]
}

// userLock serialises one user's grants (and, later, spends) in Postgres so the daily
// caps are counted against committed lots only.
const userLock = `SELECT pg_advisory_xact_lock(hashtextextended('points:' || $1, 0))`

// Grant records a grant from the source whose key is key, then applies it to the hot
// balance. Idempotent by grant_id. A Redis failure after the commit is ErrApply (with
// the result): the same request again applies it once.
func (s *Service) Grant(ctx context.Context, key []byte, in *GrantReq) (*GrantResult, error) {
	if len(key) == 0 {
		return nil, ErrUnauthorized
	}
	d := sha256.Sum256(key)
	var keyTask string
	err := s.pg.QueryRow(ctx, `SELECT id FROM points_tasks WHERE key_sha256 = $1`, d[:]).Scan(&keyTask)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, ErrUnauthorized
	case err != nil:
		return nil, fmt.Errorf("grant: %w", err)
	}
	if err := in.validate(); err != nil {
		return nil, err
	}
	if in.Task != keyTask {
		return nil, ErrForbidden
	}
	res, err := s.record(ctx, in)
	if err != nil {
		return nil, err
	}
	if err := s.apply(ctx, res.UserID, res.GrantID, res.Amount); err != nil {
		return res, fmt.Errorf("%w: %v", ErrApply, err)
	}
	return res, nil
}

func (s *Service) record(ctx context.Context, in *GrantReq) (*GrantResult, error) {
	tx, err := s.pg.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, userLock, in.UserID); err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	body := in.digest()
	res := &GrantResult{GrantID: in.GrantID}
	var have []byte
	err = tx.QueryRow(ctx, `SELECT user_id, task_id, amount, day::text, granted_at, expires_at, body_sha256
		FROM points_lots WHERE grant_id = $1`, in.GrantID).
		Scan(&res.UserID, &res.Task, &res.Amount, &res.Day, &res.GrantedAt, &res.ExpiresAt, &have)
	switch {
	case err == nil:
		if string(have) != string(body) {
			return nil, &Refusal{Code: "key_reuse", Msg: "grant_id " + in.GrantID + " was used for another grant"}
		}
		res.Replayed = true
		res.GrantedAt, res.ExpiresAt = res.GrantedAt.UTC(), res.ExpiresAt.UTC()
		return res, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("grant: %w", err)
	}
	t, err := scanTask(tx.QueryRow(ctx, `SELECT `+taskCols+` FROM points_tasks WHERE id = $1`, in.Task))
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	day := s.Day(now)
	if in.Amount > t.PerGrantMax {
		// Refused whole and counted for the risk team (once per grant_id).
		if _, err := tx.Exec(ctx, `INSERT INTO points_refusals (grant_id, task_id, user_id, amount, reason)
			VALUES ($1, $2, $3, $4, 'grant_ceiling') ON CONFLICT DO NOTHING`, in.GrantID, in.Task, in.UserID, in.Amount); err != nil {
			return nil, fmt.Errorf("grant: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return nil, fmt.Errorf("grant: %w", err)
		}
		s.refused.WithLabelValues("grant_ceiling").Inc()
		return nil, &Refusal{Code: "grant_ceiling", Msg: fmt.Sprintf("amount %d is above task %s's per_grant_max %d: refused whole",
			in.Amount, in.Task, t.PerGrantMax)}
	}
	var taskDay, allDay int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(sum(amount) FILTER (WHERE task_id = $3), 0), coalesce(sum(amount), 0)
		FROM points_lots WHERE user_id = $1 AND day = $2::date`, in.UserID, day, in.Task).Scan(&taskDay, &allDay); err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	if taskDay+in.Amount > t.PerUserDailyMax || allDay+in.Amount > s.cfg.DailyCap {
		s.refused.WithLabelValues("daily_cap").Inc()
		return nil, &Refusal{Code: "daily_cap", Msg: fmt.Sprintf("user %s has %d of task %s's %d and %d of the overall %d today (%s, %s)",
			in.UserID, taskDay, in.Task, t.PerUserDailyMax, allDay, s.cfg.DailyCap, day, s.cfg.Zone)}
	}
	res.UserID, res.Task, res.Amount, res.Day = in.UserID, in.Task, in.Amount, day
	res.GrantedAt = now.UTC().Truncate(time.Microsecond)
	res.ExpiresAt = res.GrantedAt.Add(t.lifetime)
	if _, err := tx.Exec(ctx, `INSERT INTO points_lots (grant_id, user_id, task_id, amount, remaining, body_sha256, day, granted_at, expires_at)
		VALUES ($1, $2, $3, $4, $4, $5, $6::date, $7, $8)`, in.GrantID, in.UserID, in.Task, in.Amount, body, day, res.GrantedAt, res.ExpiresAt); err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO points_ledger (user_id, kind, source_id, task_id, delta, at) VALUES ($1, 'grant', $2, $3, $4, $5)`,
		in.UserID, in.GrantID, in.Task, in.Amount, res.GrantedAt); err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	if err := events.Emit(ctx, tx, events.PointsGranted, in.UserID, res); err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	s.granted.Add(float64(in.Amount))
	return res, nil
}

// The hot balance is stamped with the run id of the Redis server that built it ("ok"):
// a hash restored from the AOF after a restart (which may have lost the last applies)
// is not trusted and is rebuilt from the ledger on its next use (DESIGN.md "Points").
const runIDLua = `local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
`

// applyScript adds a grant to the hot balance once (its g:<grant_id> field marks it).
// A hash not built on this Redis run is NOT_WARM: the caller rebuilds it and retries.
//
// The auto-freeze rule (ARGV[3] max points, ARGV[4] window ms, ARGV[5] shadow 0/1; max
// 0: off) is evaluated here, in the user's slot, once per grant (the first apply that
// logs it): its gains log (KEYS[2], a sorted set of "<grant_id>:<amount>" by Redis
// time) keeps the window;
// more than max gained in it -> 'enforced' (the hot frz flag is set at once: the next
// reservation is blocked) or 'shadow' (nothing set). The decision is remembered in
// af:<grant_id> until the caller recorded it in Postgres (ackFreeze), so a retried
// apply answers it again. Returns {balance, decision, gained}.
var applyScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return redis.error_reply('NOT_WARM') end
if redis.call('HSETNX', KEYS[1], 'g:' .. ARGV[1], 1) == 1 then
  redis.call('HINCRBY', KEYS[1], 'bal', ARGV[2])
end
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal'))
local af = redis.call('HGET', KEYS[1], 'af:' .. ARGV[1])
if af then
  return {bal, string.match(af, '^(%a+):'), tonumber(string.match(af, ':(%d+)$'))}
end
local decision, gained = '', 0
local max, win = tonumber(ARGV[3]), tonumber(ARGV[4])
if max > 0 and win > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - win)
  -- The log is its own once-guard: a grant whose balance a rebuild already included
  -- is still counted once, on its first apply.
  if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1] .. ':' .. ARGV[2]) == 1 then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now - win + 1, '+inf')) do
      gained = gained + tonumber(string.match(m, ':(%d+)$'))
    end
    if gained > max and redis.call('HGET', KEYS[1], 'frz') ~= '1' then
      if ARGV[5] == '1' then decision = 'shadow' else decision = 'enforced'; redis.call('HSET', KEYS[1], 'frz', '1') end
      redis.call('HSET', KEYS[1], 'af:' .. ARGV[1], decision .. ':' .. gained)
    end
  end
  redis.call('PEXPIRE', KEYS[2], win)
end
return {bal, decision, gained}
`)

// rebuildScript writes a user's hot balance from the record unless a rebuild on this
// run got there first. ARGV: balance, frozen (0/1), the number of grant ids n, the n
// grant ids already in the balance, the number of spent reservations m, the m
// reservation ids whose spend is in the ledger, the number of given-back reservations
// k, the k reservation ids whose give-back (a void after confirmation) is in the
// ledger, then the grant ids whose expiry is in the ledger (their x: marks are kept or
// set; any other x: mark - an expiry whose Postgres step did not commit - is dropped,
// so its retry takes it off again). Reservations (rsv:<r>) that survived in the hash
// stay held; every reservation spent in the ledger is marked done (held or not: a spend
// confirmed after its hold was given back must not be taken off the rebuilt balance a
// second time), and every one given back in the ledger is marked refunded (its hot
// step adds nothing to the rebuilt balance). First writer wins; a grant the winner did
// not include has no g: field, so its own apply adds it once.
var rebuildScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') == run then return 0 end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do redis.call('HSET', KEYS[1], 'g:' .. ARGV[i], 1) end
local a = 4 + n
local ns = tonumber(ARGV[a])
for i = a + 1, a + ns do
  redis.call('HDEL', KEYS[1], 'rsv:' .. ARGV[i], 'tk:' .. ARGV[i], 'at:' .. ARGV[i])
  redis.call('HSET', KEYS[1], 'done:' .. ARGV[i], 'spent')
end
local b = a + ns + 1
local nb = tonumber(ARGV[b])
for i = b + 1, b + nb do redis.call('HSET', KEYS[1], 'done:' .. ARGV[i], 'refunded') end
local expired = {}
for i = b + nb + 1, #ARGV do expired['x:' .. ARGV[i]] = true end
local held = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 4) == 'rsv:' then held = held + tonumber(all[i + 1]) end
  if string.sub(f, 1, 2) == 'x:' and not expired[f] then redis.call('HDEL', KEYS[1], f) end
end
for f in pairs(expired) do redis.call('HSETNX', KEYS[1], f, 0) end
redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'held', held, 'frz', ARGV[2], 'ok', run)
return 1
`)

// hotScript reads the hot balance if it was built on this run.
var hotScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return false end
return tonumber(redis.call('HGET', KEYS[1], 'bal')) - tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
`)

func (s *Service) apply(ctx context.Context, user, grantID string, amount int64) error {
	if s.rdb == nil {
		return errors.New("no Redis")
	}
	rule, err := s.freezeRule(ctx)
	if err != nil {
		return err
	}
	keys := []string{rkeys.Points(user), rkeys.PointsGains(user)}
	args := []any{grantID, amount, rule.max, rule.window.Milliseconds(), rule.shadow}
	res, err := applyScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil && strings.HasSuffix(err.Error(), "NOT_WARM") {
		if err = s.Rebuild(ctx, user); err == nil {
			res, err = applyScript.Run(ctx, s.rdb, keys, args...).Slice()
		}
	}
	if err != nil {
		return err
	}
	if len(res) == 3 {
		if decision, _ := res[1].(string); decision != "" {
			gained, _ := res[2].(int64)
			return s.autoFreeze(ctx, user, grantID, decision, gained, rule)
		}
	}
	return nil
}

// Rebuild writes user's hot balance from Postgres (balance = ledger sum; reservations
// still held in Redis stay held) if it was not built on this Redis run: on first use
// and after a Redis loss (DESIGN.md "Points"). Idempotent.
func (s *Service) Rebuild(ctx context.Context, user string) error {
	var bal int64
	var frozen bool
	// Under the user's lock (grants, spends and expiries take it too), read committed:
	// nothing of this user changes while it reads and writes, so its statements agree.
	tx, err := s.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("points rebuild %s: %w", user, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, userLock, user); err != nil {
		return fmt.Errorf("points rebuild %s: %w", user, err)
	}
	if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT sum(delta) FROM points_ledger WHERE user_id = $1), 0),
		coalesce((SELECT frozen FROM points_accounts WHERE user_id = $1), false)`, user).Scan(&bal, &frozen); err != nil {
		return fmt.Errorf("points rebuild %s: %w", user, err)
	}
	collect := func(q string) ([]string, error) {
		rows, err := tx.Query(ctx, q, user)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	grants, err := collect(`SELECT grant_id FROM points_lots WHERE user_id = $1`)
	if err != nil {
		return fmt.Errorf("points rebuild %s: %w", user, err)
	}
	spent, err := collect(`SELECT source_id FROM points_ledger WHERE user_id = $1 AND kind = 'spend'`)
	if err != nil {
		return fmt.Errorf("points rebuild %s: %w", user, err)
	}
	// A give-back is in the balance (the ledger) once its row is: its reservation is
	// marked refunded, so the give-back's hot step, re-driven, adds nothing twice.
	back, err := collect(`SELECT source_id FROM points_ledger WHERE user_id = $1 AND kind = 'give_back'`)
	if err != nil {
		return fmt.Errorf("points rebuild %s: %w", user, err)
	}
	expired, err := collect(`SELECT source_id FROM points_ledger WHERE user_id = $1 AND kind = 'expire'`)
	if err != nil {
		return fmt.Errorf("points rebuild %s: %w", user, err)
	}
	fz := 0
	if frozen {
		fz = 1
	}
	args := make([]any, 0, 5+len(grants)+len(spent)+len(back)+len(expired))
	args = append(args, bal, fz, len(grants))
	for _, g := range grants {
		args = append(args, g)
	}
	args = append(args, len(spent))
	for _, r := range spent {
		args = append(args, r)
	}
	args = append(args, len(back))
	for _, r := range back {
		args = append(args, r)
	}
	for _, g := range expired {
		args = append(args, g)
	}
	return rebuildScript.Run(ctx, s.rdb, []string{rkeys.Points(user)}, args...).Err()
}

// HotBalance reads the user's spendable balance in Redis (balance less held
// reservations; ok false: not built on this Redis run).
func (s *Service) HotBalance(ctx context.Context, user string) (int64, bool, error) {
	n, err := hotScript.Run(ctx, s.rdb, []string{rkeys.Points(user)}).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	return n, err == nil, err
}

// Lot is points of one grant not yet spent or expired.
type Lot struct {
	GrantID   string    `json:"grant_id"`
	Task      string    `json:"task"`
	Remaining int64     `json:"remaining"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Account is GET /v1/me/points.
type Account struct {
	UserID  string `json:"user_id"`
	Balance int64  `json:"balance"`
	Frozen  bool   `json:"frozen"`
	Reason  string `json:"reason,omitempty"`
	// Expiring: the lots with points left, soonest expiry first.
	Expiring []Lot `json:"expiring"`
}

// Account reads a user's account from the record.
func (s *Service) Account(ctx context.Context, user string) (*Account, error) {
	if !ValidID(user) {
		return nil, fieldErr("user_id", idRule)
	}
	a := &Account{UserID: user, Expiring: []Lot{}}
	err := s.pg.QueryRow(ctx, `SELECT coalesce((SELECT sum(delta) FROM points_ledger WHERE user_id = $1), 0),
		coalesce((SELECT frozen FROM points_accounts WHERE user_id = $1), false),
		coalesce((SELECT reason FROM points_accounts WHERE user_id = $1), '')`, user).Scan(&a.Balance, &a.Frozen, &a.Reason)
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", user, err)
	}
	rows, err := s.pg.Query(ctx, `SELECT grant_id, task_id, remaining, expires_at FROM points_lots
		WHERE user_id = $1 AND remaining > 0 ORDER BY expires_at, grant_id LIMIT 1000`, user)
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", user, err)
	}
	lots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Lot, error) {
		var l Lot
		err := r.Scan(&l.GrantID, &l.Task, &l.Remaining, &l.ExpiresAt)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", user, err)
	}
	a.Expiring = append(a.Expiring, lots...)
	return a, nil
}
