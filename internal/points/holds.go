package points

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// Holds is the settler's half of the cross-slot step (DESIGN.md "Points: the cross-slot
// step"): ConfirmClaims spends the held points of points_item claims the settler has
// just written as rows, and the sweep resolves every hold whose campaign's index entry
// is older than Grace: a claim row -> spend; a request record V or R, or none -> give
// back (if the hold's latest attempt is that old too); A, D or S -> wait. Each step is
// idempotent by the reservation, so a settler killed anywhere repeats it harmlessly.
type Holds struct {
	svc *Service
	cfg HoldsConfig
	log *slog.Logger

	mu     sync.Mutex
	prices map[string]int64 // "<campaign>\t<sku>" -> price; 0: not a points_item SKU

	confirmed, givenBack, uncovered, refunded prometheus.Counter
}

// HoldsConfig configures the sweep.
type HoldsConfig struct {
	// Grace is how old a hold's last attempt must be before the sweep resolves it: well
	// above the gateway's longest claim (ack timeout + Redis timeouts + the in-flight
	// wait) and the settler's VoidAfter and the relay's MinAge (15 s), so an attempt in
	// progress is never swept. Default 60s.
	Grace time.Duration
	// Interval between sweeps (default 10s).
	Interval time.Duration
	// Registerer takes the metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// Defaults of HoldsConfig.
const (
	DefaultHoldsGrace    = 60 * time.Second
	DefaultHoldsInterval = 10 * time.Second
)

// NewHolds builds the settler's points confirmer and sweep.
func NewHolds(svc *Service, cfg HoldsConfig, log *slog.Logger) (*Holds, error) {
	if cfg.Grace == 0 {
		cfg.Grace = DefaultHoldsGrace
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultHoldsInterval
	}
	if cfg.Grace < time.Second || cfg.Grace > 24*time.Hour {
		return nil, fmt.Errorf("points holds: grace %s, want 1s..24h", cfg.Grace)
	}
	if cfg.Interval < 10*time.Millisecond || cfg.Interval > time.Hour {
		return nil, fmt.Errorf("points holds: interval %s, want 10ms..1h", cfg.Interval)
	}
	if log == nil {
		log = slog.Default()
	}
	h := &Holds{svc: svc, cfg: cfg, log: log, prices: map[string]int64{},
		confirmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_points_holds_confirmed_total",
			Help: "Points holds of accepted points_item claims confirmed as spends (settler and sweep)."}),
		givenBack: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_points_holds_swept_back_total",
			Help: "Orphaned points holds given back by the settler's sweep (the claim was voided, rejected or never made)."}),
		uncovered: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_points_uncovered_total",
			Help: "Accepted points_item claims whose points were no longer there to spend (a race DESIGN.md describes); for the risk team."}),
		refunded: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_points_given_back_total",
			Help: "Points given back to users because their confirmed points_item claim was revoked (a void after confirmation), once per claim."}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{h.confirmed, h.givenBack, h.uncovered, h.refunded} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("points holds metrics: %w", err)
			}
		}
	}
	return h, nil
}

// price is a SKU's points price (0: the campaign is not points_item). Prices are frozen
// once a campaign starts, and claims exist only after it started, so they are cached.
func (h *Holds) price(ctx context.Context, campaign, sku string) (int64, error) {
	k := campaign + "\t" + sku
	h.mu.Lock()
	p, ok := h.prices[k]
	h.mu.Unlock()
	if ok {
		return p, nil
	}
	err := h.svc.pg.QueryRow(ctx, `SELECT coalesce((SELECT s.points FROM campaigns c JOIN campaign_skus s ON s.campaign_id = c.id
		WHERE c.id = $1 AND s.sku = $2 AND c.kind = 'points_item'), 0)`, campaign, sku).Scan(&p)
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	if len(h.prices) > 100_000 {
		h.prices = map[string]int64{}
	}
	h.prices[k] = p
	h.mu.Unlock()
	return p, nil
}

// ConfirmClaims spends the holds of the points_item claims among recs, which the
// settler has just written as rows. A failure is logged and left to the sweep.
func (h *Holds) ConfirmClaims(ctx context.Context, recs []*claim.Record) {
	for _, r := range recs {
		price, err := h.price(ctx, r.CampaignID, r.SKU)
		if err != nil {
			h.log.Warn("points confirm: price lookup failed; the sweep confirms it", "claim_id", r.ClaimID, "err", err)
			continue
		}
		if price == 0 {
			continue
		}
		h.confirm(ctx, r.CampaignID, r.RequestID, r.UserID, r.ClaimID, price, "")
	}
}

// confirm spends one claim's hold and drops its index entry (val "" : read it).
func (h *Holds) confirm(ctx context.Context, campaign, requestID, user, claimID string, price int64, val string) {
	res := rkeys.PointsReservation(campaign, requestID)
	err := h.svc.Spend(ctx, user, res, claimID, price)
	switch {
	case errors.Is(err, ErrUncovered):
		h.uncovered.Inc()
		h.log.Error("an accepted points_item claim's points are not there to spend", "claim_id", claimID, "user", user, "points", price)
	case err != nil:
		h.log.Warn("points confirm failed; the sweep retries it", "claim_id", claimID, "err", err)
		return
	default:
		h.confirmed.Inc()
	}
	field := rkeys.PointsHoldField(requestID, user)
	if val == "" {
		v, err := h.svc.rdb.HGet(ctx, rkeys.PointsHolds(campaign), field).Result()
		if err != nil {
			return // gone, or Redis: the sweep finds it (and repeats the spend harmlessly)
		}
		val = v
	}
	_ = scripts.Unhold.Run(ctx, h.svc.rdb, []string{rkeys.PointsHolds(campaign)}, field, val).Err()
}

