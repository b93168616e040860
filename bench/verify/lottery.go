package verify

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// lottery adds a lottery campaign's checks (DESIGN.md "Lottery"); other kinds get none.
// The claims' own checks (stock per SKU, budgets, ledger, every 200 is one row) hold
// for the won draws, which are claims; these add:
//   - one row per draw: the draws rows equal the draws Redis counted (the per-user
//     counts count every decided draw, won or not, and a void takes its count back),
//     and no user has more draws than per_user_limit;
//   - every answered draw is one draws row (with a record): each draw_id bench was
//     answered 200 for - won or no prize - is exactly one draws row, of the same
//     request_id, user and result (a won one also the claim checked by "every 200 is
//     one row");
//   - won draws are the claims: as many won draws as claim rows, each with its claim;
//   - prizes within stock and budget, from the draws: won draws per prize <= its
//     stock, and their value <= the campaign's budget;
//   - odds: the draws' picks follow the configured weights (chi-square via the
//     catalog's lottery report, as bench odds; p >= 1e-4).
func (v *verifier) lottery(ctx context.Context) error {
	if !v.isLottery() {
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
	v.rep.Draws = draws
	counted, err := v.countedDraws(ctx)
	if err != nil {
		return err
	}
	ex, over, err := v.groups(ctx, `SELECT user_id, count(*) FROM {draws} WHERE campaign_id = $1 GROUP BY 1 HAVING count(*) > $2 ORDER BY 2 DESC`,
		v.cfg.Campaign, v.limit)
	if err != nil {
		return err
	}
	v.add(Check{Name: "one row per draw", Guarantee: G2, Pass: draws == counted && over == 0,
		Detail:   fmt.Sprintf("%d draws rows, %d draws counted in Redis; %d users above the limit of %d", draws, counted, over, v.limit),
		Examples: ex})
	if err := v.recordedDraws(ctx); err != nil {
		return err
	}
	v.add(Check{Name: "won draws are the claims", Guarantee: G3, Pass: won == claims && orphans == 0,
		Detail: fmt.Sprintf("%d won draws, %d claim rows, %d won draws without their claim", won, claims, orphans)})
	if err := v.prizes(ctx); err != nil {
		return err
	}
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

func (v *verifier) isLottery() bool { return v.kind == catalog.KindLottery }

// countedDraws is the sum of the campaign's per-user counts in Redis: every decided
// draw, won or not.
func (v *verifier) countedDraws(ctx context.Context) (int64, error) {
	// HGETALL, not HVALS: bench verify's Redis ACL user may read hashes whole
	// (scripts/redis-users.acl) and nothing more.
	counts, err := v.rdb.HGetAll(ctx, rkeys.Users(v.cfg.Campaign)).Result()
	if err != nil {
		return 0, fmt.Errorf("verify: per-user draws in redis: %w", err)
	}
	var counted int64
	for _, c := range counts {
		counted += asInt(c)
	}
	return counted, nil
}

// drawsSettled waits, until cfg.Wait after start, for the campaign's draws rows to
// reach the draws Redis counted: a no-prize draw is settled like a claim but has no
// inflight field to wait on. The "one row per draw" check then says whether they met.
func (v *verifier) drawsSettled(ctx context.Context, start time.Time) error {
	for {
		counted, err := v.countedDraws(ctx)
		if err != nil {
			return err
		}
		var rows int64
		if err := v.pg.QueryRow(ctx, v.q(`SELECT count(*) FROM {draws} WHERE campaign_id = $1`), v.cfg.Campaign).Scan(&rows); err != nil {
			return fmt.Errorf("verify: count draws: %w", err)
		}
		if rows >= counted || time.Since(start) >= v.cfg.Wait {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verify: waiting for the draws to settle: %w", ctx.Err())
		case <-time.After(v.cfg.Poll):
		}
	}
}

// recordedDraws: every draw bench was answered 200 for (its first answer or a replay)
// is exactly one draws row, of the same request_id and user, won or no prize as
// answered (a won one of the prize answered).
func (v *verifier) recordedDraws(ctx context.Context) error {
	if v.cfg.Record == nil {
		return nil
	}
	type want struct {
		req, user, result, sku string
		seen                   int
		bad                    string
	}
	wants := map[string]*want{}
	var plain int
	for i := range v.cfg.Record {
		e := &v.cfg.Record[i]
		if (e.Campaign != "" && e.Campaign != v.cfg.Campaign) || e.Is503() {
			continue
		}
		id := e.Draw()
		if id == "" {
			plain++ // a 200 without a draw's result: counted below
			continue
		}
		if _, ok := wants[id]; !ok {
			wants[id] = &want{req: e.RequestID, user: e.User, result: e.Result, sku: e.SKU}
		}
	}
	v.rep.RecordedDraws = len(wants)
	ids := make([]string, 0, len(wants))
	for id := range wants {
		ids = append(ids, id)
	}
	rows, err := v.pg.Query(ctx, v.q(`SELECT draw_id, request_id, user_id, outcome, coalesce(sku, '') FROM {draws}
		WHERE campaign_id = $1 AND draw_id = ANY($2)`), v.cfg.Campaign, ids)
	if err != nil {
		return fmt.Errorf("verify: read draws: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, req, user, outcome, sku string
		if err := rows.Scan(&id, &req, &user, &outcome, &sku); err != nil {
			return fmt.Errorf("verify: read draws: %w", err)
		}
		w := wants[id]
		w.seen++
		if w.req != req || w.user != user || w.result != outcome || (w.result == "won" && w.sku != sku) {
			w.bad = fmt.Sprintf("%s: answered (%s, %s, %s %s), row (%s, %s, %s %s)", id, w.req, w.user, w.result, w.sku, req, user, outcome, sku)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify: read draws: %w", err)
	}
	var missing, dup, bad []string
	for id, w := range wants {
		switch {
		case w.seen == 0:
			missing = append(missing, id)
		case w.seen > 1:
			dup = append(dup, fmt.Sprintf("%s ×%d", id, w.seen))
		case w.bad != "":
			bad = append(bad, w.bad)
		}
	}
	sort.Strings(missing)
	sort.Strings(dup)
	sort.Strings(bad)
	c := Check{Name: "every draw answered is one row", Guarantee: G2 + "," + G3,
		Pass: len(missing)+len(dup)+len(bad) == 0 && plain == 0,
		Detail: fmt.Sprintf("%d draw_ids answered 200 (won or no prize): %d draws rows exactly once, %d missing, %d duplicated, %d differ from the answer",
			len(wants), len(wants)-len(missing)-len(dup)-len(bad), len(missing), len(dup), len(bad))}
	if plain > 0 {
		// A lottery's every 200 is a draw: an answer without a result is not one of its
		// answers (a record of another kind's run, or bench that did not read it).
		c.Detail += fmt.Sprintf("; %d 200s in the record are not draws (no result won or no_prize)", plain)
	}
	c.Examples = firstN(append(append(prefix("missing ", missing), prefix("duplicated ", dup)...), prefix("differs ", bad)...), v.cfg.Examples)
	v.add(c)
	return nil
}

// prizes: from the draws themselves, no prize was won beyond its stock and the value
// won fits the campaign's budget (the claims' checks prove the same of the claims).
func (v *verifier) prizes(ctx context.Context) error {
	rows, err := v.pg.Query(ctx, v.q(`SELECT sku, count(*), coalesce(sum(value), 0) FROM {draws}
		WHERE campaign_id = $1 AND outcome = 'won' GROUP BY sku ORDER BY sku`), v.cfg.Campaign)
	if err != nil {
		return fmt.Errorf("verify: prizes won: %w", err)
	}
	defer rows.Close()
	won := map[string]int64{}
	var value int64
	for rows.Next() {
		var s string
		var n, val int64
		if err := rows.Scan(&s, &n, &val); err != nil {
			return fmt.Errorf("verify: prizes won: %w", err)
		}
		won[s], value = n, value+val
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify: prizes won: %w", err)
	}
	c := Check{Name: "prizes won within stock", Guarantee: G1, Pass: true}
	var parts []string
	names := v.names()
	for s := range won {
		if _, ok := v.skus[s]; !ok {
			names = append(names, s) // a prize the campaign does not have: stock 0
		}
	}
	sort.Strings(names)
	for _, s := range names {
		var stock int64
		held := won[s]
		if k, ok := v.skus[s]; ok {
			stock = k.stock
			if v.recycle {
				held -= k.expired // an expired prize's unit went back on offer
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d", s, held, stock))
		if held > stock {
			c.Pass = false
			c.Examples = append(c.Examples, fmt.Sprintf("%s: won %d times, stock %d", s, held, stock))
		}
	}
	c.Detail = "won/stock: " + strings.Join(parts, ", ")
	if v.recycle {
		c.Detail += " (recycle_stock: expired prizes not counted)"
	}
	v.add(c)
	c = Check{Name: "prize value within budget", Guarantee: G1, Pass: value <= v.budget,
		Detail: fmt.Sprintf("won draws' value %d of the campaign's budget %d", value, v.budget)}
	if !c.Pass {
		c.Examples = []string{fmt.Sprintf("over budget by %d", value-v.budget)}
	}
	v.add(c)
	return nil
}
