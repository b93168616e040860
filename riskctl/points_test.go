package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// riskctl points freeze|unfreeze: the record, the audit row with the actor, the hot
// copy the reserve script reads; bad input is exit 2 and changes nothing.
func TestPointsFreezeUnfreeze(t *testing.T) {
	pg, rdb := testenv.PG(t), testenv.Redis(t)
	ctx := context.Background()
	user := testenv.ID(t, "pz")
	t.Setenv("FLASH_ACTOR", "risk-oncall")
	if code, _, errs := riskctl(t, "points", "freeze", user); code != exitUsage || !strings.Contains(errs, "--reason") {
		t.Fatalf("without --reason: %d %s", code, errs)
	}
	if code, _, errs := riskctl(t, "points", "freeze", "a b", "--reason", "x"); code != exitUsage || !strings.Contains(errs, "USER") {
		t.Fatalf("bad user: %d %s", code, errs)
	}
	var n int
	if err := pg.QueryRow(ctx, `SELECT count(*) FROM points_accounts WHERE user_id = $1`, user).Scan(&n); err != nil || n != 0 {
		t.Fatalf("bad input changed the record: %d %v", n, err)
	}
	svc, err := points.New(pg, rdb, points.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Rebuild(ctx, user); err != nil { // a built hot balance
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(mustRiskctl(t, "points", "freeze", user, "--reason", "9999 from one source", "--json")), &out); err != nil {
		t.Fatal(err)
	}
	if out["frozen"] != true {
		t.Fatalf("freeze: %v", out)
	}
	if got, _ := svc.Reserve(ctx, user, testenv.ID(t, "c")+":r", "t", 1); got != points.Blocked {
		t.Fatalf("reserve while frozen: %s, want blocked", got)
	}
	if fz, _ := rdb.HGet(ctx, rkeys.Points(user), "frz").Result(); fz != "1" {
		t.Fatalf("hot frz %q, want 1", fz)
	}
	mustRiskctl(t, "points", "unfreeze", user, "--reason", "reviewed")
	if fz, _ := rdb.HGet(ctx, rkeys.Points(user), "frz").Result(); fz != "0" {
		t.Fatalf("hot frz after unfreeze %q, want 0", fz)
	}
	if err := pg.QueryRow(ctx, `SELECT count(*) FROM risk_audit WHERE scope = $1 AND actor = 'risk-oncall'
		AND action IN ('points.freeze', 'points.unfreeze')`, "points:"+user).Scan(&n); err != nil || n != 2 {
		t.Fatalf("audit rows %d (%v), want 2", n, err)
	}
}

// riskctl rules set points.max / points.window / points.shadow (the auto-freeze rule,
// global only) and riskctl top points: bad values are exit 2 naming the key and change
// nothing; set, the rule freezes an account over it on its next grant, and top points
// shows the account's gains, the rule's hit and the freeze. A private Redis: the shared
// one's global rules are other tests' too.
func TestPointsAutoFreezeRuleAndTop(t *testing.T) {
	rdb := testenv.PrivateRedis(t)
	t.Setenv("FLASH_REDIS_ADDR", rdb.Options().Addr)
	pg := testenv.PG(t)
	ctx := context.Background()
	t.Cleanup(func() {
		// The rule's record in Postgres (risk_state) would be rebuilt into other Redis
		// servers of the same database: remove it.
		riskctl(t, "rules", "set", "points.max=default", "points.window=default", "points.shadow=default")
	})
	for _, tc := range []struct {
		args []string
		key  string
	}{
		{[]string{"rules", "set", "--campaign", testenv.ID(t, "c"), "points.max=5"}, "points.max"},
		{[]string{"rules", "set", "points.max=-1"}, "points.max"},
		{[]string{"rules", "set", "points.max=2000000000"}, "points.max"},
		{[]string{"rules", "set", "points.max=100"}, "points.window"},
		{[]string{"rules", "set", "points.max=100", "points.window=30d"}, "points.window"},
		{[]string{"rules", "set", "points.shadow=maybe"}, "points.shadow"},
	} {
		code, _, errs := riskctl(t, tc.args...)
		if code != exitUsage || !strings.Contains(errs, tc.key) {
			t.Errorf("riskctl %v: exit %d %q, want 2 naming %s", tc.args, code, errs, tc.key)
		}
	}
	if n, _ := rdb.HLen(ctx, rkeys.RiskGlobalRules).Result(); n != 0 {
		t.Fatalf("refused settings changed the rules: %d fields", n)
	}
	mustRiskctl(t, "rules", "set", "points.max=100", "points.window=1m")

	svc, err := points.New(pg, rdb, points.Config{Log: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	task := testenv.ID(t, "task")
	res, err := svc.PutTask(ctx, task, &points.TaskPut{Name: "t", PerGrantMax: 1000, PerUserDailyMax: 10_000, Lifetime: "720h"})
	if err != nil {
		t.Fatal(err)
	}
	user := testenv.ID(t, "gainer")
	for i, amount := range []int64{60, 60} {
		if _, err := svc.Grant(ctx, []byte(res.Key), &points.GrantReq{UserID: user, Task: task, Amount: amount,
			GrantID: user + "-" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := svc.Reserve(ctx, user, "c:r", "t", 1); got != points.Blocked {
		t.Fatalf("reserve after 120 points in a minute with points.max=100: %s, want blocked", got)
	}
	var view struct {
		Accounts []struct {
			UserID   string `json:"user_id"`
			Gained   int64  `json:"gained"`
			Grants   int64  `json:"grants"`
			Enforced int64  `json:"autofreeze_enforced"`
			Frozen   bool   `json:"frozen"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal([]byte(mustRiskctl(t, "top", "points", "--since", "10m", "--limit", "10000", "--json")), &view); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range view.Accounts {
		if a.UserID == user {
			found = true
			if a.Gained != 120 || a.Grants != 2 || a.Enforced != 1 || !a.Frozen {
				t.Fatalf("top points row %+v, want 120 gained in 2 grants, 1 enforced hit, frozen", a)
			}
		}
	}
	if !found {
		t.Fatalf("the frozen account is not in top points: %+v", view)
	}
	if code, _, errs := riskctl(t, "top", "points", "--campaign", "c1"); code != exitUsage || !strings.Contains(errs, "campaign") {
		t.Fatalf("top points --campaign: %d %s", code, errs)
	}
}
