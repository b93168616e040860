package points

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// Expiry of points (DESIGN.md "Points": expiry), run by the settler. Every lot whose
// expires_at has passed with points left is expired, each user's lots soonest expiry
// first, one transaction per lot under the user's lock:
//
//  1. the hot balance first (user's slot, expireScript): the amount is what the lot has
//     left (a partial spend already took the rest); if the balance less what claims in
//     flight hold is below it, the lot waits for the next pass (a held claim's spend
//     takes its points from the oldest lot, this one, or its hold is given back within
//     the sweep's grace); else the amount is taken off "bal" and remembered in
//     x:<grant_id>, so a repeat takes nothing again and answers the same amount;
//  2. then, in the same transaction, the lot's remaining, an 'expire' ledger row
//     (UNIQUE (grant_id, 'expire')) and a points_expired event on flash.events.
//
// A crash between 1 and 2 leaves the x: mark: the next pass repeats 2 with the
// remembered amount. A rebuild of the hot balance (under the same lock) keeps the marks
// of the expiries in the ledger and drops the others, so the retry takes them again.

// expireScript takes lot ARGV[1]'s ARGV[2] points off the hot balance once; -1 when
// claims in flight hold some of them (the lot waits for the next pass).
var expireScript = redis.NewScript(runIDLua + `
if redis.call('HGET', KEYS[1], 'ok') ~= run then return redis.error_reply('NOT_WARM') end
local f = 'x:' .. ARGV[1]
local amount = tonumber(ARGV[2])
local done = redis.call('HGET', KEYS[1], f)
if done then
  -- An earlier attempt took done and its Postgres step did not commit; a spend has
  -- since taken points of this lot (its oldest): take exactly what is left instead.
  if tonumber(done) ~= amount then
    redis.call('HINCRBY', KEYS[1], 'bal', tonumber(done) - amount)
    redis.call('HSET', KEYS[1], f, amount)
  end
  return amount
end
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if bal - held < amount then return -1 end
redis.call('HINCRBY', KEYS[1], 'bal', -amount)
redis.call('HSET', KEYS[1], f, amount)
return amount
`)

// ExpireConfig configures the expiry loop.
type ExpireConfig struct {
	// Interval between passes (default 5s).
	Interval time.Duration
	// Batch is how many lots one pass expires at most (default 500).
	Batch int
	// Now is the clock (tests inject one); default time.Now.
	Now func() time.Time
	// Registerer takes the metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// Expirer expires lots past their expiry.
type Expirer struct {
	svc     *Service
	cfg     ExpireConfig
	log     *slog.Logger
	expired prometheus.Counter
}

// NewExpirer builds the expiry loop.
func NewExpirer(svc *Service, cfg ExpireConfig, log *slog.Logger) (*Expirer, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Batch == 0 {
		cfg.Batch = 500
	}
	if cfg.Interval < 10*time.Millisecond || cfg.Interval > time.Hour {
		return nil, fmt.Errorf("points expiry: interval %s, want 10ms..1h", cfg.Interval)
	}
	if cfg.Batch < 1 || cfg.Batch > 10_000 {
		return nil, fmt.Errorf("points expiry: batch %d, want 1..10000", cfg.Batch)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	x := &Expirer{svc: svc, cfg: cfg, log: log, expired: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flashgate_points_expired_total", Help: "Points expired (sum of the amounts taken off expired lots)."})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(x.expired); err != nil {
			return nil, fmt.Errorf("points expiry metrics: %w", err)
		}
	}
	return x, nil
}

// Once expires up to Batch due lots, oldest first; it returns the points expired.
func (x *Expirer) Once(ctx context.Context) (int64, error) {
	rows, err := x.svc.pg.Query(ctx, `SELECT l.grant_id, l.user_id FROM points_lots l
		WHERE l.remaining > 0 AND l.expires_at <= $1
		  AND NOT EXISTS (SELECT 1 FROM points_ledger e WHERE e.source_id = l.grant_id AND e.kind = 'expire')
		ORDER BY l.expires_at, l.grant_id LIMIT $2`, x.cfg.Now(), x.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("points expiry: %w", err)
	}
	type due struct{ grant, user string }
	lots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (due, error) {
		var d due
		return d, r.Scan(&d.grant, &d.user)
	})
	if err != nil {
		return 0, fmt.Errorf("points expiry: %w", err)
	}
	var total int64
	for _, d := range lots {
		n, err := x.expireLot(ctx, d.user, d.grant)
		if err != nil && strings.HasSuffix(err.Error(), "NOT_WARM") {
			if err = x.svc.Rebuild(ctx, d.user); err == nil {
				n, err = x.expireLot(ctx, d.user, d.grant)
			}
		}
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// expireLot expires one lot (the steps above); it returns the amount.
func (x *Expirer) expireLot(ctx context.Context, user, grant string) (int64, error) {
	tx, err := x.svc.pg.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, userLock, user); err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	var left int64
	var task string
	var expires time.Time
	var done bool
	if err := tx.QueryRow(ctx, `SELECT remaining, task_id, expires_at,
		EXISTS (SELECT 1 FROM points_ledger WHERE source_id = $1 AND kind = 'expire')
		FROM points_lots WHERE grant_id = $1 FOR UPDATE`, grant).Scan(&left, &task, &expires, &done); err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	if done || left == 0 {
		return 0, nil
	}
	amount, err := expireScript.Run(ctx, x.svc.rdb, []string{rkeys.Points(user)}, grant, left).Int64()
	if err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	if amount < 0 {
		return 0, nil // held by claims in flight: the next pass
	}
	if amount != left {
		return 0, fmt.Errorf("expire lot %s: the hot balance took %d, the lot has %d left", grant, amount, left)
	}
	if _, err := tx.Exec(ctx, `UPDATE points_lots SET remaining = 0 WHERE grant_id = $1`, grant); err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO points_ledger (user_id, kind, source_id, task_id, delta) VALUES ($1, 'expire', $2, $3, $4)`,
		user, grant, task, -amount); err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	if err := events.Emit(ctx, tx, events.PointsExpired, user, map[string]any{"user_id": user, "grant_id": grant,
		"task": task, "points": amount, "expires_at": expires.UTC().Format(time.RFC3339Nano)}); err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("expire lot %s: %w", grant, err)
	}
	x.expired.Add(float64(amount))
	return amount, nil
}

// Run expires due lots every Interval until ctx ends.
func (x *Expirer) Run(ctx context.Context) error {
	t := time.NewTicker(x.cfg.Interval)
	defer t.Stop()
	for {
		for {
			n, err := x.Once(ctx)
			if err != nil {
				x.log.Warn("points expiry pass failed", "err", err)
				break
			}
			if n > 0 {
				x.log.Info("points expired", "points", n)
			}
			if n == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
