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
