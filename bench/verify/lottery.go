package verify

import (
	"context"
	"fmt"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// lottery adds a lottery campaign's checks (DESIGN.md "Lottery"); other kinds get none.
// Prizes within stock and the budgets are the claims' checks (a won draw is a claim).
//   - one row per draw: the draws rows equal the draws Redis counted (the per-user
//     counts count every decided draw, won or not, and a void takes its count back),
//     and no user has more draws than per_user_limit;
//   - won draws are the claims: as many won draws as claim rows, each with its claim;
//   - odds: the draws' picks follow the configured weights (chi-square, p >= 1e-4).
func (v *verifier) lottery(ctx context.Context) error {
	var kind string
	if err := v.pg.QueryRow(ctx, v.q(`SELECT kind FROM {campaigns} WHERE id = $1`), v.cfg.Campaign).Scan(&kind); err != nil {
		return fmt.Errorf("verify: kind: %w", err)
	}
	if kind != catalog.KindLottery {
		return nil
	}
	var draws, won, claims, orphans int64
	if err := v.pg.QueryRow(ctx, v.q(`SELECT (SELECT count(*) FROM {draws} WHERE campaign_id = $1),
		(SELECT count(*) FROM {draws} WHERE campaign_id = $1 AND outcome = 'won'),
		(SELECT count(*) FROM {claims} WHERE campaign_id = $1),
		(SELECT count(*) FROM {draws} d WHERE d.campaign_id = $1 AND d.outcome = 'won'
			AND NOT EXISTS (SELECT 1 FROM {claims} c WHERE c.claim_id = d.draw_id AND c.sku = d.sku))`),
		v.cfg.Campaign).Scan(&draws, &won, &claims, &orphans); err != nil {
		return fmt.Errorf("verify: draws: %w", err)
	}
	counts, err := v.rdb.HVals(ctx, rkeys.Users(v.cfg.Campaign)).Result()
	if err != nil {
		return fmt.Errorf("verify: per-user draws in redis: %w", err)
	}
	var counted int64
	for _, c := range counts {
		counted += asInt(c)
	}
	ex, over, err := v.groups(ctx, `SELECT user_id, count(*) FROM {draws} WHERE campaign_id = $1 GROUP BY 1 HAVING count(*) > $2 ORDER BY 2 DESC`,
		v.cfg.Campaign, v.limit)
	if err != nil {
		return err
	}
	v.add(Check{Name: "one row per draw", Guarantee: G2, Pass: draws == counted && over == 0,
		Detail:   fmt.Sprintf("%d draws rows, %d draws counted in Redis; %d users above the limit of %d", draws, counted, over, v.limit),
		Examples: ex})
	v.add(Check{Name: "won draws are the claims", Guarantee: G3, Pass: won == claims && orphans == 0,
		Detail: fmt.Sprintf("%d won draws, %d claim rows, %d won draws without their claim", won, claims, orphans)})
	if v.cfg.Schema != "" {
		v.rep.Notes = append(v.rep.Notes, "odds check skipped: it reads the live schema (bench odds)")
		return nil
	}
	rep, err := catalog.Lottery(ctx, v.pg, v.cfg.Campaign)
	if err != nil {
		return fmt.Errorf("verify: odds: %w", err)
	}
	if rep.Fit == nil {
		v.rep.Notes = append(v.rep.Notes, "odds check skipped: no draws")
		return nil
	}
	v.add(Check{Name: "odds", Guarantee: "fairness", Pass: rep.Fit.PValue >= 1e-4,
		Detail: fmt.Sprintf("chi-square %.2f on %d degrees of freedom over %d draws: p-value %.4g (fails below 1e-4)",
			rep.Fit.ChiSquare, rep.Fit.DF, rep.Fit.Draws, rep.Fit.PValue)})
	return nil
}
