package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/internal/odds"
)

// LotteryReport is a lottery's fairness and fulfilment figures from the books (the
// draws and deliveries tables; DESIGN.md "Lottery"): GET
// /admin/v1/campaigns/{id}/report?table=lottery and `bench odds`.
type LotteryReport struct {
	CampaignID  string  `json:"campaign_id"`
	OddsVersion string  `json:"odds_version"`
	Draws       int64   `json:"draws"`
	Won         int64   `json:"won"`
	NoPrize     int64   `json:"no_prize"`
	WinRate     float64 `json:"win_rate"`
	ValueGiven  int64   `json:"value_given"`
	Delivered   int64   `json:"delivered"`
	Delivering  int64   `json:"delivering"`
	Failed      int64   `json:"failed"`
	// Prizes: per prize its configured weight and probability, how often a draw
	// pointed at it (Picked) and how often it was won (Won <= Picked: the rest found it
	// out of stock or beyond the budget).
	Prizes []LotteryPrize `json:"prizes"`
	// NoPrizeWeight and NoPrizePicked are the no-prize band's weight and how often a
	// draw fell in it.
	NoPrizeWeight int64 `json:"no_prize_weight"`
	NoPrizePicked int64 `json:"no_prize_picked"`
	// Fit is Pearson's chi-square of the picks against the configured weights (the
	// draws' randomness: what they pointed at before stock), nil without draws.
	Fit *odds.Fit `json:"fit,omitempty"`
	// OtherVersions counts draws made under another odds version (none: the odds are
	// frozen once the campaign starts); they are left out of the fit.
	OtherVersions int64 `json:"other_versions"`
}

// LotteryPrize is one prize's row of the report.
type LotteryPrize struct {
	SKU         string  `json:"sku"`
	Weight      int64   `json:"weight"`
	Probability float64 `json:"probability"`
	Picked      int64   `json:"picked"`
	Won         int64   `json:"won"`
	Value       int64   `json:"value_given"`
	Delivered   int64   `json:"delivered"`
	Failed      int64   `json:"failed"`
}

// ErrNotLottery: the campaign exists but is not a lottery.
var ErrNotLottery = errors.New("not a lottery campaign")

// Lottery builds the report in one repeatable-read snapshot.
func Lottery(ctx context.Context, pg *pgxpool.Pool, id string) (*LotteryReport, error) {
	tx, err := pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("lottery report %s: %w", id, err)
	}
	defer tx.Rollback(ctx)
	rep := &LotteryReport{CampaignID: id}
	var kind string
	var w0, ver *string
	err = tx.QueryRow(ctx, `SELECT kind, no_prize_weight::text, odds_version FROM campaigns WHERE id = $1`, id).Scan(&kind, &w0, &ver)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lottery report %s: %w", id, err)
	}
	if kind != KindLottery || ver == nil || w0 == nil {
		return nil, ErrNotLottery
	}
	rep.OddsVersion = *ver
	fmt.Sscan(*w0, &rep.NoPrizeWeight)
	// The prizes' weights (the test needs each band's size, not the walk's order).
	rows, err := tx.Query(ctx, `SELECT sku, coalesce(weight, 0) FROM campaign_skus WHERE campaign_id = $1 ORDER BY sku`, id)
	if err != nil {
		return nil, fmt.Errorf("lottery report %s: %w", id, err)
	}
	idx := map[string]int{}
	for rows.Next() {
		var p LotteryPrize
		if err := rows.Scan(&p.SKU, &p.Weight); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lottery report %s: %w", id, err)
		}
		idx[p.SKU] = len(rep.Prizes)
		rep.Prizes = append(rep.Prizes, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lottery report %s: %w", id, err)
	}
	rows, err = tx.Query(ctx, `SELECT odds_version = $2, coalesce(pick, ''), coalesce(sku, ''), count(*), coalesce(sum(value), 0)
		FROM draws WHERE campaign_id = $1 GROUP BY 1, 2, 3`, id, rep.OddsVersion)
	if err != nil {
		return nil, fmt.Errorf("lottery report %s draws: %w", id, err)
	}
	for rows.Next() {
		var current bool
		var pick, sku string
		var n, value int64
		if err := rows.Scan(&current, &pick, &sku, &n, &value); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lottery report %s draws: %w", id, err)
		}
		rep.Draws += n
		if sku != "" {
			rep.Won += n
			rep.ValueGiven += value
			if i, ok := idx[sku]; ok {
				rep.Prizes[i].Won += n
				rep.Prizes[i].Value += value
			}
		} else {
			rep.NoPrize += n
		}
		if !current {
			rep.OtherVersions += n
			continue
		}
		if i, ok := idx[pick]; ok && pick != "" {
			rep.Prizes[i].Picked += n
		} else {
			rep.NoPrizePicked += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lottery report %s draws: %w", id, err)
	}
	rows, err = tx.Query(ctx, `SELECT sku, state, count(*) FROM deliveries WHERE campaign_id = $1 GROUP BY 1, 2`, id)
	if err != nil {
		return nil, fmt.Errorf("lottery report %s deliveries: %w", id, err)
	}
	for rows.Next() {
		var sku, state string
		var n int64
		if err := rows.Scan(&sku, &state, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lottery report %s deliveries: %w", id, err)
		}
		i, ok := idx[sku]
		switch state {
		case "delivered":
			rep.Delivered += n
			if ok {
				rep.Prizes[i].Delivered += n
			}
		case "failed":
			rep.Failed += n
			if ok {
				rep.Prizes[i].Failed += n
			}
		default:
			rep.Delivering += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lottery report %s deliveries: %w", id, err)
	}
	if rep.Draws > 0 {
		rep.WinRate = float64(rep.Won) / float64(rep.Draws)
	}
	t := odds.Table{NoPrize: rep.NoPrizeWeight}
	observed := []int64{rep.NoPrizePicked}
	for _, p := range rep.Prizes {
		t.Prizes = append(t.Prizes, odds.Prize{SKU: p.SKU, Weight: p.Weight, InStock: true})
		observed = append(observed, p.Picked)
	}
	probs := t.Probabilities()
	for i := range rep.Prizes {
		rep.Prizes[i].Probability = probs[1+i]
	}
	if rep.Draws-rep.OtherVersions > 0 {
		fit, err := odds.ChiSquare(observed, probs)
		if err != nil {
			return nil, fmt.Errorf("lottery report %s: %w", id, err)
		}
		rep.Fit = &fit
	}
	return rep, tx.Commit(ctx)
}
