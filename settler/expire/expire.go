// Package expire owns the end of an unused voucher's life: a claim past its expires_at
// and not redeemed becomes "expired", and its face value goes back to the campaign's and
// the business line's budgets (budget recovery) - exactly once, however many settlers
// run an Expirer - and, when the campaign has recycle_stock, its unit goes back on sale.
//
// One pass, per batch of claims:
//
//  1. BEGIN; lock a batch of settled claims with expires_at <= now() (Postgres' clock,
//     the one the gateway's redeem judges expiry by) FOR UPDATE SKIP LOCKED: two
//     expirers take disjoint batches, and a redeem of a locked claim waits for the
//     outcome (and then refuses it: vouchers.Redeem checks the state and expires_at);
//  2. release.lua per campaign: give each claim's value back in Redis unless the claim
//     is already in the campaign's released set (the once-only guard);
//  3. mark the claims expired and insert their "release" ledger rows (UNIQUE
//     (claim_id, kind)); COMMIT.
//
// Crash between 2 and 3: the transaction rolls back and the claims are picked again by
// the next pass; release.lua finds them in the released set and gives nothing twice, and
// step 3 commits. A lost reply from step 2 is the same case. Redis first, Postgres
// second, so that the books never show money recovered that Redis has not given back.
package expire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/loop"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// Config tunes an Expirer. Zero values get the defaults; invalid values are errors
// naming the field.
type Config struct {
	// Interval is the period of Run.
	Interval time.Duration
	// Batch is how many claims one transaction expires.
	Batch int
	// MaxBatches bounds the batches of one pass, so a backlog cannot hold a pass forever.
	MaxBatches int
	// RedisTimeout bounds one release.lua call.
	RedisTimeout time.Duration
	// Campaigns, when set, limits expiry to these campaigns (an operator expiring one
	// campaign by hand, or a test on a shared database). Empty: every campaign.
	Campaigns []string
}

func (c *Config) validate() error {
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.Batch == 0 {
		c.Batch = 500
	}
	if c.MaxBatches == 0 {
		c.MaxBatches = 100
	}
	if c.RedisTimeout == 0 {
		c.RedisTimeout = 2 * time.Second
	}
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("expire config: Interval=%s, want at least 10ms", c.Interval)
	case c.Batch < 1 || c.Batch > 5000:
		return fmt.Errorf("expire config: Batch=%d, want 1..5000", c.Batch)
	case c.MaxBatches < 1:
		return fmt.Errorf("expire config: MaxBatches=%d, want at least 1", c.MaxBatches)
	case c.RedisTimeout < time.Millisecond:
		return fmt.Errorf("expire config: RedisTimeout=%s, want at least 1ms", c.RedisTimeout)
	}
	return nil
}

// Expirer expires vouchers. Safe for concurrent use, and safe to run in several
// processes at once.
type Expirer struct {
	cfg Config
	rdb *redis.Client
	pg  *pgxpool.Pool
	log *slog.Logger
	m   *metrics
}

