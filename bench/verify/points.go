package verify

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// The points mall's checks (issue 16; DESIGN.md "Points"), run for a points_item
// campaign after settlement: every hold of the campaign resolved, per user of the
// campaign ledger sum = lots left = hot balance, no negative balance, points spent =
// items x price, and no grant above its task's ceiling.
func (v *verifier) points(ctx context.Context) error {
	var kind string
	if err := v.pg.QueryRow(ctx, v.q(`SELECT kind FROM {campaigns} WHERE id = $1`), v.cfg.Campaign).Scan(&kind); err != nil {
		return fmt.Errorf("verify points: %w", err)
	}
	if kind != "points_item" {
		return nil
	}
	// Holds resolve after settlement (the settler's confirm, else its sweep's grace).
	deadline := time.Now().Add(v.cfg.Wait)
	var holds int64
	for {
		n, err := v.rdb.HLen(ctx, rkeys.PointsHolds(v.cfg.Campaign)).Result()
		if err != nil {
			return fmt.Errorf("verify points holds: %w", err)
		}
		holds = n
		if n == 0 || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(v.cfg.Poll)
	}
	v.add(Check{Name: "points holds resolved", Guarantee: G2, Pass: holds == 0,
		Detail: fmt.Sprintf("%d claims' points still held after %s", holds, v.cfg.Wait)})

	rows, err := v.pg.Query(ctx, v.q(`WITH u AS (SELECT DISTINCT user_id FROM {claims} WHERE campaign_id = $1
			UNION SELECT user_id FROM {points_ledger} WHERE kind = 'spend' AND source_id LIKE $1 || ':%')
		SELECT u.user_id, coalesce((SELECT sum(delta) FROM {points_ledger} l WHERE l.user_id = u.user_id), 0),
			coalesce((SELECT sum(remaining) FROM {points_lots} o WHERE o.user_id = u.user_id), 0)
		FROM u ORDER BY 1`), v.cfg.Campaign)
	if err != nil {
		return fmt.Errorf("verify points: %w", err)
	}
	type acct struct {
		user         string
		ledger, lots int64
	}
	var accts []acct
	for rows.Next() {
		var a acct
		if err := rows.Scan(&a.user, &a.ledger, &a.lots); err != nil {
			rows.Close()
			return fmt.Errorf("verify points: %w", err)
		}
		accts = append(accts, a)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify points: %w", err)
	}
	var diverged, negative []string
	for _, a := range accts {
		h, err := v.rdb.HMGet(ctx, rkeys.Points(a.user), "bal", "ok").Result()
		if err != nil {
			return fmt.Errorf("verify points %s: %w", a.user, err)
		}
		hot, built := int64(0), h[1] != nil
		if s, ok := h[0].(string); ok {
			hot, _ = strconv.ParseInt(s, 10, 64)
		}
		if a.ledger != a.lots || built && hot != a.ledger {
			diverged = append(diverged, fmt.Sprintf("%s ledger=%d lots=%d hot=%d", a.user, a.ledger, a.lots, hot))
		}
		if a.ledger < 0 || hot < 0 {
			negative = append(negative, fmt.Sprintf("%s ledger=%d hot=%d", a.user, a.ledger, hot))
		}
	}
	v.add(Check{Name: "points: ledger = lots = hot balance", Guarantee: G1, Pass: len(diverged) == 0,
		Detail: fmt.Sprintf("%d of %d accounts diverge", len(diverged), len(accts)), Examples: firstN(diverged, v.cfg.Examples)})
	v.add(Check{Name: "points: no negative balance", Guarantee: G1, Pass: len(negative) == 0,
		Detail: fmt.Sprintf("%d of %d accounts negative", len(negative), len(accts)), Examples: firstN(negative, v.cfg.Examples)})

	var spent, due int64
	if err := v.pg.QueryRow(ctx, v.q(`SELECT
			coalesce((SELECT -sum(delta) FROM {points_ledger} WHERE kind = 'spend' AND source_id LIKE $1 || ':%'), 0),
			coalesce((SELECT sum(s.points) FROM {claims} c JOIN {campaign_skus} s ON s.campaign_id = c.campaign_id AND s.sku = c.sku
				WHERE c.campaign_id = $1), 0)`), v.cfg.Campaign).Scan(&spent, &due); err != nil {
		return fmt.Errorf("verify points: %w", err)
	}
	v.add(Check{Name: "points spent = items x price", Guarantee: G1 + "," + G3, Pass: spent == due,
		Detail: fmt.Sprintf("spent %d, rows x price %d", spent, due)})

	// Against the task's current ceiling (a ceiling lowered after a grant shows here too).
	over, n, err := v.groups(ctx, `SELECT l.grant_id, l.amount FROM {points_lots} l JOIN {points_tasks} t ON t.id = l.task_id
		WHERE l.amount > t.per_grant_max ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("verify points ceiling: %w", err)
	}
	v.add(Check{Name: "no grant above its ceiling", Guarantee: G1, Pass: n == 0,
		Detail: fmt.Sprintf("%d grants above their task's per_grant_max", n), Examples: over})
	return nil
}