// SweepResult counts what one sweep did.
type SweepResult struct {
	Seen, Confirmed, GivenBack, Waiting, Dropped int
}

// Sweep resolves every hold older than the grace, over all points_item campaigns.
func (h *Holds) Sweep(ctx context.Context) (SweepResult, error) {
	var out SweepResult
	rows, err := h.svc.pg.Query(ctx, `SELECT id FROM campaigns WHERE kind = 'points_item' ORDER BY id`)
	if err != nil {
		return out, fmt.Errorf("points sweep: %w", err)
	}
	camps, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return out, fmt.Errorf("points sweep: %w", err)
	}
	for _, c := range camps {
		if err := h.sweepCampaign(ctx, c, &out); err != nil {
			return out, err
		}
	}
	return out, nil
}

type holdEntry struct {
	field, val, req, user string
}

func (h *Holds) sweepCampaign(ctx context.Context, campaign string, out *SweepResult) error {
	all, err := h.svc.rdb.HGetAll(ctx, rkeys.PointsHolds(campaign)).Result()
	if err != nil {
		return fmt.Errorf("points sweep %s: %w", campaign, err)
	}
	cutoff := time.Now().Add(-h.cfg.Grace).UnixMilli()
	var old []holdEntry
	for f, v := range all {
		msText, _, _ := strings.Cut(v, ":")
		ms, _ := strconv.ParseInt(msText, 10, 64)
		if ms > cutoff {
			continue
		}
		req, user, ok := rkeys.ParsePointsHoldField(f)
		if !ok {
			_ = scripts.Unhold.Run(ctx, h.svc.rdb, []string{rkeys.PointsHolds(campaign)}, f, v).Err()
			out.Dropped++
			continue
		}
		old = append(old, holdEntry{field: f, val: v, req: req, user: user})
	}
	out.Seen += len(old)
	for len(old) > 0 {
		n := min(len(old), 500)
		if err := h.resolve(ctx, campaign, old[:n], out); err != nil {
			return err
		}
		old = old[n:]
	}
	return nil
}

func (h *Holds) resolve(ctx context.Context, campaign string, es []holdEntry, out *SweepResult) error {
	reqs := make([]string, len(es))
	for i, e := range es {
		reqs[i] = e.req
	}
	type row struct{ claimID, sku, user string }
	rowsOf := map[string]row{}
	rows, err := h.svc.pg.Query(ctx, `SELECT request_id, claim_id, sku, user_id FROM claims WHERE campaign_id = $1 AND request_id = ANY($2)`, campaign, reqs)
	if err != nil {
		return fmt.Errorf("points sweep %s: %w", campaign, err)
	}
	for rows.Next() {
		var req string
		var r row
		if err := rows.Scan(&req, &r.claimID, &r.sku, &r.user); err != nil {
			rows.Close()
			return fmt.Errorf("points sweep %s: %w", campaign, err)
		}
		rowsOf[req] = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("points sweep %s: %w", campaign, err)
	}
	pipe := h.svc.rdb.Pipeline()
	recs := make([]*redis.StringCmd, len(es))
	for i, e := range es {
		recs[i] = pipe.Get(ctx, rkeys.Request(campaign, e.req))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("points sweep %s records: %w", campaign, err)
	}
	for i, e := range es {
		r, ok := rowsOf[e.req]
		if ok && r.user == e.user {
			price, err := h.price(ctx, campaign, r.sku)
			if err != nil || price == 0 {
				h.log.Warn("points sweep: no price for a claim row", "claim_id", r.claimID, "err", err)
				continue
			}
			h.confirm(ctx, campaign, e.req, e.user, r.claimID, price, e.val)
			out.Confirmed++
			continue
		}
		st := byte(0)
		if v, err := recs[i].Result(); err == nil {
			st, _ = claim.IdemState(v)
		}
		// A row of another user: this user's attempt was a key reuse (422), not that claim.
		if (st == claim.IdemAccepted || st == claim.IdemDurable || st == claim.IdemSettled) && !ok {
			out.Waiting++ // may still become a row (or be voided past VoidAfter)
			continue
		}
		back, err := h.svc.SweepGiveBack(ctx, e.user, rkeys.PointsReservation(campaign, e.req), h.cfg.Grace)
		if err != nil {
			h.log.Warn("points sweep: give back failed; next sweep", "campaign", campaign, "request_id", e.req, "err", err)
			continue
		}
		if back {
			h.givenBack.Inc()
			out.GivenBack++
			h.log.Info("points sweep gave back an orphaned hold", "campaign", campaign, "request_id", e.req, "user", e.user)
		}
		_ = scripts.Unhold.Run(ctx, h.svc.rdb, []string{rkeys.PointsHolds(campaign)}, e.field, e.val).Err()
	}
	return nil
}

// voidedBatch bounds the revoked claims one pass gives points back for.
const voidedBatch = 500

// Run sweeps every Interval until ctx ends, and gives back the points of revoked
// points_item claims (GiveBackVoided).
func (h *Holds) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		if res, err := h.Sweep(ctx); err != nil {
			h.log.Warn("points sweep failed", "err", err)
		} else if res.Confirmed+res.GivenBack > 0 {
			h.log.Info("points sweep", "seen", res.Seen, "confirmed", res.Confirmed, "given_back", res.GivenBack, "waiting", res.Waiting)
		}
		if n, err := h.GiveBackVoided(ctx, voidedBatch); err != nil {
			h.log.Warn("points give-back of revoked claims failed; the next pass retries it", "err", err)
		} else if n > 0 {
			h.log.Info("points given back for revoked claims", "points", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