// New builds an Expirer.
func New(cfg Config, rdb *redis.Client, pg *pgxpool.Pool, log *slog.Logger, reg prometheus.Registerer) (*Expirer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil || pg == nil {
		return nil, errors.New("expire: a Redis client and a Postgres pool are required")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Expirer{cfg: cfg, rdb: rdb, pg: pg, log: log, m: newMetrics(reg)}, nil
}

// Stats is what a pass did.
type Stats struct {
	Expired   int   `json:"expired"`   // claims turned expired
	Recovered int64 `json:"recovered"` // value given back to budgets
	Recycled  int   `json:"recycled"`  // units put back on sale
	// Fenced counts claims left for later because their campaign is being rebuilt after
	// a Redis loss (or its keys are gone until it is).
	Fenced int `json:"fenced"`
}

// Run expires every Interval until ctx ends. Errors are logged and counted (loop.Every); it
// returns nil when ctx ends.
func (x *Expirer) Run(ctx context.Context) error {
	return loop.Every(ctx, x.cfg.Interval, func(ctx context.Context) (bool, error) {
		st, err := x.Once(ctx)
		if err == nil && st.Expired > 0 {
			x.log.Info("vouchers expired", "expired", st.Expired, "recovered", st.Recovered, "recycled", st.Recycled)
		}
		return false, err
	}, func(err error) { x.log.Warn("voucher expiry pass failed", "err", err) })
}

// Once expires due vouchers, a batch per transaction, until none is left (or
// MaxBatches).
func (x *Expirer) Once(ctx context.Context) (Stats, error) {
	var total Stats
	// Campaigns found fenced are left out of the rest of the pass: the oldest due
	// vouchers come first, and a fenced campaign's must not starve everyone else's.
	skip := []string{}
	for i := 0; i < x.cfg.MaxBatches; i++ {
		st, picked, fenced, err := x.batch(ctx, skip)
		total.Expired += st.Expired
		total.Recovered += st.Recovered
		total.Recycled += st.Recycled
		total.Fenced += st.Fenced
		if err != nil {
			x.m.errors.Inc()
			return total, err
		}
		skip = append(skip, fenced...)
		// A short batch means nothing more is due.
		if picked < x.cfg.Batch {
			break
		}
	}
	return total, nil
}

type due struct {
	claimID, campaign, bl, sku string
	value                      int64
	recycle                    bool
}

func (x *Expirer) batch(ctx context.Context, skip []string) (st Stats, picked int, fenced []string, err error) {
	tx, err := x.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return st, 0, nil, fmt.Errorf("expire: begin: %w", err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	only := x.cfg.Campaigns
	if only == nil {
		only = []string{}
	}
	rows, err := tx.Query(ctx, `SELECT cl.claim_id, cl.campaign_id, cl.business_line, cl.sku, cl.value, c.recycle_stock
		FROM claims cl JOIN campaigns c ON c.id = cl.campaign_id
		WHERE cl.state = 'settled' AND cl.expires_at <= now()
		  AND cl.campaign_id <> ALL($2) AND (cardinality($3::text[]) = 0 OR cl.campaign_id = ANY($3))
		ORDER BY cl.expires_at
		LIMIT $1
		FOR UPDATE OF cl SKIP LOCKED`, x.cfg.Batch, skip, only)
	if err != nil {
		return st, 0, nil, fmt.Errorf("expire: select due claims: %w", err)
	}
	var all []due
	byCampaign := map[string][]int{}
	var order []string
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.claimID, &d.campaign, &d.bl, &d.sku, &d.value, &d.recycle); err != nil {
			rows.Close()
			return st, 0, nil, fmt.Errorf("expire: select due claims: %w", err)
		}
		if _, ok := byCampaign[d.campaign]; !ok {
			order = append(order, d.campaign)
		}
		byCampaign[d.campaign] = append(byCampaign[d.campaign], len(all))
		all = append(all, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, 0, nil, fmt.Errorf("expire: select due claims: %w", err)
	}
	if len(all) == 0 {
		return st, 0, nil, nil
	}

	var ids []string
	for _, camp := range order {
		idx := byCampaign[camp]
		first := all[idx[0]]
		keys := []string{rkeys.Meta(camp), rkeys.BusinessLine(first.bl), recovery.Released(camp)}
		recycle := "0"
		if first.recycle {
			recycle = "1"
		}
		args := []any{recycle}
		for _, i := range idx {
			keys = append(keys, rkeys.SKU(camp, all[i].sku))
			args = append(args, all[i].claimID, all[i].value)
		}
		rctx, cancel := context.WithTimeout(ctx, x.cfg.RedisTimeout)
		res, err := scripts.Release.Run(rctx, x.rdb, keys, args...).Result()
		cancel()
		if err != nil {
			// Nothing is committed for this batch; whatever release.lua did is remembered
			// in the released set, so the retry gives nothing twice.
			return st, len(all), fenced, fmt.Errorf("expire: release in campaign %s: %w", camp, err)
		}
		switch v := res.(type) {
		case int64:
			// Fenced (being rebuilt) or stale: leave these claims for a later pass.
			st.Fenced += len(idx)
			fenced = append(fenced, camp)
			x.m.fenced.Add(float64(len(idx)))
			if v == scripts.ReleaseStale {
				x.log.Warn("expire: business line key does not match the campaign's", "campaign", camp)
			}
			continue
		case []any:
			for k, i := range idx {
				ids = append(ids, all[i].claimID)
				if n, _ := v[k].(int64); n == 1 {
					st.Recovered += all[i].value
					if all[i].recycle {
						st.Recycled++
					}
				}
			}
		default:
			return st, len(all), fenced, fmt.Errorf("expire: release in campaign %s: unexpected answer %T", camp, res)
		}
	}
	if len(ids) == 0 {
		return st, len(all), fenced, nil
	}
	n, err := markExpired(ctx, tx, ids)
	if err != nil {
		return st, len(all), fenced, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO budget_ledger (claim_id, campaign_id, business_line, kind, amount)
		SELECT claim_id, campaign_id, business_line, 'release', value FROM claims WHERE claim_id = ANY($1)
		ON CONFLICT (claim_id, kind) DO NOTHING`, ids); err != nil {
		return st, len(all), fenced, fmt.Errorf("expire: ledger release: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return st, len(all), fenced, fmt.Errorf("expire: commit: %w", err)
	}
	st.Expired = n
	x.m.expired.Add(float64(st.Expired))
	x.m.recovered.Add(float64(st.Recovered))
	x.m.recycled.Add(float64(st.Recycled))
	return st, len(all), fenced, nil
}

type metrics struct {
	expired, recovered, recycled, fenced, errors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_expire_vouchers_total",
			Help: "Vouchers expired unused (claims turned expired, with a release ledger row)."}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_expire_recovered_value_total",
			Help: "Face value given back to campaign and business-line budgets by expiry (budget recovery)."}),
		recycled: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_expire_recycled_units_total",
			Help: "Units put back on sale by expiry (campaigns with recycle_stock)."}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_expire_fenced_total",
			Help: "Due vouchers left for a later pass because their campaign was being rebuilt after a Redis loss."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_expire_errors_total",
			Help: "Failed expiry batches (rolled back; retried next pass)."}),
	}
	if reg != nil {
		reg.MustRegister(m.expired, m.recovered, m.recycled, m.fenced, m.errors)
	}
	return m
}
