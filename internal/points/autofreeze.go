package points

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// Auto-freeze (DESIGN.md "Points"): the global rule points.max / points.window /
// points.shadow (internal/risk, set with riskctl rules set like the claim rules) is read
// on every grant and evaluated by the grant's apply script in the user's slot. What it
// decides is recorded here once per grant: a points_autofreeze row (riskctl top points
// reads them), and, enforced, the freeze itself (account row, audit row by actor
// "auto-freeze", a points_frozen event) - the hot flag the script already set.

// AutoFreezeActor is the audit actor of an automatic freeze.
const AutoFreezeActor = "auto-freeze"

// Auto-freeze decisions (points_autofreeze.mode).
const (
	FreezeEnforced = "enforced"
	FreezeShadow   = "shadow"
)

type freezeRule struct {
	max    int64
	window time.Duration
	shadow int
}

// freezeRule reads the rule in force (the global rules hash; off when unset).
func (s *Service) freezeRule(ctx context.Context) (freezeRule, error) {
	v, err := s.rdb.HMGet(ctx, rkeys.RiskGlobalRules, "points.max", "points.window_ms", "points.shadow").Result()
	if err != nil {
		return freezeRule{}, fmt.Errorf("points auto-freeze rule: %w", err)
	}
	num := func(x any) int64 { t, _ := x.(string); n, _ := strconv.ParseInt(t, 10, 64); return n }
	r := freezeRule{max: num(v[0]), window: time.Duration(num(v[1])) * time.Millisecond}
	if num(v[2]) == 1 {
		r.shadow = 1
	}
	if r.max <= 0 || r.window <= 0 {
		return freezeRule{}, nil
	}
	return r, nil
}

// autoFreeze records the script's decision for grant, once, then lets the script forget
// it. A failure returns an error (the grant answers 503 and its retry records it).
func (s *Service) autoFreeze(ctx context.Context, user, grant, decision string, gained int64, rule freezeRule) error {
	tx, err := s.pg.Begin(ctx)
	if err != nil {
		return fmt.Errorf("auto-freeze %s: %w", user, err)
	}
	defer tx.Rollback(ctx)
	tag, err := tx.Exec(ctx, `INSERT INTO points_autofreeze (grant_id, user_id, gained, max_points, window_ms, mode)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (grant_id) DO NOTHING`, grant, user, gained, rule.max, rule.window.Milliseconds(), decision)
	if err != nil {
		return fmt.Errorf("auto-freeze %s: %w", user, err)
	}
	if tag.RowsAffected() == 1 && decision == FreezeEnforced {
		reason := fmt.Sprintf("auto-freeze: gained %d points in %s (points.max %d)", gained, rule.window, rule.max)
		if _, err := setFrozenTx(ctx, tx, user, true, reason, AutoFreezeActor); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("auto-freeze %s: %w", user, err)
	}
	if tag.RowsAffected() == 1 {
		s.autoFrozen.WithLabelValues(decision).Inc()
		s.log().Warn("points auto-freeze rule hit", "user", user, "grant_id", grant, "gained", gained,
			"max", rule.max, "window", rule.window, "mode", decision)
	}
	return s.rdb.HDel(ctx, rkeys.Points(user), "af:"+grant).Err()
}

func newAutoFrozen() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashgate_points_autofreeze_total",
		Help: "Grants that took an account over the auto-freeze rule, by mode (enforced: frozen; shadow: only counted)."}, []string{"mode"})
}
