package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// SKUFigures are one SKU's live numbers.
type SKUFigures struct {
	SKU       string `json:"sku"`
	Value     int64  `json:"value"`
	Stock     int64  `json:"stock"`
	StockLeft int64  `json:"stock_left"`
	Accepted  int64  `json:"accepted"`
	Settled   int64  `json:"settled"`
}

// Reconciliation compares Redis with Postgres: every claim Redis accepted is either a
// row or still in flight (in the outbox, not yet committed).
type Reconciliation struct {
	// State is "in_sync" (accepted = settled, nothing in flight), "settling" (the
	// difference is exactly what is in flight) or "drift" (it is not).
	State    string `json:"state"`
	Accepted int64  `json:"accepted_redis"`
	Settled  int64  `json:"settled_postgres"`
	InFlight int64  `json:"in_flight"`
	Drift    int64  `json:"drift"`
}

// Figures are a campaign's live numbers for GET /admin/v1/campaigns/{id}.
type Figures struct {
	CampaignID     string           `json:"campaign_id"`
	Name           string           `json:"name"`
	BusinessLine   string           `json:"business_line"`
	StartsAt       time.Time        `json:"starts_at"`
	EndsAt         time.Time        `json:"ends_at"`
	Paused         bool             `json:"paused"`
	PerUserLimit   int64            `json:"per_user_limit"`
	Segment        *string          `json:"segment"`
	Budget         int64            `json:"budget"`
	BudgetSpent    int64            `json:"budget_spent"`
	BudgetLeft     int64            `json:"budget_left"`
	BusinessBudget int64            `json:"business_line_budget"`
	BusinessSpent  int64            `json:"business_line_spent"`
	SKUs           []SKUFigures     `json:"skus"`
	Accepted       int64            `json:"accepted"`
	Settled        int64            `json:"settled"`
	SettledValue   int64            `json:"settled_value"`
	Reconciliation Reconciliation   `json:"reconciliation"`
	Rejections     map[string]int64 `json:"rejections"`
}

// Figures assembles a campaign's live numbers from Postgres and Redis.
func (c *Catalog) Figures(ctx context.Context, id string) (*Figures, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	f := &Figures{CampaignID: id, Rejections: map[string]int64{}}
	err := c.pg.QueryRow(ctx, `SELECT name, business_line, starts_at, ends_at, paused, per_user_limit, segment, budget
		FROM campaigns WHERE id = $1`, id).Scan(&f.Name, &f.BusinessLine, &f.StartsAt, &f.EndsAt, &f.Paused,
		&f.PerUserLimit, &f.Segment, &f.Budget)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("figures %s: %w", id, err)
	}
	rows, err := c.pg.Query(ctx, `SELECT s.sku, s.stock, s.value, count(cl.claim_id), coalesce(sum(cl.value), 0)
		FROM campaign_skus s LEFT JOIN claims cl ON cl.campaign_id = s.campaign_id AND cl.sku = s.sku
		WHERE s.campaign_id = $1 GROUP BY s.sku, s.stock, s.value ORDER BY s.sku`, id)
	if err != nil {
		return nil, fmt.Errorf("figures %s: %w", id, err)
	}
	for rows.Next() {
		var s SKUFigures
		var sum int64
		if err := rows.Scan(&s.SKU, &s.Stock, &s.Value, &s.Settled, &sum); err != nil {
			return nil, fmt.Errorf("figures %s: %w", id, err)
		}
		f.Settled += s.Settled
		f.SettledValue += sum
		f.SKUs = append(f.SKUs, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("figures %s: %w", id, err)
	}

	pipe := c.rdb.Pipeline()
	meta := pipe.HMGet(ctx, rkeys.Meta(id), "spent", "taken")
	bl := pipe.HMGet(ctx, rkeys.BusinessLine(f.BusinessLine), "budget", "spent")
	skus := make([]*redis.SliceCmd, len(f.SKUs))
	for i, s := range f.SKUs {
		skus[i] = pipe.HMGet(ctx, rkeys.SKU(id, s.SKU), "stock", "taken")
	}
	inflight := pipe.HLen(ctx, rkeys.Inflight(id))
	rej := pipe.HGetAll(ctx, rkeys.Rejections(id))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("figures %s from redis: %w", id, err)
	}
	f.BudgetSpent = num(meta.Val()[0])
	f.Accepted = num(meta.Val()[1])
	f.BudgetLeft = f.Budget - f.BudgetSpent
	f.BusinessBudget = num(bl.Val()[0])
	f.BusinessSpent = num(bl.Val()[1])
	for i := range f.SKUs {
		v := skus[i].Val()
		f.SKUs[i].StockLeft = num(v[0])
		f.SKUs[i].Accepted = num(v[1])
	}
	codes := make([]int, 0, len(rej.Val()))
	for k := range rej.Val() {
		if n, err := strconv.Atoi(k); err == nil {
			codes = append(codes, n)
		}
	}
	sort.Ints(codes)
	for _, code := range codes {
		name := claim.ReasonOf(code)
		f.Rejections[name] = num(rej.Val()[strconv.Itoa(code)])
	}
	r := &f.Reconciliation
	r.Accepted, r.Settled, r.InFlight = f.Accepted, f.Settled, inflight.Val()
	r.Drift = r.Accepted - r.Settled - r.InFlight
	switch {
	case r.Drift != 0:
		r.State = "drift"
	case r.InFlight != 0:
		r.State = "settling"
	default:
		r.State = "in_sync"
	}
	return f, nil
}

func num(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
