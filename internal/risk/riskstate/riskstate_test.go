package riskstate_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/riskstate"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// A Redis that came back from an older copy (another run id on the marker) holds a block
// that was lifted since, a freeze older than that unblock and a stale rule: the rebuild
// makes it what the record says - and keeps a freeze set after the unblock - then
// stamps the marker, after which it does nothing.
func TestRebuildCorrectsARolledBackRedis(t *testing.T) {
	e := testenv.Private(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lifted, refrozen, blocked := testenv.ID(t, "dev"), testenv.ID(t, "dev"), testenv.ID(t, "dev")
	camp := testenv.ID(t, "cmp")
	unblockedAt := time.Now().Add(-time.Minute).UTC()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	put := func(scope, state string, expires any, at time.Time) {
		t.Helper()
		var id int64
		if err := e.PG.QueryRow(ctx, `INSERT INTO risk_audit (actor, action, scope, old, new) VALUES ('test', 'block', $1, '{}', $2) RETURNING id`,
			scope, state).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, err := e.PG.Exec(ctx, `INSERT INTO risk_state (scope, state, expires_at, audit_id, updated_at) VALUES ($1, $2, $3, $4, $5)`,
			scope, state, expires, id, at); err != nil {
			t.Fatal(err)
		}
	}
	put("device:"+lifted, `{}`, nil, unblockedAt)
	put("device:"+refrozen, `{}`, nil, unblockedAt)
	put("device:"+blocked, `{"block.reason":"farm","block.by":"alice","block.at":"2026-01-01T00:00:00Z","block.expires_at":"`+exp.Format(time.RFC3339Nano)+`"}`, exp, time.Now())
	put("campaign:"+camp, `{"device.max":"3","device.window":"1m"}`, nil, time.Now())

	// What the rolled-back Redis holds.
	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	old := unblockedAt.Add(-time.Hour)
	e.RDB.Set(ctx, rkeys.Block(rkeys.KindDevice, lifted), "mistake\tbob\t"+ms(old), time.Hour)
	e.RDB.Set(ctx, rkeys.Freeze(rkeys.KindDevice, lifted), "auto-freeze\tclaim.lua\t"+ms(old), time.Hour)
	e.RDB.Set(ctx, rkeys.Freeze(rkeys.KindDevice, refrozen), "auto-freeze\tclaim.lua\t"+ms(time.Now()), time.Hour)
	e.RDB.HSet(ctx, rkeys.RiskRules(camp), "device.max", "9", "ip.max", "5")
	e.RDB.HSet(ctx, rkeys.RiskGlobalRules, risk.FieldWarm, "an-older-server")

	rebuilt, res, err := riskstate.Ensure(ctx, e.PG, e.RDB, runID(t, e.RDB))
	if err != nil || !rebuilt {
		t.Fatalf("Ensure on a marker of another server: rebuilt=%v %v", rebuilt, err)
	}
	if n := e.RDB.Exists(ctx, rkeys.Block(rkeys.KindDevice, lifted), rkeys.Freeze(rkeys.KindDevice, lifted)).Val(); n != 0 {
		t.Errorf("the lifted block or its older freeze came back (%d keys); res %+v", n, res)
	}
	if n := e.RDB.Exists(ctx, rkeys.Freeze(rkeys.KindDevice, refrozen)).Val(); n != 1 {
		t.Errorf("a freeze set after the unblock was removed")
	}
	b, ok, err := risk.ReadEntry(ctx, e.RDB, risk.Device, blocked, false)
	if err != nil || !ok || b.Reason != "farm" || b.Actor != "alice" || b.ExpiresAt.Sub(exp).Abs() > 2*time.Second {
		t.Errorf("block of %s: %+v ok=%v %v", blocked, b, ok, err)
	}
	if h := e.RDB.HGetAll(ctx, rkeys.RiskRules(camp)).Val(); len(h) != 2 || h["device.max"] != "3" || h["device.window_ms"] != "60000" {
		t.Errorf("campaign rules %v; want exactly device.max=3 device.window_ms=60000", h)
	}
	if _, err := risk.ReadRules(ctx, e.RDB, ""); err != nil {
		t.Errorf("global rules with the marker no longer read: %v", err)
	}
	if ok, err := riskstate.Warm(ctx, e.RDB, res.RunID); err != nil || !ok {
		t.Errorf("marker after the rebuild: %v %v", ok, err)
	}
	if rebuilt, _, err := riskstate.Ensure(ctx, e.PG, e.RDB, runID(t, e.RDB)); err != nil || rebuilt {
		t.Errorf("second Ensure: rebuilt=%v %v; want nothing to do", rebuilt, err)
	}
}

func runID(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	id, err := recovery.RunID(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
