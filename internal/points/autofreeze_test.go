package points_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestAutoFreezeOnGains: with points.max=100 in points.window=1m (global rules; a
// private Redis, so no other test sees the rule), an account's grants up to 100 in the
// window leave it alone; the grant that takes it over is applied and freezes it (its
// next reservation is blocked), recorded once (points_autofreeze row, the account row,
// an audit row by auto-freeze, a points_frozen event), even when the grant is retried.
// In shadow mode the same gains only count (a shadow row, the metric), nothing frozen.
func TestAutoFreezeOnGains(t *testing.T) {
	rdb := testenv.PrivateRedis(t)
	pg := testenv.PG(t)
	reg := prometheus.NewRegistry()
	svc, err := points.New(pg, rdb, points.Config{Registerer: reg, Log: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := rdb.HSet(ctx, rkeys.RiskGlobalRules, "points.max", 100, "points.window_ms", 60_000).Err(); err != nil {
		t.Fatal(err)
	}
	task := testenv.ID(t, "task")
	res, err := svc.PutTask(ctx, task, &points.TaskPut{Name: "t", PerGrantMax: 1000, PerUserDailyMax: 10_000, Lifetime: "720h"})
	if err != nil {
		t.Fatal(err)
	}
	grant := func(user, id string, amount int64) {
		t.Helper()
		if _, err := svc.Grant(ctx, []byte(res.Key), &points.GrantReq{UserID: user, Task: task, Amount: amount, GrantID: id}); err != nil {
			t.Fatal(err)
		}
	}
	rows := func(user, mode string) int {
		var n int
		if err := pg.QueryRow(ctx, `SELECT count(*) FROM points_autofreeze WHERE user_id = $1 AND mode = $2`, user, mode).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	u := testenv.ID(t, "fast")
	grant(u, u+"-1", 60)
	grant(u, u+"-2", 40) // 100: at the limit, not over it
	if got, _ := svc.Reserve(ctx, u, "c:r0", "t", 1); got != points.Reserved {
		t.Fatalf("at the limit: %s, want reserved", got)
	}
	if ok, _ := svc.GiveBack(ctx, u, "c:r0", "t"); !ok {
		t.Fatal("give back")
	}
	grant(u, u+"-3", 1) // 101 in the window: frozen
	grant(u, u+"-3", 1) // the source retries: recorded once
	acct, err := svc.Account(ctx, u)
	if err != nil || !acct.Frozen || acct.Balance != 101 {
		t.Fatalf("account after 101 points in the window: %+v %v, want frozen with its 101 points", acct, err)
	}
	if got, _ := svc.Reserve(ctx, u, "c:r1", "t", 1); got != points.Blocked {
		t.Fatalf("reserve after the auto-freeze: %s, want blocked", got)
	}
	var audited, evs int
	_ = pg.QueryRow(ctx, `SELECT count(*) FROM risk_audit WHERE scope = $1 AND actor = $2 AND action = 'points.freeze'`,
		"points:"+u, points.AutoFreezeActor).Scan(&audited)
	_ = pg.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'points_frozen' AND key = $1`, u).Scan(&evs)
	if n := rows(u, points.FreezeEnforced); n != 1 || audited != 1 || evs != 1 {
		t.Fatalf("enforced rows %d, audit rows %d, events %d; want 1 each", n, audited, evs)
	}
	if got := autoFrozen(t, reg, points.FreezeEnforced); got != 1 {
		t.Fatalf("flashgate_points_autofreeze_total{mode=enforced} %v, want 1", got)
	}

	// Shadow mode: counted, not frozen.
	if err := rdb.HSet(ctx, rkeys.RiskGlobalRules, "points.shadow", 1).Err(); err != nil {
		t.Fatal(err)
	}
	s := testenv.ID(t, "shadow")
	grant(s, s+"-1", 150)
	acct, _ = svc.Account(ctx, s)
	if acct.Frozen {
		t.Fatal("frozen in shadow mode")
	}
	if got, _ := svc.Reserve(ctx, s, "c:r2", "t", 10); got != points.Reserved {
		t.Fatalf("reserve in shadow mode: %s", got)
	}
	if n := rows(s, points.FreezeShadow); n != 1 || autoFrozen(t, reg, points.FreezeShadow) != 1 {
		t.Fatalf("shadow rows %d, metric %v, want 1 and 1", n, autoFrozen(t, reg, points.FreezeShadow))
	}

	// The rule off: nothing is evaluated.
	if err := rdb.HDel(ctx, rkeys.RiskGlobalRules, "points.max", "points.window_ms", "points.shadow").Err(); err != nil {
		t.Fatal(err)
	}
	o := testenv.ID(t, "off")
	grant(o, o+"-1", 500)
	if n := rows(o, points.FreezeShadow) + rows(o, points.FreezeEnforced); n != 0 {
		t.Fatalf("rule off: %d rows", n)
	}
}

func autoFrozen(t *testing.T, reg *prometheus.Registry, mode string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flashgate_points_autofreeze_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "mode" && l.GetValue() == mode {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
